"""An item's photos made ready for the stages: read through the gate, encoded
together, and each told what it shows (the whole item, the brand tag, the
care label, a detail or a flaw), found from its vector by the encoder's text
tower (zero-shot, as the ``clip`` expert labels a photo) when the caller did
not say. Roles the caller gave always win.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from restyle._errors import EncoderError, RestyleError
from restyle._input.imaging import Photo
from restyle._input.item import Item, load_item
from restyle._pipeline import budget as _budget
from restyle._pipeline.batching import encode_together, keep_vectors
from restyle._pipeline.prompts import prompt_vectors
from restyle._plugin.components import Encoder
from restyle._secrets import describe, exposes_secret
from restyle._types import PhotoRole

__all__ = ["ROLE_PROMPTS", "find_roles", "prepare_item", "role_prompts", "warm_up_roles",
           "whole_item_vectors"]

logger = logging.getLogger("restyle")

#: What each role is called to the text tower; a role's score is the best of its prompts'.
ROLE_PROMPTS: dict[PhotoRole, tuple[str, ...]] = {
    PhotoRole.WHOLE: (
        "a product photo of a whole item for sale",
        "a photo of a whole garment, shoe, bag or object on a plain background",
    ),
    PhotoRole.TAG: (
        "a close-up photo of a brand tag sewn into clothing",
        "a close-up photo of a brand logo label",
    ),
    PhotoRole.LABEL: (
        "a close-up photo of a care label with washing instructions and fabric content",
        "a close-up photo of a size label with small printed text",
    ),
    PhotoRole.DETAIL: (
        "a close-up photo of a detail, texture or fabric of an item",
        "a close-up photo of the sole of a shoe or a serial number plate",
    ),
    PhotoRole.FLAW: (
        "a close-up photo of a stain, tear, hole or damage on an item",
        "a close-up photo of wear and scuffs on an item",
    ),
}

# CLIP's learned logit scale is about 100; it turns cosine gaps into probabilities.
_LOGIT_SCALE = 100.0


def role_prompts() -> list[str]:
    return [prompt for prompts in ROLE_PROMPTS.values() for prompt in prompts]


def warm_up_roles(encoder: Encoder) -> None:
    """Have the role prompts' vectors ready (waits for them, with no deadline)."""
    prompt_vectors(encoder, role_prompts(), what="the photo roles' vectors")


def _scores(vector: np.ndarray, texts: np.ndarray) -> dict[PhotoRole, float]:
    """Each role's probability for one photo's vector."""
    logits = (texts @ vector) * _LOGIT_SCALE
    best: list[float] = []
    start = 0
    for prompts in ROLE_PROMPTS.values():
        best.append(float(logits[start : start + len(prompts)].max()))
        start += len(prompts)
    values = np.asarray(best)
    probabilities = np.exp(values - values.max())
    probabilities /= probabilities.sum()
    return {role: float(p) for role, p in zip(ROLE_PROMPTS, probabilities, strict=True)}


def find_roles(photos: Sequence[Photo], vectors: Sequence[np.ndarray | None],
               encoder: Encoder) -> list[Photo]:
    """``photos`` with each missing role found (and its score), given roles kept.

    A photo alone shows the item whole. When the role prompts cannot be had in
    time (or the encoder has no text tower), or a photo has no vector, the
    first photo without a given role is taken for the whole item and the others
    for details, with no score. At least one photo always shows the item
    whole when its role was found: when none does, the one most like a whole
    item is taken for it.
    """
    if len(photos) == 1:
        photo = photos[0]
        return [photo if photo.role is not None else photo.placed(photo.index, PhotoRole.WHOLE)]
    scores: list[dict[PhotoRole, float] | None] = [None] * len(photos)
    if any(p.role is None for p in photos):
        try:
            texts = prompt_vectors(encoder, role_prompts(), what="the photo roles' vectors")
            scores = [None if v is None else _scores(v, texts) for v in vectors]
        except Exception as exc:
            logger.info("photo roles not found (%s): the first photo is taken for the "
                        "whole item", describe(exc))
    placed: list[Photo] = []
    for photo, score in zip(photos, scores, strict=True):
        if photo.role is not None:
            placed.append(photo)
        elif score is None:
            role = PhotoRole.WHOLE if not any(
                p.role is PhotoRole.WHOLE for p in placed) else PhotoRole.DETAIL
            placed.append(photo.placed(photo.index, role))
        else:
            role = max(score, key=lambda r: score[r])
            placed.append(photo.placed(photo.index, role, round(score[role], 4)))
    if not any(p.role is PhotoRole.WHOLE for p in placed):
        # None shows the item whole: the found one most like a whole item does
        # (a role the caller gave is never overruled).
        found = [(s[PhotoRole.WHOLE], i) for i, (p, s) in enumerate(zip(photos, scores,
                                                                          strict=True))
                 if s is not None and p.role is None]
        if found:
            best, index = max(found)
            chosen = placed[index]
            placed[index] = chosen.placed(chosen.index, PhotoRole.WHOLE, round(best, 4))
    return placed


def prepare_item(item: Item, *, encoder: Encoder, deadline: float
                 ) -> tuple[list[Photo], tuple[str, ...]]:
    """The item's photos read and decoded through the input gate by
    ``deadline`` (reading is part of the analysis), each with its role, the
    photos that show the item whole first; and why each photo that could not
    be read could not (the item fails only when none can). The photos whose
    roles must be found are encoded in one batch for it."""
    loaded = load_item(item, deadline=deadline)
    photos = list(loaded.photos)
    vectors: list[np.ndarray | None] = [None] * len(photos)
    if len(photos) > 1 and any(p.role is None for p in photos):
        vectors = _vectors(photos, encoder, deadline)
    placed = find_roles(photos, vectors, encoder)
    return ([p for p in placed if p.role is PhotoRole.WHOLE]
            + [p for p in placed if p.role is not PhotoRole.WHOLE]), loaded.problems


def _vectors(photos: Sequence[Photo], encoder: Encoder, deadline: float
             ) -> list[np.ndarray | None]:
    """The photos' vectors, those not kept yet encoded in one batch (and kept
    on the photos); None for each the batch could not give."""
    missing = [p for p in photos if p.vector(encoder.model_id) is None]
    pending = encode_together(encoder, missing, deadline=deadline) if missing else None
    if pending is not None:
        keep_vectors(pending, missing, encoder.model_id)
    return [p.vector(encoder.model_id) for p in photos]


def whole_item_vectors(photos: Sequence[Photo], encoder: Encoder, deadline: float
                       ) -> tuple[Photo, np.ndarray, np.ndarray]:
    """The first photo that shows the item whole, the vectors of all that do
    (one row each; every photo's when none does) and the vector a search is
    made with: theirs, or their normalised mean. Each vector is the one the
    photo keeps, else computed by ``deadline`` (an EncoderError when it
    cannot be)."""
    whole = [p for p in photos if p.role is PhotoRole.WHOLE] or list(photos)
    rows = np.stack([_photo_vector(p, encoder, deadline) for p in whole])
    if len(rows) == 1:
        return whole[0], rows, rows[0]
    mean = rows.mean(axis=0)
    return whole[0], rows, (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


def _photo_vector(photo: Photo, encoder: Encoder, deadline: float) -> np.ndarray:
    known = photo.vector(encoder.model_id)
    if known is not None:  # the experts needed it too: no call to wait for
        return known
    label = f"encoder {encoder.name}"
    try:
        vector: np.ndarray = _budget.call(encoder, label, encoder.photo_vector, photo,
                                          deadline=deadline)
    except (_budget.Overdue, _budget.ComponentBusy) as exc:
        raise EncoderError(f"the photo could not be encoded: {exc}") from None
    except RestyleError:
        raise
    except Exception as exc:
        raise EncoderError(
            f"{label} could not encode the photo: {describe(exc)}"
        ) from (None if exposes_secret(exc) else exc)
    return vector

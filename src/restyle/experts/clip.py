"""The ``clip`` expert: zero-shot labels from the encoder's text tower.

Scores every term of the reseller taxonomy (category, colour, material,
pattern, style) against the photo and reports the most likely terms per facet.

The taxonomy's prompt vectors are a pure function of the model and the
prompts: they are encoded once per model (in the background, whoever asks
first, outside any one call's deadline) and kept on disk under
``$RESTYLE_HOME/prompts``, so later processes read them instead of running the
text tower. :meth:`ClipExpert.warm_up` (called by :meth:`Engine.warm_up`)
has them ready before the first photo; a call that comes first waits for them
only until its own deadline, and the next call finds them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from restyle._errors import EncoderError, ExpertError
from restyle._pipeline.prompts import prompt_vectors
from restyle._plugin.components import Encoder, Expert
from restyle._plugin.hookspecs import hookimpl
from restyle._taxonomy import CATEGORIES, FACETS, PROMPTS
from restyle._types import Observation, Opinion, PhotoRole

if TYPE_CHECKING:
    from restyle._input.imaging import Photo

__all__ = ["ClipExpert"]

# CLIP's learned logit scale is about 100; it turns cosine gaps into probabilities.
_LOGIT_SCALE = 100.0


class ClipExpert(Expert):
    """Zero-shot classification over the taxonomy with the Engine's encoder."""

    name = "clip"
    timeout = 60.0  # the first call may load the model
    # A tag's or a label's colour and material are not the item's.
    photo_roles = frozenset({PhotoRole.WHOLE})

    def __init__(self, *, encoder: Encoder | None = None, top_k: int = 3) -> None:
        self._encoder = encoder
        self.top_k = top_k

    @property
    def encoder(self) -> Encoder:
        """The encoder given, or else the calling Engine's."""
        return self._encoder if self._encoder is not None else self.context.encoder

    def _facets(self) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
        return taxonomy_vectors(self.encoder)

    def warm_up(self) -> None:
        self._facets()

    def examine(self, photo: Photo) -> Opinion:
        vector = self.encoder.photo_vector(photo)
        labels: list[Observation] = []
        for facet, (terms, text_vectors) in self._facets().items():
            logits = (text_vectors @ vector) * _LOGIT_SCALE
            probs = _softmax(logits)
            for i in np.argsort(-probs)[: self.top_k]:
                labels.append(
                    Observation(
                        text=terms[int(i)],
                        score=float(np.clip(probs[i], 0.0, 1.0)),
                        facet=facet,
                        raw_score=float(logits[i] / _LOGIT_SCALE),
                    )
                )
        return Opinion(expert=self.name, labels=tuple(labels))


_FACETS: dict[str, tuple[str, ...]] = {"category": CATEGORIES, **FACETS}
Facets = dict[str, tuple[tuple[str, ...], np.ndarray]]


def taxonomy_vectors(encoder: Encoder) -> Facets:
    """The taxonomy's prompt vectors under ``encoder``, computed once per model
    id per process (read from disk when an earlier process kept them).

    Inside a component call, waits for them only until the call's deadline
    (then :class:`~restyle.ExpertError`; the work goes on for the next call)."""
    try:
        vectors = prompt_vectors(encoder, _prompts(), what="the taxonomy's prompt vectors")
    except EncoderError as exc:
        raise ExpertError(str(exc)) from None
    result: Facets = {}
    start = 0
    for facet, terms in _FACETS.items():
        result[facet] = (terms, vectors[start : start + len(terms)])
        start += len(terms)
    return result


def _prompts() -> list[str]:
    return [PROMPTS[facet].format(term) for facet, terms in _FACETS.items() for term in terms]


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max())
    result: np.ndarray = z / z.sum()
    return result


@hookimpl
def register_experts(register: Any) -> None:
    register(ClipExpert())

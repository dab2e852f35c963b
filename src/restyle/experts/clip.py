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

import hashlib
import logging
import math
import os
import tempfile
import threading
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from restyle import _settings
from restyle._errors import ExpertError
from restyle._pipeline import budget as _budget
from restyle._plugin.components import CALL_DEADLINE, Encoder, Expert, wait_time
from restyle._plugin.contracts import vector_problem
from restyle._plugin.hookspecs import hookimpl
from restyle._taxonomy import CATEGORIES, FACETS, PROMPTS
from restyle._types import Observation, Opinion

if TYPE_CHECKING:
    from restyle._input.imaging import Photo

__all__ = ["ClipExpert"]

# CLIP's learned logit scale is about 100; it turns cosine gaps into probabilities.
_LOGIT_SCALE = 100.0


class ClipExpert(Expert):
    """Zero-shot classification over the taxonomy with the Engine's encoder."""

    name = "clip"
    timeout = 60.0  # the first call may load the model

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
# model id -> the taxonomy's prompt vectors, done or under way: shared by every
# Engine in the process. A failed computation is tried again on the next call.
_TAXONOMY_VECTORS: dict[str, Future[Facets]] = {}
_TAXONOMY_LOCK = threading.Lock()
#: Largest prompt-vector file read back from disk, in bytes.
_MAX_CACHE_BYTES = 16 * 1024 * 1024
logger = logging.getLogger("restyle")


def taxonomy_vectors(encoder: Encoder) -> Facets:
    """The taxonomy's prompt vectors under ``encoder``, computed once per model
    id per process (read from disk when an earlier process kept them).

    Inside a component call, waits for them only until the call's deadline
    (then :class:`~restyle.ExpertError`; the work goes on for the next call)."""
    model_id = encoder.model_id
    with _TAXONOMY_LOCK:
        known = _TAXONOMY_VECTORS.get(model_id)
        start = known is None or (known.done() and known.exception() is not None)
        if start:
            known = _TAXONOMY_VECTORS[model_id] = Future()
    assert known is not None
    if start:
        def compute() -> None:
            CALL_DEADLINE.set(math.inf)  # the work belongs to no call: no caller's deadline
            _compute(encoder, known)

        _budget.spawn(compute, name="restyle clip prompts")
    try:
        return known.result(wait_time())
    except FutureTimeout:
        raise ExpertError(f"the taxonomy's prompt vectors for {model_id} are still being "
                          "computed; they will be ready for the next photo") from None


def _prompts() -> list[str]:
    return [PROMPTS[facet].format(term) for facet, terms in _FACETS.items() for term in terms]


def _compute(encoder: Encoder, future: Future[Facets]) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        prompts = _prompts()
        path = _cache_path(encoder.model_id, prompts)
        vectors = _read_cached(path, len(prompts)) if path is not None else None
        if vectors is None:
            vectors = np.asarray(encoder.encode_texts(prompts), dtype=np.float32)
            if path is not None:
                _write_cached(path, vectors)
        result: Facets = {}
        start = 0
        for facet, terms in _FACETS.items():
            result[facet] = (terms, vectors[start : start + len(terms)])
            start += len(terms)
        future.set_result(result)
    except BaseException as exc:  # handed to whoever waits
        future.set_exception(exc)


def _cache_path(model_id: str, prompts: list[str]) -> Path | None:
    """Where the vectors of ``prompts`` under ``model_id`` are kept; None for
    untrained weights (``.../random``), which differ at every load."""
    if model_id.endswith("/random"):
        return None
    digest = hashlib.sha256("\n".join([model_id, *prompts]).encode()).hexdigest()[:32]
    return _settings.home() / "prompts" / f"{digest}.npy"


def _read_cached(path: Path, count: int) -> np.ndarray | None:
    """The kept vectors, if the file holds ``count`` finite unit rows; else None
    (a damaged file is computed again and replaced)."""
    try:
        if path.stat().st_size > _MAX_CACHE_BYTES:
            return None
        vectors: np.ndarray = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if (vectors.dtype != np.float32 or vectors.ndim != 2 or vectors.shape[0] != count
            or any(vector_problem(row) is not None for row in vectors)):
        logger.debug("prompt vectors in %s are damaged; computing them again", path)
        return None
    return vectors


def _write_cached(path: Path, vectors: np.ndarray) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=".prompts.", suffix=".npy", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, vectors, allow_pickle=False)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as exc:  # a cache that cannot be written costs time, not the answer
        logger.debug("prompt vectors not kept in %s: %s", path, exc)


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max())
    result: np.ndarray = z / z.sum()
    return result


@hookimpl
def register_experts(register: Any) -> None:
    register(ClipExpert())

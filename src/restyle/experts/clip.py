"""The ``clip`` expert: zero-shot labels from the encoder's text tower.

Scores every term of the reseller taxonomy (category, colour, material,
pattern, style) against the photo and reports the most likely terms per facet.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from restyle._components import Encoder, Expert
from restyle._hookspecs import hookimpl
from restyle._taxonomy import CATEGORIES, FACETS, PROMPTS
from restyle._types import Observation, Opinion

if TYPE_CHECKING:
    from restyle._imaging import Photo

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

    def examine(self, photo: Photo) -> Opinion:
        vector = photo.embedding(self.encoder)
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
# model id -> facet -> (terms, prompt vectors): shared by every Engine in the process.
_TAXONOMY_VECTORS: dict[str, dict[str, tuple[tuple[str, ...], np.ndarray]]] = {}
_TAXONOMY_LOCK = threading.Lock()


def taxonomy_vectors(encoder: Encoder) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
    """The taxonomy's prompt vectors under ``encoder``, encoded once per model
    id per process (in one call), whichever Engine asks first."""
    model_id = encoder.model_id
    with _TAXONOMY_LOCK:
        known = _TAXONOMY_VECTORS.get(model_id)
        if known is not None:
            return known
        prompts = [PROMPTS[facet].format(term) for facet, terms in _FACETS.items()
                   for term in terms]
        vectors = encoder.encode_texts(prompts)
        result: dict[str, tuple[tuple[str, ...], np.ndarray]] = {}
        start = 0
        for facet, terms in _FACETS.items():
            result[facet] = (terms, vectors[start : start + len(terms)])
            start += len(terms)
        _TAXONOMY_VECTORS[model_id] = result
        return result


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max())
    result: np.ndarray = z / z.sum()
    return result


@hookimpl
def register_experts(register: Any) -> None:
    register(ClipExpert())

"""Embedding decoded listings: the encoder's vectors for a batch, each checked,
and the rows whose vector is unusable rejected."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from restyle._ingestion.rows import DecodedListing, Rejection
from restyle._plugin.contracts import vector_problem

if TYPE_CHECKING:
    from restyle._plugin.components import Encoder

__all__ = ["checked_embeddings", "embed_listings"]


def embed_listings(
    decoded: Sequence[DecodedListing], encoder: Encoder
) -> tuple[list[DecodedListing], np.ndarray, list[Rejection]]:
    """Embed a batch: the rows kept, their unit vectors (one per row), and the rows
    whose vector was unusable (not finite, or zero)."""
    if not decoded:
        return [], np.zeros((0, encoder.dim), np.float32), []
    return checked_embeddings(decoded, encoder.encode_images([d.image for d in decoded]),
                              encoder)


def checked_embeddings(
    decoded: Sequence[DecodedListing], vectors: np.ndarray, encoder: Encoder
) -> tuple[list[DecodedListing], np.ndarray, list[Rejection]]:
    """The encoder's answer for a batch, checked: the rows kept, their unit
    vectors, and the rows whose vector was unusable (not finite, or zero)."""
    dim = encoder.dim
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.shape != (len(decoded), dim):
        from restyle._errors import EncoderError

        raise EncoderError(
            f"encoder {encoder.name} returned vectors of shape {vectors.shape} for "
            f"{len(decoded)} images, expected ({len(decoded)}, {dim})"
        )
    usable = [vector_problem(vector) is None for vector in vectors]
    kept = [d for d, ok in zip(decoded, usable, strict=True) if ok]
    rejected = [
        Rejection(row=d.row.number, reason="the encoder gave no usable vector for this image",
                  data=d.row.preview)
        for d, ok in zip(decoded, usable, strict=True) if not ok
    ]
    return kept, np.ascontiguousarray(vectors[np.array(usable, dtype=bool)]), rejected


"""Deterministic fake components: an encoder, a scriptable expert and a list marketplace."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from PIL import Image

from restyle._input.imaging import Photo
from restyle._plugin.components import Encoder, Expert, Marketplace
from restyle._types import Listing, Observation, Opinion, Query

__all__ = ["ColorEncoder", "ListMarketplace", "ScriptedExpert"]


class ColorEncoder(Encoder):
    """Embeds an image as its normalised colour histogram: no model, no download.

    Identical images get identical vectors and similar colours similar ones,
    so ranking tests can reason about the result. Texts get a vector seeded by
    a stable hash of the text.
    """

    name = "color"

    def __init__(self, bins: int = 4) -> None:
        self.bins = bins
        self.image_calls = 0
        self.images_encoded = 0

    @property
    def model_id(self) -> str:
        return f"color-histogram-{self.bins}"

    @property
    def dim(self) -> int:
        return self.bins**3

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        self.image_calls += 1
        self.images_encoded += len(images)
        out = []
        for img in images:
            arr = np.asarray(img.convert("RGB").resize((32, 32)), dtype=np.int64) * self.bins // 256
            idx = arr[..., 0] * self.bins**2 + arr[..., 1] * self.bins + arr[..., 2]
            hist = np.bincount(idx.ravel(), minlength=self.dim).astype(np.float32)
            out.append(hist / np.linalg.norm(hist))
        return np.stack(out) if out else np.zeros((0, self.dim), np.float32)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
            rng = np.random.default_rng(seed)
            v = rng.standard_normal(self.dim).astype(np.float32)
            out.append(v / np.linalg.norm(v))
        return np.stack(out) if out else np.zeros((0, self.dim), np.float32)


class ScriptedExpert(Expert):
    """An expert whose behaviour a test scripts: answer, sleep, hang or raise."""

    def __init__(
        self,
        name: str,
        *,
        entities: Sequence[tuple[str, float, str | None]] = (),
        labels: Sequence[tuple[str, float, str | None]] = (),
        delay: float = 0.0,
        hang: threading.Event | None = None,
        error: Exception | None = None,
        timeout: float = 5.0,
        result: Callable[[Photo], object] | None = None,
    ) -> None:
        self.name = name
        self.timeout = timeout
        self._entities = entities
        self._labels = labels
        self._delay = delay
        self._hang = hang
        self._error = error
        self._result = result
        self.calls = 0

    def examine(self, photo: Photo) -> Opinion:
        self.calls += 1
        if self._delay:
            time.sleep(self._delay)
        if self._hang is not None:
            self._hang.wait()
        if self._error is not None:
            raise self._error
        if self._result is not None:
            return self._result(photo)  # type: ignore[return-value]
        return Opinion(
            expert=self.name,
            entities=tuple(Observation(text=t, score=s, facet=f) for t, s, f in self._entities),
            labels=tuple(Observation(text=t, score=s, facet=f) for t, s, f in self._labels),
        )


class ListMarketplace(Marketplace):
    """Serves a fixed list of listings, optionally with known embeddings."""

    def __init__(
        self,
        name: str,
        listings: Sequence[Listing],
        *,
        embeddings: Mapping[str, np.ndarray] | None = None,
        error: Exception | None = None,
    ) -> None:
        self.name = name
        self.listings = list(listings)
        self.embeddings = dict(embeddings or {})
        self.error = error
        self.queries: list[Query] = []

    def search(self, query: Query) -> Sequence[Listing]:
        self.queries.append(query)
        if self.error is not None:
            raise self.error
        return self.listings[: query.limit]

    def image_embeddings(
        self, listings: Sequence[Listing], *, model_id: str
    ) -> Mapping[str, np.ndarray]:
        return {item.key: self.embeddings[item.key] for item in listings
                if item.key in self.embeddings}

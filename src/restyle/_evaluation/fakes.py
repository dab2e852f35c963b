"""The recorded fake components: an encoder, experts, a synthesizer, a
marketplace and a fetcher that give what a recording holds, offline."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from PIL import Image

from restyle._errors import EncoderError, FetchError
from restyle._input.fetching import Fetcher
from restyle._input.imaging import Photo
from restyle._pipeline.search import Found
from restyle._plugin.components import Encoder, Expert, Marketplace, Synthesizer
from restyle._types import Identification, Listing, Opinion, Query

__all__ = [
    "RecordedEncoder",
    "RecordedExpert",
    "RecordedMarketplace",
    "RecordedSynthesizer",
    "ReplayFetcher",
]


def _pixel_digest(image: Image.Image) -> str:
    return hashlib.sha256(f"{image.size}{image.mode}".encode() + image.tobytes()).hexdigest()


class RecordedEncoder(Encoder):
    """The recorded photos' vectors for the recorded photos, under the recorded
    model id; any other image, and any text, is an EncoderError (a recording
    holds no model)."""

    name = "recorded"

    def __init__(self, model_id: str, photos: Sequence[tuple[Photo, np.ndarray]]) -> None:
        self._model_id = model_id
        self._vectors = {_pixel_digest(photo.image): np.asarray(vector, dtype=np.float32)
                         for photo, vector in photos}
        self._dim = int(next(iter(self._vectors.values())).shape[0])

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dim(self) -> int:
        return self._dim

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        rows = []
        for image in images:
            vector = self._vectors.get(_pixel_digest(image.convert("RGB")))
            if vector is None:
                raise EncoderError("a recording can encode only its own photos")
            rows.append(vector)
        return np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise EncoderError("a recording holds no text vectors: titles are not compared offline")


class RecordedExpert(Expert):
    """Gives the recorded opinion of the expert it is named after, of each photo
    of the item (``opinions``: that expert's, one per photo)."""

    def __init__(self, opinions: Opinion | Sequence[Opinion]) -> None:
        recorded = [opinions] if isinstance(opinions, Opinion) else list(opinions)
        self.name = recorded[0].expert
        self.opinions = {o.photo: o for o in recorded}
        self.opinion = recorded[0]

    def examine(self, photo: Photo) -> Opinion:
        return self.opinions.get(photo.index, self.opinion)


class RecordedSynthesizer(Synthesizer):
    """Gives the recorded identification, whatever the opinions."""

    name = "recorded"

    def __init__(self, identification: Identification) -> None:
        self.identification = identification

    def synthesize(self, opinions: Sequence[Opinion], *, photo: Photo) -> Identification:
        return self.identification


class RecordedMarketplace(Marketplace):
    """Answers each relaxation step with the listings the recording found at that
    step, in the order they were merged, and knows their recorded vectors."""

    name = "recorded"

    def __init__(self, found: Sequence[Found], vectors: Mapping[str, np.ndarray]) -> None:
        self.found = tuple(found)
        self.vectors = dict(vectors)
        self.queries: list[Query] = []

    def search(self, query: Query) -> Sequence[Listing]:
        self.queries.append(query)
        return [f.listing for f in self.found if f.step == query.step][: query.limit]

    def image_embeddings(
        self, listings: Sequence[Listing], *, model_id: str
    ) -> Mapping[str, np.ndarray]:
        return {item.key: self.vectors[item.key] for item in listings if item.key in self.vectors}


class ReplayFetcher(Fetcher):
    """Downloads nothing: each image URL fails with the reason recorded for it."""

    def __init__(self, reasons: Mapping[str, str]) -> None:
        super().__init__()
        self._reasons = dict(reasons)

    def fetch(self, url: str, *, deadline: float | None = None) -> bytes:
        raise FetchError(self._reasons.get(url, "not fetched: replaying a recording"))

    def fetch_many(
        self, urls: Sequence[str], *, deadline: float | None = None,
        on_result: Callable[[str, bytes | FetchError], object] | None = None,
    ) -> dict[str, bytes | FetchError]:
        results: dict[str, bytes | FetchError] = {}
        for url in dict.fromkeys(urls):
            error = FetchError(self._reasons.get(url, "not fetched: replaying a recording"))
            results[url] = error
            if on_result is not None:
                on_result(url, error)
        return results


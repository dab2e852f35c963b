"""Re-ranking comps by how much their images look like the photo.

Each comp's image vector comes from the marketplace that found it, from the
embedding cache, or is fetched, decoded (in the fetch threads) and encoded in
one batch. A comp whose image cannot be used is kept with the reason and
ranked by its other signals. Identical images (one stock photo on several
listings) are flagged, and a cut-off taken from this query's own similarity
distribution flags the comps that do not look like the photo.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

import numpy as np

from restyle._errors import FetchError, ImageError, RestyleError
from restyle._ingestion.listings import draft_side
from restyle._input.fetching import Fetcher
from restyle._input.imaging import decode
from restyle._pipeline import budget as _budget
from restyle._plugin.components import Encoder
from restyle._plugin.contracts import check_vectors
from restyle._secrets import describe
from restyle._store.embedcache import EmbeddingCache
from restyle._types import Comp, CompFlag, Identification, Listing

__all__ = ["RerankResult", "Reranker", "similarity_cutoff"]

logger = logging.getLogger("restyle.rerank")

#: The share of the re-ranking time kept for encoding what arrives last:
#: downloads are cut off this much before the deadline.
ENCODE_SHARE = 0.2


def similarity_cutoff(similarities: Sequence[float], *, min_separation: float = 0.85,
                      min_gap: float = 0.05) -> float | None:
    """A similarity below which comps do not look like the photo, from these
    similarities alone; None when they give no reason to cut.

    When the similarities fall into two clearly separated groups (Otsu's split
    explains at least ``min_separation`` of their variance, where a uniform
    spread gives 0.75, and the group means differ by ``min_gap``) the cut-off
    lies between the groups. Otherwise only far outliers are cut: those more
    than three robust standard deviations (1.4826 MAD) below the median.
    """
    values = np.sort(np.asarray(similarities, dtype=np.float64))[::-1]
    n = len(values)
    if n < 4:
        return None
    total = float(values.var()) * n
    if total > 0:
        best_between, best_split = 0.0, 0
        for split in range(1, n):
            top, bottom = values[:split], values[split:]
            between = split * (n - split) / n * (top.mean() - bottom.mean()) ** 2
            if between > best_between:
                best_between, best_split = between, split
        top, bottom = values[:best_split], values[best_split:]
        if (best_between / total >= min_separation
                and top.mean() - bottom.mean() >= min_gap):
            return float((values[best_split - 1] + values[best_split]) / 2)
    median = float(np.median(values))
    mad = float(np.median(np.abs(values - median))) * 1.4826
    if mad <= 0:
        return None
    cutoff = median - 3 * mad
    return cutoff if cutoff > values[-1] else None


def identification_text(identification: Identification) -> str:
    """What the identification says the item is, as one phrase for the text tower."""
    parts = [identification.brand, identification.product_name]
    if not identification.product_name:
        parts.append(identification.category)
    text = " ".join(p for p in parts if p)
    return text or identification.summary


@dataclass(frozen=True, slots=True, kw_only=True)
class RerankResult:
    """The comps, best first, and what went wrong on the way; ``vectors`` are
    the image vectors the comps were scored with, by listing key."""

    comps: tuple[Comp, ...]
    warnings: tuple[str, ...] = ()
    vectors: Mapping[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Prepared:
    sha256: str
    image: Any


@dataclass(slots=True)
class _CompImages:
    """Per listing key: its image vector, the image's content hash, or why there is none."""

    urls: dict[str, list[str]] = field(default_factory=dict)  # image URL -> listing keys
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def assign(self, url: str, vector: np.ndarray, sha: str | None = None) -> None:
        for key in self.urls[url]:
            self.vectors[key] = vector
            if sha is not None:
                self.hashes[key] = sha

    def fail(self, url: str, reason: str) -> None:
        for key in self.urls[url]:
            self.errors[key] = reason


class Reranker:
    """Scores comps against the photo's embedding.

    ``text_weight`` (0 to 1) mixes in the similarity between the
    identification and each listing title under the encoder's text tower:
    ``score = (1 - w) * visual + w * text``. A comp without a usable image
    scores ``w * text`` (0 when text is off), so it ranks by its title among
    the others like it, below comps that look like the photo.
    ``duplicate_threshold`` is the cosine above which two comp images count
    as the same picture (exact copies are caught by content hash).
    ``cache=None`` turns the embedding cache off; by default one is kept
    under the restyle home directory.
    """

    def __init__(
        self,
        *,
        fetcher: Fetcher | None = None,
        cache: EmbeddingCache | bool | None = True,
        text_weight: float = 0.0,
        duplicate_threshold: float = 0.995,
        cutoff: bool = True,
    ) -> None:
        if not 0.0 <= text_weight <= 1.0:
            raise ValueError("text_weight must be between 0 and 1")
        self.fetcher = fetcher or Fetcher()
        # Not ``cache or None``: an empty cache has len() 0 and is falsy.
        self.cache: EmbeddingCache | None = (
            EmbeddingCache() if cache is True
            else cache if isinstance(cache, EmbeddingCache) else None
        )
        self.text_weight = text_weight
        self.duplicate_threshold = duplicate_threshold
        self.cutoff = cutoff

    def __repr__(self) -> str:
        return f"<Reranker text_weight={self.text_weight} cache={self.cache!r}>"

    def rerank(
        self,
        embedding: np.ndarray,
        found: Sequence[tuple[Listing, str]],
        *,
        encoder: Encoder,
        known_vectors: Mapping[str, np.ndarray] | None = None,
        identification: Identification | None = None,
        deadline: float | None = None,
    ) -> RerankResult:
        """``found`` (listing, query step) pairs as Comps, best first.

        ``embedding`` is the photo's vector, or the vectors (one row each) of
        the item's photos that show it whole: a comp's similarity is then its
        best match among them.

        ``known_vectors`` are image vectors already known by listing key (the
        marketplaces'); the other images come from the cache or are fetched and
        encoded. Everything is done by ``deadline`` (a :func:`time.monotonic`
        value; by default the fetcher's ``batch_timeout`` from now): images not
        ready by then are flagged ``image_unavailable``.
        """
        if deadline is None:
            deadline = time.monotonic() + self.fetcher.limits.batch_timeout
        embedding = np.atleast_2d(np.asarray(embedding, dtype=np.float32))
        warnings: list[str] = []
        if not found:
            return RerankResult(comps=())
        listings = [listing for listing, _ in found]
        images = self._known(listings, known_vectors or {})
        self._from_cache(images, encoder.model_id)
        if images.urls:
            self._fetch_and_encode(images, encoder, embedding.shape[1], deadline, warnings)
        text = self._text_similarities(listings, encoder, identification, deadline, warnings)
        comps = self._score(found, embedding, images, text)
        return RerankResult(comps=tuple(self._flag(comps, images.vectors, images.hashes)),
                            warnings=tuple(warnings), vectors=dict(images.vectors))

    # -- vectors -----------------------------------------------------------------

    @staticmethod
    def _known(listings: Sequence[Listing], known: Mapping[str, np.ndarray]) -> _CompImages:
        """Vectors given by the marketplaces; the image URLs of the others."""
        images = _CompImages()
        for item in listings:
            vector = known.get(item.key)
            if vector is not None:
                images.vectors[item.key] = vector
            elif not item.image_url:
                images.errors[item.key] = "listing has no image"
            else:
                images.urls.setdefault(item.image_url, []).append(item.key)
        return images

    def _from_cache(self, images: _CompImages, model_id: str) -> None:
        """URLs seen recently need neither a download nor the encoder."""
        cache = self.cache
        if cache is None:
            return
        for url in list(images.urls):
            sha = cache.sha_for_url(url)
            vector = cache.get(sha, model_id) if sha is not None else None
            if sha is not None and vector is not None:
                images.assign(url, vector, sha)
                del images.urls[url]

    def _fetch_and_encode(self, images: _CompImages, encoder: Encoder, dim: int,
                          deadline: float, warnings: list[str]) -> None:
        """Download the images, decoding in the fetch threads and encoding on
        this one as they arrive, until all are in or the deadline: whatever has
        arrived is encoded as soon as the encoder is free, so batches grow when
        images arrive faster than the model works, and the last images wait
        for one batch at most."""
        ready: queue.Queue[tuple[str, _Prepared | RestyleError] | None] = queue.Queue()
        # Downloads stop early enough for what arrived last to be encoded.
        fetch_deadline = deadline - ENCODE_SHARE * max(0.0, deadline - time.monotonic())

        side = draft_side(encoder)  # decoded no larger than the model needs, as in a build

        def on_result(url: str, result: bytes | FetchError) -> None:
            ready.put((url, _prepare(result, side, fetch_deadline)))

        def fetch_all() -> None:
            try:
                self.fetcher.fetch_many(list(images.urls), deadline=fetch_deadline,
                                        on_result=on_result)
            except Exception as exc:  # a fetcher's own failure costs the images, not the call
                logger.warning("fetching comp images failed: %s", describe(exc))
            finally:
                ready.put(None)

        batch = _Batch(images, encoder, dim, self.cache, deadline, warnings)
        unseen = set(images.urls)
        # Encode while the rest still download: the model works on what has
        # arrived instead of waiting for the slowest image.
        threading.Thread(target=fetch_all, name="restyle rerank fetch", daemon=True).start()
        done = False
        while not done:
            try:
                arrived = ready.get(timeout=max(0.0, fetch_deadline - time.monotonic()))
            except queue.Empty:
                break  # what has not arrived by now is not waited for
            while arrived is not None:
                unseen.discard(arrived[0])
                batch.take(*arrived)
                try:
                    arrived = ready.get_nowait()
                except queue.Empty:
                    break
            done = arrived is None
            if len(batch):
                batch.encode()
        if len(batch):
            batch.encode()
        for url in unseen:
            images.fail(url, "image was not fetched in time")

    def _text_similarities(
        self, listings: Sequence[Listing], encoder: Encoder,
        identification: Identification | None, deadline: float, warnings: list[str],
    ) -> np.ndarray | None:
        if self.text_weight <= 0 or identification is None:
            return None
        phrase = identification_text(identification)
        if not phrase:
            return None
        texts = [phrase, *(item.title for item in listings)]
        try:
            vectors: np.ndarray = _budget.call(
                encoder, f"encoder {encoder.name}", encoder.encode_texts, texts,
                deadline=deadline, check=partial(check_vectors, encoder, count=len(texts)))
        except Exception as exc:
            warnings.append(f"titles could not be compared: {describe(exc)}")
            return None
        sims: np.ndarray = np.clip(vectors[1:] @ vectors[0], -1.0, 1.0)
        return sims

    def _score(self, found: Sequence[tuple[Listing, str]], embedding: np.ndarray,
               images: _CompImages, text: np.ndarray | None) -> list[Comp]:
        """Every comp scored, best first."""
        weight = self.text_weight if text is not None else 0.0
        comps: list[Comp] = []
        for index, (listing, step) in enumerate(found):
            vector = images.vectors.get(listing.key)
            text_sim = None if text is None else float(text[index])
            if vector is not None:
                similarity = float(np.clip((embedding @ vector).max(), -1.0, 1.0))
                visual = max(similarity, 0.0)
                score = visual if text_sim is None else (
                    (1 - weight) * visual + weight * max(text_sim, 0.0)
                )
                comps.append(Comp(listing=listing, score=score, similarity=similarity,
                                  text_similarity=text_sim, query_step=step))
            else:
                score = 0.0 if text_sim is None else weight * max(text_sim, 0.0)
                comps.append(Comp(
                    listing=listing, score=score, text_similarity=text_sim,
                    image_error=images.errors.get(listing.key, "image unavailable"),
                    flags=(CompFlag.IMAGE_UNAVAILABLE,), query_step=step,
                ))
        # A stable sort: equal scores keep the marketplaces' own order.
        return sorted(comps, key=lambda comp: -comp.score)

    # -- flags -------------------------------------------------------------------

    def _flag(self, comps: list[Comp], vectors: dict[str, np.ndarray],
              hashes: dict[str, str]) -> list[Comp]:
        flags: list[list[str]] = [list(c.flags) for c in comps]
        # Duplicates: every comp after the first (best-ranked) showing the same picture.
        kept: list[tuple[str | None, np.ndarray]] = []
        for i, comp in enumerate(comps):
            key = comp.listing.key
            vector = vectors.get(key)
            if vector is None:
                continue
            sha = hashes.get(key)
            for other_sha, other in kept:
                if (sha is not None and sha == other_sha) or (
                    float(np.dot(vector, other)) >= self.duplicate_threshold
                ):
                    flags[i].append(CompFlag.DUPLICATE_IMAGE)
                    break
            else:
                kept.append((sha, vector))
        if self.cutoff:
            sims = [c.similarity for c in comps if c.similarity is not None]
            cutoff = similarity_cutoff(sims)
            if cutoff is not None:
                for i, comp in enumerate(comps):
                    if comp.similarity is not None and comp.similarity < cutoff:
                        flags[i].append(CompFlag.BELOW_CUTOFF)
        return [
            comp if tuple(f) == comp.flags else _with_flags(comp, tuple(f))
            for comp, f in zip(comps, flags, strict=True)
        ]


def _with_flags(comp: Comp, flags: tuple[str, ...]) -> Comp:
    return replace(comp, flags=flags)


def _prepare(result: bytes | FetchError, side: int,
             deadline: float | None = None) -> _Prepared | RestyleError:
    """A downloaded image decoded for the encoder by ``deadline`` (runs in the
    fetch threads, so decoding overlaps the other downloads), or why it cannot
    be used."""
    if isinstance(result, FetchError):
        return result
    try:
        # No source name: URLs may carry secrets into the message.
        photo = decode(result, draft_side=side, deadline=deadline)
    except ImageError as exc:
        return ImageError(f"comp image is unusable: {exc}")
    return _Prepared(sha256=photo.sha256, image=photo.image)


class _Batch:
    """Decoded comp images waiting for the encoder, each distinct picture once."""

    def __init__(self, images: _CompImages, encoder: Encoder, dim: int,
                 cache: EmbeddingCache | None, deadline: float, warnings: list[str]) -> None:
        self.images = images
        self.encoder = encoder
        self.dim = dim
        self.cache = cache
        self.deadline = deadline
        self.warnings = warnings
        self.model_id = encoder.model_id
        self.encoded: dict[str, np.ndarray] = {}  # sha -> vector, within this call
        self.waiting: dict[str, tuple[Any, list[str]]] = {}  # sha -> (image, urls)

    def __len__(self) -> int:
        return len(self.waiting)

    def take(self, url: str, outcome: _Prepared | RestyleError) -> None:
        if isinstance(outcome, RestyleError):
            self.images.fail(url, str(outcome))
            return
        sha = outcome.sha256
        if sha in self.encoded:  # a copy of a picture encoded earlier in this call
            self.images.assign(url, self.encoded[sha], sha)
            if self.cache is not None:
                self.cache.remember_url(url, sha)
        elif sha in self.waiting:
            self.waiting[sha][1].append(url)
        else:
            known = self.cache.get(sha, self.model_id) if self.cache is not None else None
            if known is not None:
                self.cache.remember_url(url, sha)  # type: ignore[union-attr]
                self.encoded[sha] = known
                self.images.assign(url, known, sha)
            else:
                self.waiting[sha] = (outcome.image, [url])

    def encode(self) -> None:
        shas = list(self.waiting)
        waiting, self.waiting = self.waiting, {}
        pictures = [waiting[sha][0] for sha in shas]
        try:
            rows: np.ndarray = _budget.call(
                self.encoder, f"encoder {self.encoder.name}", self.encoder.encode_images,
                pictures, deadline=self.deadline,
                check=partial(check_vectors, self.encoder, count=len(pictures), dim=self.dim))
        except Exception as exc:
            message = f"comp images could not be encoded: {describe(exc)}"
            self.warnings.append(message)
            logger.warning("%s", message)
            for sha in shas:
                for url in waiting[sha][1]:
                    self.images.fail(url, message)
            return
        for sha, row in zip(shas, rows, strict=True):
            self.encoded[sha] = row
            for url in waiting[sha][1]:
                self.images.assign(url, row, sha)
                if self.cache is not None:
                    self.cache.put(sha, self.model_id, row, url=url)

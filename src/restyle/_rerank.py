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
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from restyle._components import Encoder, Marketplace
from restyle._embedcache import EmbeddingCache
from restyle._errors import FetchError, ImageError, RestyleError
from restyle._fetching import Fetcher
from restyle._imaging import decode
from restyle._types import Comp, Identification, Listing

__all__ = ["Reranker", "similarity_cutoff"]

logger = logging.getLogger("restyle.rerank")

#: Flags a comp can carry.
IMAGE_UNAVAILABLE = "image_unavailable"
DUPLICATE_IMAGE = "duplicate_image"
BELOW_CUTOFF = "below_cutoff"

# JPEGs are decoded at a reduced scale as long as both sides stay above this:
# twice the input of the largest common CLIP models (224 or 336 pixels).
_DRAFT_SIDE = 448
# Comp images are encoded in batches of at least this many as they arrive.
_STREAM_BATCH = 8


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
class _Prepared:
    sha256: str
    image: Any


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
        marketplaces: Sequence[Marketplace] = (),
        identification: Identification | None = None,
        warnings: list[str] | None = None,
    ) -> list[Comp]:
        """``found`` (listing, query step) pairs as Comps, best first."""
        warnings = warnings if warnings is not None else []
        if not found:
            return []
        listings = [listing for listing, _ in found]
        vectors, hashes, errors = self._vectors(listings, encoder, marketplaces, warnings)
        text = self._text_similarities(listings, encoder, identification, warnings)
        weight = self.text_weight if text is not None else 0.0
        comps: list[Comp] = []
        for index, (listing, step) in enumerate(found):
            vector = vectors.get(listing.key)
            text_sim = None if text is None else float(text[index])
            if vector is not None:
                similarity = float(np.clip(np.dot(vector, embedding), -1.0, 1.0))
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
                    image_error=errors.get(listing.key, "image unavailable"),
                    flags=(IMAGE_UNAVAILABLE,), query_step=step,
                ))
        # A stable sort: equal scores keep the marketplaces' own order.
        order = sorted(range(len(comps)), key=lambda i: -comps[i].score)
        comps = [comps[i] for i in order]
        return self._flag(comps, vectors, hashes)

    # -- vectors -----------------------------------------------------------------

    def _vectors(
        self, listings: Sequence[Listing], encoder: Encoder,
        marketplaces: Sequence[Marketplace], warnings: list[str],
    ) -> tuple[dict[str, np.ndarray], dict[str, str], dict[str, str]]:
        model_id = encoder.model_id
        vectors: dict[str, np.ndarray] = {}
        hashes: dict[str, str] = {}
        errors: dict[str, str] = {}
        for market in marketplaces:
            try:
                vectors.update(market.image_embeddings(listings, model_id=model_id))
            except Exception as exc:
                warnings.append(f"marketplace {market.name} gave no embeddings: {exc}")
        urls: dict[str, list[str]] = {}
        for item in listings:
            if item.key in vectors:
                continue
            if not item.image_url:
                errors[item.key] = "listing has no image"
                continue
            urls.setdefault(item.image_url, []).append(item.key)
        cache = self.cache
        # URLs seen recently need neither a download nor the encoder.
        for url in list(urls):
            sha = cache.sha_for_url(url) if cache is not None else None
            vector = cache.get(sha, model_id) if sha is not None and cache is not None else None
            if sha is not None and vector is not None:
                for key in urls.pop(url):
                    vectors[key] = vector
                    hashes[key] = sha
        if not urls:
            return vectors, hashes, errors
        ready: queue.Queue[tuple[str, _Prepared | RestyleError] | None] = queue.Queue()

        def on_result(url: str, result: bytes | FetchError) -> None:
            # Runs in the fetch threads: decoding overlaps the other downloads.
            outcome: _Prepared | RestyleError
            if isinstance(result, FetchError):
                outcome = result
            else:
                try:
                    # No source name: URLs may carry secrets into the message.
                    photo = decode(result, draft_side=_DRAFT_SIDE)
                    outcome = _Prepared(sha256=photo.sha256, image=photo.image)
                except ImageError as exc:
                    outcome = ImageError(f"comp image is unusable: {exc}")
            ready.put((url, outcome))

        def fetch_all() -> None:
            try:
                self.fetcher.fetch_many(list(urls), on_result=on_result)
            finally:
                ready.put(None)

        encoded: dict[str, np.ndarray] = {}  # sha -> vector, within this call
        batch: dict[str, tuple[Any, list[str]]] = {}  # sha -> (image, urls)
        unseen = set(urls)

        def assign(url: str, sha: str, vector: np.ndarray) -> None:
            for key in urls[url]:
                vectors[key] = vector

        def take(url: str, outcome: _Prepared | RestyleError) -> None:
            unseen.discard(url)
            if isinstance(outcome, RestyleError):
                for key in urls[url]:
                    errors[key] = str(outcome)
                return
            sha = outcome.sha256
            for key in urls[url]:
                hashes[key] = sha
            if sha in encoded:
                assign(url, sha, encoded[sha])
            elif sha in batch:
                batch[sha][1].append(url)
            else:
                known = cache.get(sha, model_id) if cache is not None else None
                if known is not None:
                    cache.remember_url(url, sha)  # type: ignore[union-attr]
                    encoded[sha] = known
                    assign(url, sha, known)
                else:
                    batch[sha] = (outcome.image, [url])

        def encode_batch() -> None:
            shas = list(batch)
            try:
                rows = encoder.encode_images([batch[sha][0] for sha in shas])
            except Exception as exc:
                message = f"comp images could not be encoded: {type(exc).__name__}: {exc}"
                warnings.append(message)
                logger.warning("%s", message)
                for sha in shas:
                    for url in batch[sha][1]:
                        for key in urls[url]:
                            errors[key] = message
                batch.clear()
                return
            for sha, row in zip(shas, rows, strict=True):
                encoded[sha] = row
                for url in batch[sha][1]:
                    assign(url, sha, row)
                    if cache is not None:
                        cache.put(sha, model_id, row, url=url)
            batch.clear()

        # Encode while the rest still download: the model works on what has
        # arrived instead of waiting for the slowest image.
        fetching = threading.Thread(target=fetch_all, name="restyle-rerank-fetch", daemon=True)
        fetching.start()
        try:
            done = False
            while not done:
                arrived = ready.get()
                while arrived is not None:
                    take(*arrived)
                    try:
                        arrived = ready.get_nowait()
                    except queue.Empty:
                        break
                done = arrived is None
                if batch and (done or len(batch) >= _STREAM_BATCH):
                    encode_batch()
        finally:
            fetching.join()
        for url in unseen:
            for key in urls[url]:
                errors[key] = "image was not fetched"
        return vectors, hashes, errors

    def _text_similarities(
        self, listings: Sequence[Listing], encoder: Encoder,
        identification: Identification | None, warnings: list[str],
    ) -> np.ndarray | None:
        if self.text_weight <= 0 or identification is None:
            return None
        phrase = identification_text(identification)
        if not phrase:
            return None
        try:
            vectors = encoder.encode_texts([phrase, *(item.title for item in listings)])
        except Exception as exc:
            warnings.append(f"titles could not be compared: {type(exc).__name__}: {exc}")
            return None
        sims: np.ndarray = np.clip(vectors[1:] @ vectors[0], -1.0, 1.0)
        return sims

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
                    flags[i].append(DUPLICATE_IMAGE)
                    break
            else:
                kept.append((sha, vector))
        if self.cutoff:
            sims = [c.similarity for c in comps if c.similarity is not None]
            cutoff = similarity_cutoff(sims)
            if cutoff is not None:
                for i, comp in enumerate(comps):
                    if comp.similarity is not None and comp.similarity < cutoff:
                        flags[i].append(BELOW_CUTOFF)
        return [
            comp if tuple(f) == comp.flags else _with_flags(comp, tuple(f))
            for comp, f in zip(comps, flags, strict=True)
        ]


def _with_flags(comp: Comp, flags: tuple[str, ...]) -> Comp:
    return replace(comp, flags=flags)

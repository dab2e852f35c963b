"""Searching several marketplaces at once, each relaxing its query on its own, and
merging what they found without duplicates."""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import partial

import numpy as np

from restyle._input.imaging import Photo
from restyle._pipeline import budget as _budget
from restyle._pipeline.query import relaxed_queries
from restyle._plugin.components import Marketplace
from restyle._plugin.contracts import check_image_urls, check_known_vectors, check_listings
from restyle._secrets import describe
from restyle._types import Identification, Listing, Query

__all__ = ["Found", "SearchResult", "search_marketplaces"]

logger = logging.getLogger("restyle")


@dataclass(frozen=True, slots=True, kw_only=True)
class Found:
    """A listing, the relaxation step that found it and its rank in that step's answer."""

    listing: Listing
    step: str
    step_index: int
    rank: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchResult:
    """What the marketplaces found, merged; the most specific query; the image
    vectors the marketplaces already knew (by listing key); what went wrong."""

    found: tuple[Found, ...]
    query: Query | None
    known_vectors: Mapping[str, np.ndarray]
    warnings: tuple[str, ...]


def _search_step(
    market: Marketplace, photo: Photo, query: Query, embedding: np.ndarray, model_id: str,
    deadline: float, warnings: list[str],
) -> list[Listing]:
    label = f"marketplace {market.name}"

    def checked(answer: object, optional: bool = False) -> tuple[list[Listing], list[str]] | None:
        """Read on the worker, under the call's deadline (an ``optional``
        method answers None when the marketplace does not offer it)."""
        if answer is None and optional:
            return None
        noted: list[str] = []
        return check_listings(market, answer, limit=query.limit, warnings=noted), noted

    try:
        by_image = _budget.call(market, label, market.search_by_image, photo, query,
                                embedding=embedding, model_id=model_id, deadline=deadline,
                                check=partial(checked, optional=True))
        if by_image is not None:
            warnings.extend(by_image[1])
            return by_image[0]
    except (_budget.Overdue, _budget.ComponentBusy):
        raise  # the marketplace is stuck: searching by words would only wait again
    except Exception as exc:
        # Image search is the optional extra: fall back to words rather than lose the market.
        message = (f"{label} image search failed, searching by words: "
                   f"{describe(exc)}")
        warnings.append(message)
        logger.warning("%s", message)
    answer = _budget.call(market, label, market.search, query, deadline=deadline,
                          check=checked)
    assert answer is not None
    warnings.extend(answer[1])
    return answer[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Walked:
    found: list[Found]
    known_vectors: dict[str, np.ndarray]


def _walk(
    market: Marketplace, photo: Photo, queries: Sequence[Query], embedding: np.ndarray,
    model_id: str, wanted: int, deadline: float, warnings: list[str],
    exclude: Collection[str] = frozenset(),
) -> _Walked:
    """Relax the query step by step until this marketplace gave ``wanted``
    listings (leaving out those whose key is in ``exclude``), then ask it
    which of their image vectors it already knows. Every call is answered by
    ``deadline`` or the marketplace's own ``timeout``."""
    found: dict[str, Found] = {}
    for index, query in enumerate(queries):
        call_deadline = min(deadline, time.monotonic() + _budget.timeout_of(market))
        try:
            listings = _search_step(market, photo, query, embedding, model_id, call_deadline,
                                    warnings)
        except Exception as exc:
            message = f"marketplace {market.name} failed: {describe(exc)}"
            warnings.append(message)
            logger.warning("%s", message)
            break
        for rank, listing in enumerate(item for item in listings if item.key not in exclude):
            if listing.key not in found:
                found[listing.key] = Found(
                    listing=listing, step=query.step, step_index=index, rank=rank
                )
        if len(found) >= wanted:
            break
    known: dict[str, np.ndarray] = {}
    if found:
        listings = [f.listing for f in found.values()]
        keys = list(found)

        def checked_vectors(answer: object) -> tuple[dict[str, np.ndarray], list[str]]:
            noted: list[str] = []
            return check_known_vectors(market, answer, keys=keys, dim=len(embedding),
                                       warnings=noted), noted

        try:
            known, noted = _budget.call(
                market, f"marketplace {market.name}", market.image_embeddings, listings,
                model_id=model_id,
                deadline=min(deadline, time.monotonic() + _budget.timeout_of(market)),
                check=checked_vectors,
            )
            warnings.extend(noted)
        except Exception as exc:
            warnings.append(f"marketplace {market.name} gave no embeddings: "
                            f"{describe(exc)}")
        check_image_urls(market, listings, known=known, warnings=warnings)
    return _Walked(found=list(found.values()), known_vectors=known)


def merge(results: Sequence[Sequence[Found]], *, limit: int) -> list[Found]:
    """Merge per-marketplace results, most specific step first and the marketplaces
    interleaved, dropping repeats of an item id or of an image URL."""
    ordered = sorted(
        (f for results_of_market in results for f in results_of_market),
        key=lambda f: (f.step_index, f.rank),
    )
    keys: set[str] = set()
    images: set[str] = set()
    merged: list[Found] = []
    for item in ordered:
        image = item.listing.image_url
        if item.listing.key in keys or (image and image in images):
            continue
        keys.add(item.listing.key)
        if image:
            images.add(image)
        merged.append(item)
        if len(merged) >= limit:
            break
    return merged


def search_marketplaces(
    marketplaces: Sequence[Marketplace],
    photo: Photo,
    identification: Identification,
    *,
    embedding: np.ndarray,
    model_id: str,
    wanted: int,
    limit: int,
    deadline: float,
    exclude: Collection[str] = frozenset(),
) -> SearchResult:
    """Search every marketplace concurrently; each relaxes its own query until it
    found ``wanted`` listings. Keeps at most ``limit`` merged listings. A
    marketplace that fails, overruns ``deadline`` (a :func:`time.monotonic`
    value) or answers off its contract adds a warning and keeps what it found
    before. Listings whose key is in ``exclude`` are left out of every answer."""
    queries = list(relaxed_queries(identification, limit=limit))
    first = queries[0] if queries else None
    if not marketplaces:
        return SearchResult(found=(), query=first, known_vectors={}, warnings=())
    own_warnings: list[list[str]] = [[] for _ in marketplaces]
    walked: list[_Walked | None] = [None] * len(marketplaces)

    def run(index: int, market: Marketplace) -> None:
        try:
            walked[index] = _walk(market, photo, queries, embedding, model_id, wanted,
                                  deadline, own_warnings[index], exclude)
        except Exception as exc:  # a bug must cost this marketplace, not the thread's caller
            logger.exception("searching marketplace %s failed", market.name)
            own_warnings[index].append(
                f"marketplace {market.name} failed: {describe(exc)}")

    # Each walk returns by the deadline because every call inside it does; a
    # lone marketplace walks on this thread, saving a hand-over to another.
    if len(marketplaces) == 1:
        run(0, marketplaces[0])
    else:
        walks = [_budget.spawn(partial(run, i, m), name=f"restyle search {m.name}")
                 for i, m in enumerate(marketplaces)]
        for walk in walks:
            walk.wait()
    results = [w for w in walked if w is not None]
    known: dict[str, np.ndarray] = {}
    for result in results:
        known.update(result.known_vectors)
    warnings = [w for own in own_warnings for w in own]  # in marketplace order
    merged = merge([r.found for r in results], limit=limit)
    kept = {f.listing.key for f in merged}
    return SearchResult(
        found=tuple(merged), query=first,
        known_vectors={k: v for k, v in known.items() if k in kept}, warnings=tuple(warnings),
    )

"""Searching several marketplaces at once, each relaxing its query on its own, and
merging what they found without duplicates."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from restyle._components import Marketplace
from restyle._imaging import Photo
from restyle._query import relaxed_queries
from restyle._types import Identification, Listing, Query

__all__ = ["Found", "search_marketplaces"]

logger = logging.getLogger("restyle")


@dataclass(frozen=True, slots=True, kw_only=True)
class Found:
    """A listing, the relaxation step that found it and its rank in that step's answer."""

    listing: Listing
    step: str
    step_index: int
    rank: int


def _search_step(
    market: Marketplace, photo: Photo, query: Query, embedding: np.ndarray, model_id: str,
    warnings: list[str],
) -> Sequence[Listing]:
    try:
        by_image = market.search_by_image(photo, query, embedding=embedding, model_id=model_id)
    except Exception as exc:
        # Image search is the optional extra: fall back to words rather than lose the market.
        message = (f"marketplace {market.name} image search failed, searching by words: "
                   f"{type(exc).__name__}: {exc}")
        warnings.append(message)
        logger.warning("%s", message)
        by_image = None
    return by_image if by_image is not None else market.search(query)


def _walk(
    market: Marketplace, photo: Photo, queries: Sequence[Query], embedding: np.ndarray,
    model_id: str, wanted: int, warnings: list[str],
) -> list[Found]:
    """Relax the query step by step until this marketplace gave ``wanted`` listings."""
    found: dict[str, Found] = {}
    for index, query in enumerate(queries):
        try:
            listings = list(_search_step(market, photo, query, embedding, model_id, warnings))
        except Exception as exc:
            message = f"marketplace {market.name} failed: {type(exc).__name__}: {exc}"
            warnings.append(message)
            logger.warning("%s", message)
            break
        for rank, listing in enumerate(listings):
            if listing.key not in found:
                found[listing.key] = Found(
                    listing=listing, step=query.step, step_index=index, rank=rank
                )
        if len(found) >= wanted:
            break
    return list(found.values())


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
    warnings: list[str],
) -> tuple[list[Found], Query | None]:
    """Search every marketplace concurrently; each relaxes its own query until it
    found ``wanted`` listings. Returns at most ``limit`` merged listings and the
    most specific query. A marketplace that fails adds a warning and is skipped."""
    queries = list(relaxed_queries(identification, limit=limit))
    if not marketplaces:
        return [], queries[0] if queries else None
    own_warnings: list[list[str]] = [[] for _ in marketplaces]
    with ThreadPoolExecutor(max_workers=len(marketplaces)) as pool:
        futures = [
            pool.submit(_walk, market, photo, queries, embedding, model_id, wanted, own)
            for market, own in zip(marketplaces, own_warnings, strict=True)
        ]
        results = [future.result() for future in futures]
    for own in own_warnings:  # in marketplace order, whatever order the threads ran in
        warnings.extend(own)
    return merge(results, limit=limit), queries[0] if queries else None

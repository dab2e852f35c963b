"""The catalog's read side, apart from the database: its rows as Listings,
a query's filters, the text search's scoring, and one vector's neighbours as
the recent-search cache keeps them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from restyle._types import Condition, Listing, Money, Query

__all__ = ["MARKETPLACE_NAME", "SEARCH_POOL", "Neighbours", "matches", "text_matches",
           "to_listing"]

MARKETPLACE_NAME = "catalog"
#: Nearest neighbours a vector search takes from the index at least. One
#: analysis searches with the photo's vector several times (the catalog expert,
#: then every relaxation step of the marketplace, each filtering more loosely):
#: one index search of this many answers them all.
SEARCH_POOL = 150


@dataclass(slots=True)
class Neighbours:
    """One vector's nearest catalog items, best first, and those already read as
    Listings (None for an id the database no longer has)."""

    generation: int
    ids: np.ndarray
    scores: np.ndarray
    listings: dict[int, Listing | None] = field(default_factory=dict)


def to_listing(row: Sequence[Any]) -> Listing:
    _, listing_id, title, brand, category, condition, price, currency, url, image, sold = row
    if image.lower().startswith(("http://", "https://")):
        image_url = image
    else:
        path = Path(image)
        image_url = (path if path.is_absolute() else path.resolve()).as_uri()
    return Listing(
        marketplace=MARKETPLACE_NAME,
        listing_id=listing_id,
        title=title,
        price=Money(amount=Decimal(price), currency=currency) if price is not None else None,
        url=url,
        image_url=image_url,
        brand=brand,
        category=category,
        condition=Condition(condition),
        sold=None if sold is None else bool(sold),
    )


def _norm(text: str | None) -> str:
    return (text or "").strip().lower()


def matches(listing: Listing, query: Query) -> bool:
    if query.brand and _norm(listing.brand) != _norm(query.brand):
        return False
    if query.category and _norm(listing.category) != _norm(query.category):
        return False
    if listing.price is not None:
        if query.currency and listing.price.currency != query.currency:
            return False
        if query.min_price is not None and listing.price.amount < query.min_price:
            return False
        if query.max_price is not None and listing.price.amount > query.max_price:
            return False
    return query.condition is None or listing.condition is query.condition


def text_matches(listings: Iterable[Listing], query: Query) -> list[Listing]:
    """The listings that match the query's filters and share words with its
    text (any, if it has none), most words first, at most ``query.limit``."""
    words = [w for w in query.text.lower().split() if len(w) > 1][:12]
    scored = []
    for listing in listings:
        if not matches(listing, query):
            continue
        haystack = " ".join(
            filter(None, [listing.title, listing.brand, listing.category])
        ).lower()
        hits = sum(1 for w in words if w in haystack)
        if hits or not words:
            scored.append((hits, listing))
    scored.sort(key=lambda pair: -pair[0])
    return [listing for _, listing in scored[: query.limit]]

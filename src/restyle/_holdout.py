"""Holding listings out of one analysis: the local catalog as the components
see it while some of its listings are hidden, without rebuilding anything.

A backtest prices each item with the item itself (and its copies) held out,
so that neither the ``catalog`` expert nor the ``catalog`` marketplace can
find the answer in the catalog.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from restyle._types import Listing, Query

if TYPE_CHECKING:
    from restyle._catalog import Catalog

__all__ = ["HeldOutCatalog", "catalog_ids"]


def catalog_ids(keys: Collection[str], marketplace: str) -> frozenset[str]:
    """The listing ids among ``keys`` (``marketplace:listing_id``) of ``marketplace``."""
    prefix = f"{marketplace}:"
    return frozenset(key[len(prefix):] for key in keys if key.startswith(prefix))


class HeldOutCatalog:
    """A catalog whose searches and lookups never return the listings ``hidden``
    (by listing id); everything else is the catalog's own.

    Searches ask the catalog for as many more listings as are hidden, so that
    a search still returns ``limit`` listings when the catalog has them.
    """

    def __init__(self, catalog: Catalog, hidden: Collection[str]) -> None:
        self._catalog = catalog
        self._hidden = frozenset(hidden)

    def __repr__(self) -> str:
        return f"<HeldOutCatalog {self._catalog!r} hiding {len(self._hidden)}>"

    def __getattr__(self, name: str) -> Any:
        # model_id, dim, directory and the rest: the catalog's own.
        return getattr(self._catalog, name)

    def listing(self, item_id: int) -> Listing | None:
        listing = self._catalog.listing(item_id)
        return None if listing is None or listing.listing_id in self._hidden else listing

    def search_vector(
        self, vector: np.ndarray, query: Query | None = None, *, limit: int = 20
    ) -> list[tuple[Listing, float]]:
        found = self._catalog.search_vector(vector, query, limit=limit + len(self._hidden))
        return [(item, score) for item, score in found
                if item.listing_id not in self._hidden][:limit]

    def search_text(self, query: Query) -> list[Listing]:
        found = self._catalog.search_text(replace(query, limit=query.limit + len(self._hidden)))
        return [item for item in found if item.listing_id not in self._hidden][:query.limit]

    def vectors_for(self, listing_ids: Sequence[str]) -> dict[str, np.ndarray]:
        return self._catalog.vectors_for([i for i in listing_ids if i not in self._hidden])

"""The ``catalog`` marketplace: listings from the local catalog, the default."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from restyle._input.vouched import vouch
from restyle._plugin.components import CatalogView, Marketplace
from restyle._plugin.hookspecs import hookimpl
from restyle._types import Listing, Query

if TYPE_CHECKING:
    from restyle._input.imaging import Photo

__all__ = ["CatalogMarketplace"]


class CatalogMarketplace(Marketplace):
    """Searches the Engine's local catalog by image vector or by words."""

    name = "catalog"

    @property
    def catalog(self) -> CatalogView:
        """The catalog of the Engine calling."""
        return self.context.catalog

    def search(self, query: Query) -> Sequence[Listing]:
        return _served(self.catalog.search_text(query))

    def search_by_image(
        self, photo: Photo, query: Query, *, embedding: np.ndarray, model_id: str
    ) -> Sequence[Listing] | None:
        if model_id != self.catalog.model_id:
            return None
        return _served([listing for listing, _ in self.catalog.search_vector(embedding, query,
                                                                              limit=query.limit)])

    def image_embeddings(
        self, listings: Sequence[Listing], *, model_id: str
    ) -> Mapping[str, np.ndarray]:
        if model_id != self.catalog.model_id:
            return {}
        ours = [listing for listing in listings if listing.marketplace == self.name]
        vectors = self.catalog.vectors_for([listing.listing_id for listing in ours])
        return {
            listing.key: vectors[listing.listing_id]
            for listing in ours
            if listing.listing_id in vectors
        }


def _served(listings: list[Listing]) -> list[Listing]:
    # The catalog's own image files: a notebook may show these, and only these, local files.
    vouch(listing.image_url for listing in listings)
    return listings


@hookimpl
def register_marketplaces(register: Any) -> None:
    register(CatalogMarketplace())

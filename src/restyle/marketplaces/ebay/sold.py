"""The ``ebay-sold`` marketplace: what sold on eBay in the last 90 days, from
the Marketplace Insights API, and its sales read as sold listings."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import numpy as np

from restyle._errors import ConfigurationError, MarketplaceAuthError
from restyle._types import Listing, Query
from restyle.marketplaces.ebay.browse import EbayMarketplace, ImageSearchStatus
from restyle.marketplaces.ebay.config import INSIGHTS_SCOPE, SALES_SEARCH_PATH
from restyle.marketplaces.ebay.items import _amount, _integer, _item_fields, _text

if TYPE_CHECKING:
    from restyle._input.imaging import Photo

__all__ = ["EbaySoldMarketplace"]

logger = logging.getLogger("restyle.marketplaces.ebay")


class EbaySoldMarketplace(EbayMarketplace):
    """What sold on eBay in the last 90 days, from the Marketplace Insights API.

    Every listing it returns is a sale: ``sold`` True, ``price`` the last sold
    price, ``sold_at`` the last sale's time and ``quantity_sold`` how many
    sold. It shares the ``ebay`` marketplace's keys, settings, filters,
    retries and errors, with a token of its own scope. eBay opens the API to
    approved applications only: until it does, eBay answers 403 and the
    search fails with a :class:`MarketplaceAuthError` saying so (once; the
    later searches fail at once, without asking), which the Engine turns into
    a warning while the analysis goes on with the other marketplaces.
    """

    name = "ebay-sold"
    api = "Marketplace Insights API"
    scope = INSIGHTS_SCOPE
    search_path = SALES_SEARCH_PATH
    items_field = "itemSales"

    def __init__(self, **options: Any) -> None:
        if options.get("image_search"):
            raise ConfigurationError("ebay-sold cannot search by image; use the ebay marketplace")
        if options.get("sort") is not None:
            raise ConfigurationError("the Marketplace Insights API takes no sort")
        super().__init__(**{**options, "image_search": False})
        self._refusal: MarketplaceAuthError | None = None

    @property
    def enabled(self) -> bool | None:
        """False once eBay said the API is not enabled for this application; None before."""
        return False if self._refusal is not None else None

    @property
    def image_search_status(self) -> str:
        return ImageSearchStatus.DISABLED

    def search(self, query: Query) -> Sequence[Listing]:
        refusal = self._refusal
        if refusal is not None:
            raise self._error(str(refusal), error_type=MarketplaceAuthError,
                              marketplace=self.name, status=refusal.status,
                              error_ids=refusal.error_ids)
        try:
            return super().search(query)
        except MarketplaceAuthError as exc:
            if exc.status != 403 and not self._scope_refused:
                raise
            refused = self._error(
                f"eBay's Marketplace Insights API (sold items) is not enabled for this "
                f"application (HTTP {exc.status}); prices rest on asking prices. Ask eBay "
                "for access to it, or leave ebay-sold out of the marketplaces",
                error_type=MarketplaceAuthError, marketplace=self.name, status=exc.status,
                error_ids=exc.error_ids,
            )
            with self._state_lock:
                first = self._refusal is None
                self._refusal = refused
            if first:
                logger.warning("%s", refused)
            raise refused from None

    def search_by_image(
        self, photo: Photo, query: Query, *, embedding: np.ndarray, model_id: str
    ) -> Sequence[Listing] | None:
        return None

    def _listing(self, item: Any) -> Listing | None:
        return _sold_listing(item, self.name)


def _sold_listing(item: Any, marketplace: str) -> Listing | None:
    """One ``itemSales`` entry as a sold Listing; None (and a log line) when unusable."""
    fields = _item_fields(item, marketplace, "sale")
    if fields is None:
        return None
    return Listing(
        **fields,
        price=_amount(item.get("lastSoldPrice")),
        sold=True,
        sold_at=_timestamp(item.get("lastSoldDate")),
        quantity_sold=_integer(item.get("totalSoldQuantity")),
    )


def _timestamp(value: Any) -> datetime | None:
    """eBay's ``2025-05-30T17:43:21.000Z`` as an aware datetime, or None if unusable."""
    text = _text(value)
    if text is None:
        return None
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


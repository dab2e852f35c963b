"""The ``ebay`` marketplace: eBay's Browse API, searched by words and, where the
application is allowed to, by image; and ``ebay-sold``: what sold on eBay in the
last 90 days, from the Marketplace Insights API. Set-up is described in
docs/marketplaces.md.

The modules, along their jobs:

- ``config``: eBay's addresses, scopes, marketplaces and condition ids, and the
  settings read from the arguments or the environment;
- ``client``: HTTP, a session per thread, retries, eBay's errors as typed errors;
- ``auth``: the application's keys, its OAuth token and the authorised call;
- ``items``: reading a page of eBay's answer and the fields items share;
- ``browse``: the ``ebay`` marketplace (Browse API search, by words and by image);
- ``sold``: the ``ebay-sold`` marketplace (Marketplace Insights API);
- ``taxonomy``: categories, aspects and conditions for listing drafts
  (Taxonomy and Metadata APIs);
- ``inventory``, ``inventory_contract``: a draft as Sell Inventory API
  payloads, checked against eBay's contract, and the publisher.
"""

from __future__ import annotations

from typing import Any

from restyle._plugin.hookspecs import hookimpl
from restyle.marketplaces.ebay import config as _config
from restyle.marketplaces.ebay.browse import MAX_PAGES, EbayMarketplace, ImageSearchStatus
from restyle.marketplaces.ebay.config import *  # noqa: F403 (its names, re-exported)
from restyle.marketplaces.ebay.inventory import (
    INVENTORY_SCOPE,
    EbayPublisher,
    Published,
    SellerSettings,
)
from restyle.marketplaces.ebay.sold import EbaySoldMarketplace
from restyle.marketplaces.ebay.taxonomy import EbayTaxonomy

__all__ = [
    "INVENTORY_SCOPE",
    "MAX_PAGES",
    "EbayMarketplace",
    "EbayPublisher",
    "EbaySoldMarketplace",
    "EbayTaxonomy",
    "ImageSearchStatus",
    "Published",
    "SellerSettings",
]
__all__ += _config.__all__


@hookimpl
def register_marketplaces(register: Any) -> None:
    register(EbayMarketplace())
    register(EbaySoldMarketplace())

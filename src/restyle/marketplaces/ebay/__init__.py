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
- ``sold``: the ``ebay-sold`` marketplace (Marketplace Insights API).
"""

from __future__ import annotations

from typing import Any

from restyle._plugin.hookspecs import hookimpl
from restyle.marketplaces.ebay.browse import MAX_PAGES, EbayMarketplace, ImageSearchStatus
from restyle.marketplaces.ebay.config import (
    CONDITION_IDS,
    ENV_BASE_URL,
    ENV_CLIENT_ID,
    ENV_CLIENT_SECRET,
    ENV_IMAGE_SEARCH,
    ENV_MARKETPLACE_ID,
    IMAGE_SEARCH_PATH,
    INSIGHTS_SCOPE,
    MARKETPLACE_CURRENCIES,
    PRODUCTION_URL,
    SALES_SEARCH_PATH,
    SANDBOX_URL,
    SCOPE,
    SEARCH_PATH,
    TOKEN_PATH,
)
from restyle.marketplaces.ebay.sold import EbaySoldMarketplace

__all__ = [
    "CONDITION_IDS",
    "ENV_BASE_URL",
    "ENV_CLIENT_ID",
    "ENV_CLIENT_SECRET",
    "ENV_IMAGE_SEARCH",
    "ENV_MARKETPLACE_ID",
    "IMAGE_SEARCH_PATH",
    "INSIGHTS_SCOPE",
    "MARKETPLACE_CURRENCIES",
    "MAX_PAGES",
    "PRODUCTION_URL",
    "SALES_SEARCH_PATH",
    "SANDBOX_URL",
    "SCOPE",
    "SEARCH_PATH",
    "TOKEN_PATH",
    "EbayMarketplace",
    "EbaySoldMarketplace",
    "ImageSearchStatus",
]

@hookimpl
def register_marketplaces(register: Any) -> None:
    register(EbayMarketplace())
    register(EbaySoldMarketplace())

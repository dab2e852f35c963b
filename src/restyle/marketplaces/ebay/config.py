"""Where eBay is and what it calls things: the environment variables, the API
addresses and scopes, the marketplaces and their currencies, the condition
ids, and the settings a search reads (arguments first, then the environment)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from restyle import _settings
from restyle._errors import ConfigurationError
from restyle._types import Condition

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
    "PRODUCTION_URL",
    "SALES_SEARCH_PATH",
    "SANDBOX_URL",
    "SCOPE",
    "SEARCH_PATH",
    "TOKEN_PATH",
]

ENV_CLIENT_ID = "EBAY_CLIENT_ID"
ENV_CLIENT_SECRET = "EBAY_CLIENT_SECRET"
ENV_MARKETPLACE_ID = "EBAY_MARKETPLACE_ID"
ENV_BASE_URL = "EBAY_BASE_URL"
ENV_IMAGE_SEARCH = "EBAY_IMAGE_SEARCH"

PRODUCTION_URL = "https://api.ebay.com"
SANDBOX_URL = "https://api.sandbox.ebay.com"
TOKEN_PATH = "/identity/v1/oauth2/token"
SEARCH_PATH = "/buy/browse/v1/item_summary/search"
IMAGE_SEARCH_PATH = "/buy/browse/v1/item_summary/search_by_image"
SALES_SEARCH_PATH = "/buy/marketplace_insights/v1_beta/item_sales/search"
#: The OAuth scope of the Browse API, and that of the Marketplace Insights API.
SCOPE = "https://api.ebay.com/oauth/api_scope"
INSIGHTS_SCOPE = "https://api.ebay.com/oauth/api_scope/buy.marketplace.insights"

#: The Browse API's marketplaces and the currency each lists prices in.
MARKETPLACE_CURRENCIES: Mapping[str, str] = {
    "EBAY_US": "USD", "EBAY_GB": "GBP", "EBAY_DE": "EUR", "EBAY_FR": "EUR",
    "EBAY_IT": "EUR", "EBAY_ES": "EUR", "EBAY_AT": "EUR", "EBAY_BE": "EUR",
    "EBAY_NL": "EUR", "EBAY_IE": "EUR", "EBAY_CH": "CHF", "EBAY_PL": "PLN",
    "EBAY_CA": "CAD", "EBAY_AU": "AUD", "EBAY_HK": "HKD", "EBAY_SG": "SGD",
    "EBAY_MY": "MYR", "EBAY_PH": "PHP",
}

#: eBay condition ids and where they sit on restyle's small condition scale.
CONDITION_IDS: Mapping[int, Condition] = {
    1000: Condition.NEW,        # New / New with tags
    1500: Condition.LIKE_NEW,   # New other / New without tags
    1750: Condition.LIKE_NEW,   # New with defects
    2000: Condition.LIKE_NEW,   # Certified refurbished
    2010: Condition.LIKE_NEW,   # Excellent - Refurbished
    2020: Condition.LIKE_NEW,   # Very good - Refurbished
    2030: Condition.LIKE_NEW,   # Good - Refurbished
    2500: Condition.LIKE_NEW,   # Seller refurbished
    2750: Condition.LIKE_NEW,   # Like new
    2990: Condition.USED,       # Pre-owned - Excellent
    3000: Condition.USED,       # Used / Pre-owned - Good
    3010: Condition.USED,       # Pre-owned - Fair
    4000: Condition.USED,       # Very good
    5000: Condition.USED,       # Good
    6000: Condition.USED,       # Acceptable
    7000: Condition.FOR_PARTS,  # For parts or not working
}


@dataclass(frozen=True, slots=True)
class _Config:
    marketplace_id: str
    currency: str
    base_url: str
    image_search: bool


def _resolve_config(
    marketplace_id: str | None, base_url: str | None, image_search: bool | None
) -> _Config:
    """The arguments given (None where not given), else the environment, else eBay's defaults."""
    marketplace_id = marketplace_id or _settings.env_str(ENV_MARKETPLACE_ID) or "EBAY_US"
    _check_marketplace_id(marketplace_id)
    base_url = (base_url or _settings.env_str(ENV_BASE_URL) or PRODUCTION_URL).rstrip("/")
    if not base_url.startswith(("https://", "http://")):
        raise ConfigurationError(
            f"the eBay base URL must start with https://, got {base_url!r}"
        )
    if image_search is None:
        image_search = _settings.env_flag(ENV_IMAGE_SEARCH)
    return _Config(
        marketplace_id=marketplace_id, currency=MARKETPLACE_CURRENCIES[marketplace_id],
        base_url=base_url, image_search=image_search,
    )


def _check_marketplace_id(marketplace_id: str) -> None:
    if marketplace_id not in MARKETPLACE_CURRENCIES:
        raise ConfigurationError(
            f"unknown eBay marketplace id {marketplace_id!r}; use one of "
            f"{', '.join(sorted(MARKETPLACE_CURRENCIES))}"
        )

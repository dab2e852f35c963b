"""The ``ebay`` marketplace: eBay's Browse API, searched by words and, where the
application is allowed to, by image, a page at a time, and its items read as
listings for sale."""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from restyle._errors import ConfigurationError, MarketplaceAuthError, MarketplaceError
from restyle._plugin.components import Marketplace
from restyle._types import Condition, Listing, Query
from restyle.marketplaces.ebay.auth import _Credentials, _EbayAuth
from restyle.marketplaces.ebay.config import (
    CONDITION_IDS,
    ENV_IMAGE_SEARCH,
    IMAGE_SEARCH_PATH,
    SCOPE,
    SEARCH_PATH,
    _check_marketplace_id,
    _Config,
    _resolve_config,
)
from restyle.marketplaces.ebay.items import _amount, _item_fields, _parse_page, _shipping

if TYPE_CHECKING:
    from restyle._input.imaging import Photo

__all__ = ["MAX_PAGES", "EbayMarketplace", "ImageSearchStatus"]

logger = logging.getLogger("restyle.marketplaces.ebay")

_BUYING_OPTIONS = frozenset({"FIXED_PRICE", "AUCTION", "BEST_OFFER", "CLASSIFIED_AD"})
_SORTS = frozenset({"price", "-price", "newlyListed", "endingSoonest", "distance"})
_MAX_PAGE = 200
#: The Browse API serves at most this many results of one search (offset + limit).
_MAX_RESULTS = 10_000
#: One search reads at most this many pages, whatever ``next`` links eBay sends;
#: it also stops at the first page that brings no item it has not seen.
MAX_PAGES = 20
_MAX_QUERY_CHARS = 100


class ImageSearchStatus:
    """Where search by image stands for this application."""

    DISABLED = "disabled"
    ENABLED = "enabled"
    NOT_ENABLED_FOR_APPLICATION = "not_enabled_for_application"


class EbayMarketplace(_EbayAuth, Marketplace):
    """Comparable listings from eBay's Browse API.

    Constructing one is cheap and needs no credentials; they are read on the
    first search from ``client_id`` / ``client_secret`` or the environment
    (``EBAY_CLIENT_ID`` / ``EBAY_CLIENT_SECRET``). ``sleep`` and ``clock`` are
    injectable so that tests of retries and token expiry do not wait.
    """

    name = "ebay"
    error_type = MarketplaceError
    #: The API searched, the scope of its token and the field of an answer that
    #: holds the items: a subclass searching another eBay API changes these.
    api: ClassVar[str] = "Browse API"
    scope: ClassVar[str] = SCOPE
    search_path: ClassVar[str] = SEARCH_PATH
    items_field: ClassVar[str] = "itemSummaries"

    def __init__(
        self,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        marketplace_id: str | None = None,
        base_url: str | None = None,
        category_ids: Mapping[str, str | Sequence[str]] | None = None,
        buying_options: Sequence[str] = ("FIXED_PRICE", "AUCTION"),
        filters: Sequence[str] = (),
        sort: str | None = None,
        max_comps: int = 50,
        page_size: int = 50,
        image_search: bool | None = None,
        timeout: float | tuple[float, float] = (5.0, 20.0),
        max_retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 8.0,
        max_retry_after: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check_options(
            client_id, client_secret, marketplace_id, buying_options, sort, max_comps,
            page_size, (max_retries, backoff, max_backoff, max_retry_after),
        )
        super().__init__()
        self._credentials = (
            _Credentials(client_id, client_secret)
            if client_id is not None and client_secret is not None else None
        )
        self._marketplace_id = marketplace_id
        self._base_url = base_url
        self._image_search = image_search
        self.category_ids: dict[str, tuple[str, ...]] = {
            key.strip().lower(): (value,) if isinstance(value, str) else tuple(value)
            for key, value in (category_ids or {}).items()
        }
        self.buying_options = tuple(buying_options)
        self.filters = tuple(filters)
        self.sort = sort
        self.max_comps = max_comps
        self.page_size = page_size
        self.request_timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.max_retry_after = max_retry_after
        self._sleep = sleep
        self._clock = clock
        self._token = None
        self._token_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._image_refused = False
        self._scope_refused = False
        self._last_image_search: tuple[object, list[Listing]] | None = None

    # -- configuration ---------------------------------------------------------

    def _config(self) -> _Config:
        """Explicit arguments first, then the environment, read when first needed."""
        return _resolve_config(self._marketplace_id, self._base_url, self._image_search)

    @property
    def image_search_status(self) -> str:
        """One of :class:`ImageSearchStatus`: whether search by image is used."""
        if self._image_refused:
            return ImageSearchStatus.NOT_ENABLED_FOR_APPLICATION
        try:
            enabled = self._config().image_search
        except ConfigurationError:
            enabled = False
        return ImageSearchStatus.ENABLED if enabled else ImageSearchStatus.DISABLED

    # -- searching -------------------------------------------------------------

    def search(self, query: Query) -> Sequence[Listing]:
        config = self._config()
        params = self._params(query, config)
        if not params.get("q") and not params.get("category_ids"):
            # eBay refuses a search with neither words nor a category: nothing to ask.
            return []
        with self._boundary("search"):
            return self._paginate(
                "GET", self.search_path, params, min(query.limit, self.max_comps), config,
                what="search",
            )

    def search_by_image(
        self, photo: Photo, query: Query, *, embedding: np.ndarray, model_id: str
    ) -> Sequence[Listing] | None:
        config = self._config()
        if not config.image_search or self._image_refused:
            return None
        params = self._params(query, config)
        params.pop("q", None)  # search_by_image takes no words
        want = min(query.limit, self.max_comps)
        # Relaxed queries often differ only in words, which an image search ignores.
        cache_key = (photo.sha256, want, tuple(sorted(params.items())))
        with self._state_lock:
            last = self._last_image_search
            if last is not None and last[0] == cache_key:
                return list(last[1])
        body = {"image": base64.b64encode(photo.encoded(max_side=1024)).decode("ascii")}
        try:
            with self._boundary("image search"):
                listings = self._paginate(
                    "POST", IMAGE_SEARCH_PATH, params, want, config, what="image search",
                    body=body,
                )
        except MarketplaceAuthError as exc:
            if exc.status != 403:
                raise
            with self._state_lock:
                first = not self._image_refused
                self._image_refused = True
            if first:
                logger.warning(
                    "eBay search by image is not enabled for this application (HTTP 403); "
                    "searching by words instead. Ask eBay for access to search_by_image "
                    "or set %s=0.", ENV_IMAGE_SEARCH,
                )
            return None
        with self._state_lock:
            self._last_image_search = (cache_key, listings)
        return list(listings)

    def _params(self, query: Query, config: _Config) -> dict[str, str]:
        params: dict[str, str] = {}
        if query.category:
            ids = self.category_ids.get(query.category.strip().lower())
            if ids:
                params["category_ids"] = ",".join(ids)
        filters: list[str] = []
        if query.min_price is not None or query.max_price is not None:
            low = "" if query.min_price is None else _plain(query.min_price)
            high = "" if query.max_price is None else _plain(query.max_price)
            filters.append(f"price:[{low}..{high}]")
            filters.append(f"priceCurrency:{query.currency or config.currency}")
        if query.condition is not None and query.condition is not Condition.UNKNOWN:
            wanted = sorted(i for i, c in CONDITION_IDS.items() if c is query.condition)
            filters.append("conditionIds:{" + "|".join(str(i) for i in wanted) + "}")
        if self.buying_options:
            filters.append("buyingOptions:{" + "|".join(self.buying_options) + "}")
        filters.extend(self.filters)
        if filters:
            params["filter"] = ",".join(filters)
        if self.sort:
            params["sort"] = self.sort
        if query.text.strip():
            params["q"] = _shorten(query.text)
        return params

    def _paginate(
        self, method: str, path: str, params: Mapping[str, str], want: int,
        config: _Config, *, what: str, body: Mapping[str, str] | None = None,
    ) -> list[Listing]:
        if want <= 0:
            return []
        page_size = min(want, self.page_size)
        listings: dict[str, Listing] = {}
        seen: set[str] = set()  # every itemId met, usable or not
        offset = 0
        for _ in range(MAX_PAGES):
            if len(listings) >= want or offset + page_size > _MAX_RESULTS:
                break
            page_params = {**params, "limit": str(page_size), "offset": str(offset)}
            data = self._call(method, path, page_params, config, what=what, body=body)
            items, total, more = _parse_page(data, what, self.items_field, self.name)
            before = len(seen)
            for item in items:
                item_id = item.get("itemId") if isinstance(item, dict) else None
                if isinstance(item_id, str):
                    seen.add(item_id)
                listing = self._listing(item)
                if listing is not None:
                    listings.setdefault(listing.listing_id, listing)
            offset += page_size
            if len(seen) == before:
                if more:
                    logger.debug("eBay %s sent a page with nothing new and a next link; "
                                 "stopping at offset %d", what, offset - page_size)
                break
            if not more or (total is not None and offset >= total):
                break
        return list(listings.values())[:want]

    def _listing(self, item: Any) -> Listing | None:
        return _listing(item, self.name)


def _check_options(
    client_id: str | None, client_secret: str | None, marketplace_id: str | None,
    buying_options: Sequence[str], sort: str | None, max_comps: int, page_size: int,
    retries_and_delays: Sequence[float],
) -> None:
    """Refuse, at construction, the settings eBay would refuse on every search."""
    if (client_id is None) != (client_secret is None):
        raise ConfigurationError("pass both client_id and client_secret, or neither")
    if marketplace_id is not None:
        _check_marketplace_id(marketplace_id)
    unknown = sorted(set(buying_options) - _BUYING_OPTIONS)
    if unknown:
        raise ConfigurationError(
            f"unknown eBay buying options {unknown}; use {sorted(_BUYING_OPTIONS)}"
        )
    if sort is not None and sort not in _SORTS:
        raise ConfigurationError(f"unknown eBay sort {sort!r}; use one of {sorted(_SORTS)}")
    if max_comps < 1 or not 1 <= page_size <= _MAX_PAGE:
        raise ConfigurationError(f"max_comps must be positive and page_size 1 to {_MAX_PAGE}")
    if any(value < 0 for value in retries_and_delays):
        raise ConfigurationError("retries and delays cannot be negative")


def _plain(amount: Decimal) -> str:
    return format(amount.normalize(), "f")


def _shorten(text: str) -> str:
    """The words of ``text`` that fit eBay's 100-character ``q``, cut between words."""
    words: list[str] = []
    for word in text.split():
        if len(" ".join([*words, word])) > _MAX_QUERY_CHARS:
            break
        words.append(word)
    return " ".join(words)


def _listing(item: Any, marketplace: str) -> Listing | None:
    """One ``itemSummaries`` entry as a Listing; None (and a log line) when unusable."""
    fields = _item_fields(item, marketplace, "item")
    if fields is None:
        return None
    price = _amount(item.get("price"))
    if fields["auction"]:
        # Only a pure auction is priced by its current bid; with "Buy It Now" the
        # fixed price is the real asking price.
        price = _amount(item.get("currentBidPrice")) or price
    # sold: the Browse API lists only items still for sale.
    return Listing(**fields, price=price, shipping=_shipping(item, price), sold=False)

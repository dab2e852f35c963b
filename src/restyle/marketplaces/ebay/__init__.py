"""The ``ebay`` marketplace: eBay's Browse API, searched by words and, where the
application is allowed to, by image; and ``ebay-sold``: what sold on eBay in the
last 90 days, from the Marketplace Insights API. Set-up is described in
docs/marketplaces.md."""

from __future__ import annotations

import base64
import email.utils
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import requests

from restyle import _settings
from restyle._errors import (
    ConfigurationError,
    MarketplaceAuthError,
    MarketplaceError,
    MarketplaceRateLimitError,
    MarketplaceResponseError,
    MarketplaceUnavailableError,
)
from restyle._plugin.components import Marketplace
from restyle._plugin.hookspecs import hookimpl
from restyle._plugin.remote import RemoteComponent
from restyle._secrets import Secret, basic_credentials, redact
from restyle._types import Condition, Listing, Money, Query

if TYPE_CHECKING:
    from restyle._input.imaging import Photo

__all__ = [
    "CONDITION_IDS",
    "ENV_BASE_URL",
    "ENV_CLIENT_ID",
    "ENV_CLIENT_SECRET",
    "ENV_IMAGE_SEARCH",
    "ENV_MARKETPLACE_ID",
    "INSIGHTS_SCOPE",
    "MARKETPLACE_CURRENCIES",
    "PRODUCTION_URL",
    "SANDBOX_URL",
    "SCOPE",
    "EbayMarketplace",
    "EbaySoldMarketplace",
    "ImageSearchStatus",
]

logger = logging.getLogger("restyle.marketplaces.ebay")

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

_BUYING_OPTIONS = frozenset({"FIXED_PRICE", "AUCTION", "BEST_OFFER", "CLASSIFIED_AD"})
_SORTS = frozenset({"price", "-price", "newlyListed", "endingSoonest", "distance"})
_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_MAX_PAGE = 200
#: The Browse API serves at most this many results of one search (offset + limit).
_MAX_RESULTS = 10_000
#: One search reads at most this many pages, whatever ``next`` links eBay sends;
#: it also stops at the first page that brings no item it has not seen.
MAX_PAGES = 20
_MAX_QUERY_CHARS = 100
#: A token is renewed this long before eBay says it expires (capped at a tenth of its life).
_TOKEN_MARGIN = 120.0


class ImageSearchStatus:
    """Where search by image stands for this application."""

    DISABLED = "disabled"
    ENABLED = "enabled"
    NOT_ENABLED_FOR_APPLICATION = "not_enabled_for_application"


class _Credentials:
    """The application's keys, and the Basic authorization made of them."""

    __slots__ = ("basic", "client_id", "client_secret")

    def __init__(self, client_id: str, client_secret: str) -> None:
        self.client_id = Secret(client_id)
        self.client_secret = Secret(client_secret)
        self.basic = basic_credentials(client_id, client_secret)

    def __repr__(self) -> str:
        return "<eBay credentials>"


@dataclass(frozen=True, slots=True)
class _Token:
    value: Secret
    expires_at: float

    def __repr__(self) -> str:
        return f"<eBay token expiring at {self.expires_at:.0f}>"


class _Sessions:
    """One requests session per thread (requests does not promise a shared one is
    thread safe), all closed together."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._open: list[requests.Session] = []
        self._lock = threading.Lock()

    def get(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            with self._lock:
                self._open.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            sessions, self._open = self._open, []
            self._local = threading.local()
        for session in sessions:
            session.close()


@dataclass(frozen=True, slots=True)
class _Config:
    marketplace_id: str
    currency: str
    base_url: str
    image_search: bool


class EbayMarketplace(RemoteComponent, Marketplace):
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
        if max_retries < 0 or backoff < 0 or max_backoff < 0 or max_retry_after < 0:
            raise ConfigurationError("retries and delays cannot be negative")
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
        self._token: _Token | None = None
        self._token_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._image_refused = False
        self._scope_refused = False
        self._last_image_search: tuple[object, list[Listing]] | None = None

    # -- configuration ---------------------------------------------------------

    def _config(self) -> _Config:
        """Explicit arguments first, then the environment, read when first needed."""
        marketplace_id = self._marketplace_id or _settings.env_str(ENV_MARKETPLACE_ID) or "EBAY_US"
        _check_marketplace_id(marketplace_id)
        base_url = (self._base_url or _settings.env_str(ENV_BASE_URL) or PRODUCTION_URL).rstrip("/")
        if not base_url.startswith(("https://", "http://")):
            raise ConfigurationError(
                f"the eBay base URL must start with https://, got {base_url!r}"
            )
        image_search = (
            self._image_search if self._image_search is not None
            else _settings.env_flag(ENV_IMAGE_SEARCH)
        )
        return _Config(
            marketplace_id=marketplace_id, currency=MARKETPLACE_CURRENCIES[marketplace_id],
            base_url=base_url, image_search=image_search,
        )

    def _resolve_credentials(self) -> _Credentials:
        if self._credentials is not None:
            return self._credentials
        client_id = _settings.env_str(ENV_CLIENT_ID)
        client_secret = _settings.env_str(ENV_CLIENT_SECRET)
        if not client_id or not client_secret:
            raise ConfigurationError(
                f"the ebay marketplace needs an eBay application's keys: set {ENV_CLIENT_ID} "
                f"and {ENV_CLIENT_SECRET} (see docs/marketplaces.md)"
            )
        # Kept once read, so that every later message can be scrubbed of them.
        self._credentials = _Credentials(client_id, client_secret)
        return self._credentials

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

    # -- HTTP ------------------------------------------------------------------

    def _make_client(self) -> _Sessions:
        return _Sessions()

    def _session(self) -> requests.Session:
        sessions: _Sessions = self.client()
        return sessions.get()

    def close(self) -> None:
        """Close the connections kept open to eBay; a later search opens new ones."""
        with self._client_lock:
            sessions: _Sessions | None = self._client
        if sessions is not None:
            sessions.close()

    def _call(
        self, method: str, path: str, params: Mapping[str, str], config: _Config, *,
        what: str, body: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """One authorised call: a rejected token is renewed once, then the call repeated."""
        token = self._access_token(config)
        for renewed in (False, True):
            headers = {
                "Authorization": f"Bearer {token}",
                "X-EBAY-C-MARKETPLACE-ID": config.marketplace_id,
                "Accept": "application/json",
            }
            response = self._send(
                method, config.base_url + path, what=what, headers=headers,
                params=params, json=body,
            )
            if response.status_code == 401 and not renewed:
                logger.info("eBay rejected the access token; fetching a new one")
                token = self._access_token(config, rejected=token)
                continue
            break
        if not response.ok:
            raise self._http_error(response, what)
        return self._json_object(response, what)

    def _send(self, method: str, url: str, *, what: str, **kwargs: Any) -> requests.Response:
        """Send with bounded retries on 429, 5xx and lost connections."""
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self._session().request(
                    method, url, timeout=self.request_timeout, **kwargs
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                if last:
                    self._fail(
                        f"eBay {what}: no answer after {attempts} tries ({type(exc).__name__})",
                        exc, error_type=MarketplaceUnavailableError, marketplace=self.name,
                    )
                self._wait(self._backoff(attempt), what, type(exc).__name__)
                continue
            except requests.RequestException as exc:
                self._fail(
                    f"eBay {what} could not be sent: {type(exc).__name__}", exc,
                    error_type=MarketplaceError, marketplace=self.name,
                )
            if response.status_code not in _RETRY_STATUSES or last:
                return response
            retry_after = _retry_after(response)
            if retry_after is not None and retry_after > self.max_retry_after:
                # Waiting minutes would hang an interactive caller: report it instead.
                return response
            delay = retry_after if retry_after is not None else self._backoff(attempt)
            self._wait(delay, what, f"HTTP {response.status_code}")
            response.close()
        raise AssertionError("unreachable")  # pragma: no cover

    def _backoff(self, attempt: int) -> float:
        return float(min(self.max_backoff, self.backoff * (2**attempt)))

    def _wait(self, delay: float, what: str, why: str) -> None:
        logger.info("eBay %s: %s, retrying in %.1f s", what, why, delay)
        self._sleep(delay)

    def _access_token(self, config: _Config, *, rejected: str | None = None) -> str:
        """A cached application token for this marketplace's :attr:`scope`; a new
        one when it nears expiry or was rejected.

        The lock makes concurrent searches share one token request; a thread whose
        token was rejected after another thread already renewed it reuses the new one.
        """
        with self._token_lock:
            token = self._token
            if token is not None and self._clock() < token.expires_at \
                    and token.value.reveal() != rejected:
                return token.value.reveal()
            self._token = None
            self._token = token = self._fetch_token(config)
            return token.value.reveal()

    def _fetch_token(self, config: _Config) -> _Token:
        credentials = self._resolve_credentials()
        response = self._send(
            "POST", config.base_url + TOKEN_PATH, what="token request",
            data={"grant_type": "client_credentials", "scope": self.scope},
            headers={"Authorization": f"Basic {credentials.basic.reveal()}",
                     "Accept": "application/json"},
        )
        if response.status_code in (400, 403) and _oauth_error(response) == "invalid_scope":
            self._scope_refused = True
            self._fail(
                f"eBay refused a token for the {self.api} (HTTP {response.status_code}: "
                f"invalid_scope): its scope {self.scope} is not granted to this application",
                error_type=MarketplaceAuthError, marketplace=self.name,
                status=response.status_code,
            )
        if response.status_code in (400, 401, 403):
            detail = _oauth_detail(response)
            self._fail(
                f"eBay refused the application's keys (HTTP {response.status_code}"
                f"{': ' + detail if detail else ''}); check {ENV_CLIENT_ID} and "
                f"{ENV_CLIENT_SECRET}",
                error_type=MarketplaceAuthError, marketplace=self.name,
                status=response.status_code,
            )
        if not response.ok:
            raise self._http_error(response, "token request")
        data = self._json_object(response, "token request")
        value = data.get("access_token")
        expires_in = data.get("expires_in", 7200)
        if not isinstance(value, str) or not value:
            self._fail(
                "eBay token answer has no access_token", error_type=MarketplaceResponseError,
                marketplace=self.name, status=response.status_code,
            )
        token = Secret(value)  # registered before anything can log or echo it
        if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)) \
                or expires_in <= 0:
            self._fail(
                "eBay token answer has no usable expires_in",
                error_type=MarketplaceResponseError, marketplace=self.name,
                status=response.status_code,
            )
        margin = min(_TOKEN_MARGIN, expires_in / 10)
        return _Token(value=token, expires_at=self._clock() + expires_in - margin)

    def _http_error(self, response: requests.Response, what: str) -> MarketplaceError:
        """eBay's ``{"errors": [...]}`` envelope (or whatever came instead) as a typed error."""
        status = response.status_code
        ids, messages = _error_envelope(response)
        detail = "; ".join(messages) or (response.reason or "no details")
        if ids:
            detail += " (errorId " + ", ".join(str(i) for i in ids) + ")"
        message = f"eBay {what} failed with HTTP {status}: {detail}"
        kwargs: dict[str, Any] = {"marketplace": self.name, "status": status, "error_ids": ids}
        error_type: type[MarketplaceError] = MarketplaceResponseError
        if status in (401, 403):
            error_type = MarketplaceAuthError
        elif status == 429:
            error_type = MarketplaceRateLimitError
            kwargs["retry_after"] = _retry_after(response)
        elif status >= 500:
            error_type = MarketplaceUnavailableError
        error: MarketplaceError = self._error(message, error_type=error_type, **kwargs)
        return error

    def _json_object(self, response: requests.Response, what: str) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError as exc:
            self._fail(
                f"eBay {what} answered HTTP {response.status_code} with something that is "
                "not JSON", exc, error_type=MarketplaceResponseError, marketplace=self.name,
                status=response.status_code,
            )
        if not isinstance(data, dict):
            self._fail(
                f"eBay {what} answered with JSON that is not an object",
                error_type=MarketplaceResponseError, marketplace=self.name,
                status=response.status_code,
            )
        return data


# -- helpers -------------------------------------------------------------------


def _check_marketplace_id(marketplace_id: str) -> None:
    if marketplace_id not in MARKETPLACE_CURRENCIES:
        raise ConfigurationError(
            f"unknown eBay marketplace id {marketplace_id!r}; use one of "
            f"{', '.join(sorted(MARKETPLACE_CURRENCIES))}"
        )


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


def _retry_after(response: requests.Response) -> float | None:
    """Seconds from ``Retry-After`` (a number or an HTTP date), or None without one."""
    raw = response.headers.get("Retry-After")
    if not raw:
        return None
    raw = raw.strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_envelope(response: requests.Response) -> tuple[tuple[int, ...], list[str]]:
    try:
        data = response.json()
    except ValueError:
        return (), []
    errors = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(errors, list):
        return (), []
    ids: list[int] = []
    messages: list[str] = []
    for error in errors:
        if not isinstance(error, dict):
            continue
        error_id = error.get("errorId")
        if isinstance(error_id, int) and not isinstance(error_id, bool):
            ids.append(error_id)
        message = error.get("longMessage") or error.get("message")
        if isinstance(message, str) and message.strip():
            # Redacted before it is cut, so that no part of a secret survives the cut.
            messages.append(redact(message.strip())[:300])
    return tuple(ids), messages


def _oauth_error(response: requests.Response) -> str | None:
    """The ``error`` code of an OAuth error answer, if it is one."""
    try:
        data = response.json()
    except ValueError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, str) else None


def _oauth_detail(response: requests.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return ""
    if not isinstance(data, dict):
        return ""
    parts = [data.get("error"), data.get("error_description")]
    return ": ".join(redact(p.strip())[:200] for p in parts if isinstance(p, str) and p.strip())


def _parse_page(
    data: Mapping[str, Any], what: str, field: str, marketplace: str
) -> tuple[list[Any], int | None, bool]:
    """The items of one page (under ``field``), eBay's ``total`` and whether a
    next page exists."""
    items = data.get(field, [])
    if not isinstance(items, list):
        raise MarketplaceResponseError(
            f"eBay {what} answer has {field} that is not a list", marketplace=marketplace
        )
    total = data.get("total")
    if isinstance(total, bool) or not isinstance(total, int):
        total = None
    return items, total, bool(data.get("next"))


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _amount(value: Any) -> Money | None:
    """eBay's ``{"value": "12.99", "currency": "USD"}`` as Money, or None if unusable."""
    if not isinstance(value, dict):
        return None
    raw, currency = value.get("value"), value.get("currency")
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        return None
    if not isinstance(currency, str):
        return None
    try:
        return Money(amount=Decimal(str(raw).strip()), currency=currency)
    except (InvalidOperation, ValueError):
        return None


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _condition(item: Mapping[str, Any]) -> Condition:
    condition_id = _integer(item.get("conditionId"))
    if condition_id is not None and condition_id in CONDITION_IDS:
        return CONDITION_IDS[condition_id]
    return Condition.parse(_text(item.get("condition")))


def _image_url(item: Mapping[str, Any]) -> str | None:
    candidates = [item.get("image")]
    thumbs = item.get("thumbnailImages")
    if isinstance(thumbs, list):
        candidates.extend(thumbs)
    for candidate in candidates:
        if isinstance(candidate, dict):
            url = _text(candidate.get("imageUrl"))
            if url and url.startswith(("https://", "http://")):
                return url
    return None


def _shipping(item: Mapping[str, Any], price: Money | None) -> Money | None:
    """The cheapest stated shipping cost, in the price's currency; None when not stated."""
    options = item.get("shippingOptions")
    if not isinstance(options, list):
        return None
    costs = [_amount(o.get("shippingCost")) for o in options if isinstance(o, dict)]
    usable = [c for c in costs if c is not None and (price is None or c.currency == price.currency)]
    return min(usable, key=lambda m: m.amount) if usable else None


def _feedback_percent(value: Any) -> float | None:
    try:
        number = float(value) if isinstance(value, (str, int, float)) else None
    except ValueError:
        return None
    if isinstance(value, bool) or number is None or not 0.0 <= number <= 100.0:
        return None
    return number


def _listing(item: Any, marketplace: str) -> Listing | None:
    """One ``itemSummaries`` entry as a Listing; None (and a log line) when unusable."""
    if not isinstance(item, dict):
        logger.debug("skipping an eBay item that is not an object")
        return None
    item_id, title = _text(item.get("itemId")), _text(item.get("title"))
    if item_id is None or title is None:
        logger.debug("skipping an eBay item without itemId or title")
        return None
    options = item.get("buyingOptions")
    options = [o for o in options if isinstance(o, str)] if isinstance(options, list) else []
    # Only a pure auction is priced by its current bid; with "Buy It Now" the
    # fixed price is the real asking price.
    auction = "AUCTION" in options and "FIXED_PRICE" not in options
    price = _amount(item.get("price"))
    if auction:
        price = _amount(item.get("currentBidPrice")) or price
    seller: dict[str, Any] = item["seller"] if isinstance(item.get("seller"), dict) else {}
    return Listing(
        marketplace=marketplace,
        listing_id=item_id,
        title=title,
        price=price,
        url=_text(item.get("itemWebUrl")),
        image_url=_image_url(item),
        condition=_condition(item),
        shipping=_shipping(item, price),
        sold=False,  # the Browse API lists only items still for sale
        seller=_text(seller.get("username")),
        seller_feedback_percent=_feedback_percent(seller.get("feedbackPercentage")),
        seller_feedback_score=_integer(seller.get("feedbackScore")),
        auction=auction,
        bid_count=_integer(item.get("bidCount")) if auction else None,
    )


def _sold_listing(item: Any, marketplace: str) -> Listing | None:
    """One ``itemSales`` entry as a sold Listing; None (and a log line) when unusable."""
    if not isinstance(item, dict):
        logger.debug("skipping an eBay sale that is not an object")
        return None
    item_id, title = _text(item.get("itemId")), _text(item.get("title"))
    if item_id is None or title is None:
        logger.debug("skipping an eBay sale without itemId or title")
        return None
    options = item.get("buyingOptions")
    options = [o for o in options if isinstance(o, str)] if isinstance(options, list) else []
    auction = "AUCTION" in options and "FIXED_PRICE" not in options
    seller: dict[str, Any] = item["seller"] if isinstance(item.get("seller"), dict) else {}
    return Listing(
        marketplace=marketplace,
        listing_id=item_id,
        title=title,
        price=_amount(item.get("lastSoldPrice")),
        url=_text(item.get("itemWebUrl")),
        image_url=_image_url(item),
        condition=_condition(item),
        sold=True,
        seller=_text(seller.get("username")),
        seller_feedback_percent=_feedback_percent(seller.get("feedbackPercentage")),
        seller_feedback_score=_integer(seller.get("feedbackScore")),
        auction=auction,
        bid_count=_integer(item.get("bidCount")) if auction else None,
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


@hookimpl
def register_marketplaces(register: Any) -> None:
    register(EbayMarketplace())
    register(EbaySoldMarketplace())

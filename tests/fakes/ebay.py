"""A fake eBay on 127.0.0.1: OAuth tokens per scope, the Browse API's
item_summary search and search_by_image, and the Marketplace Insights API's
item_sales search, with scripted failures in eBay's own error envelopes."""

from __future__ import annotations

import base64
import json
import threading
from collections import defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from requests.structures import CaseInsensitiveDict

from restyle.testing import FakeServer, Reply, Request

TOKEN_PATH = "/identity/v1/oauth2/token"
SEARCH_PATH = "/buy/browse/v1/item_summary/search"
IMAGE_PATH = "/buy/browse/v1/item_summary/search_by_image"
SALES_PATH = "/buy/marketplace_insights/v1_beta/item_sales/search"
SCOPE = "https://api.ebay.com/oauth/api_scope"
INSIGHTS_SCOPE = "https://api.ebay.com/oauth/api_scope/buy.marketplace.insights"


def ebay_error(error_id: int, message: str, *, domain: str = "API_BROWSE",
               category: str = "REQUEST") -> dict[str, Any]:
    """A body in eBay's error envelope."""
    return {"errors": [{"errorId": error_id, "domain": domain, "category": category,
                        "message": message}]}


RATE_LIMITED = ebay_error(2001, "Too many requests. The request limit has been reached for "
                                "the resource.", category="REQUEST")
SERVER_ERROR = ebay_error(10001, "There was a problem with an eBay internal system or process. "
                                 "Contact eBay developer support for assistance.",
                          category="APPLICATION")
INVALID_TOKEN = ebay_error(1001, "Invalid access token", domain="OAuth", category="REQUEST")
ACCESS_DENIED = ebay_error(1100, "Insufficient permissions to fulfill the request.",
                           domain="ACCESS", category="REQUEST")


def item(
    n: int,
    *,
    price: str | None = "25.00",
    currency: str = "USD",
    condition_id: str | None = "3000",
    condition: str | None = "Pre-owned",
    image: bool = True,
    auction: bool = False,
    bid: str | None = None,
    bids: int | None = None,
    shipping: str | None = None,
    seller: bool = True,
) -> dict[str, Any]:
    """A realistic ``itemSummaries`` entry: strings for amounts, optional fields left out."""
    data: dict[str, Any] = {
        "itemId": f"v1|{110000000000 + n}|0",
        "title": f"Vintage leather jacket no. {n}",
        "leafCategoryIds": ["57988"],
        "categories": [{"categoryId": "57988", "categoryName": "Coats, Jackets & Vests"}],
        "itemHref": f"https://api.ebay.com/buy/browse/v1/item/v1%7C{110000000000 + n}%7C0",
        "itemWebUrl": f"https://www.ebay.com/itm/{110000000000 + n}",
        "buyingOptions": ["AUCTION"] if auction else ["FIXED_PRICE", "BEST_OFFER"],
        "itemLocation": {"postalCode": "950**", "country": "US"},
        "adultOnly": False,
    }
    if price is not None:
        data["price"] = {"value": price, "currency": currency}
    if condition_id is not None:
        data["conditionId"] = condition_id
    if condition is not None:
        data["condition"] = condition
    if image:
        data["image"] = {"imageUrl": f"https://i.ebayimg.com/images/g/{n}/s-l225.jpg"}
    if auction:
        if bid is not None:
            data["currentBidPrice"] = {"value": bid, "currency": currency}
        if bids is not None:
            data["bidCount"] = bids
        data["itemEndDate"] = "2026-12-01T18:00:00.000Z"
    if shipping is not None:
        data["shippingOptions"] = [{"shippingCostType": "FIXED",
                                    "shippingCost": {"value": shipping, "currency": currency}}]
    if seller:
        data["seller"] = {"username": f"seller{n}", "feedbackPercentage": "99.6",
                          "feedbackScore": 1500 + n}
    return data


def sale(
    n: int,
    *,
    price: str | None = "30.00",
    currency: str = "USD",
    sold: str | None = "2025-05-20T17:43:21.000Z",
    quantity: int | None = 1,
    condition_id: str | None = "3000",
    auction: bool = False,
    bids: int | None = None,
) -> dict[str, Any]:
    """A realistic ``itemSales`` entry of the Marketplace Insights API."""
    data: dict[str, Any] = {
        "itemId": f"v1|{120000000000 + n}|0",
        "title": f"Vintage leather jacket, sold no. {n}",
        "itemHref": f"https://api.ebay.com/buy/browse/v1/item/v1%7C{120000000000 + n}%7C0",
        "itemWebUrl": f"https://www.ebay.com/itm/{120000000000 + n}",
        "image": {"imageUrl": f"https://i.ebayimg.com/images/g/s{n}/s-l225.jpg"},
        "buyingOptions": ["AUCTION"] if auction else ["FIXED_PRICE"],
        "categories": [{"categoryId": "57988", "categoryName": "Coats, Jackets & Vests"}],
        "itemLocation": {"postalCode": "950**", "country": "US"},
        "seller": {"username": f"seller{n}", "feedbackPercentage": "99.1",
                   "feedbackScore": 800 + n},
        "adultOnly": False,
    }
    if price is not None:
        data["lastSoldPrice"] = {"value": price, "currency": currency}
    if sold is not None:
        data["lastSoldDate"] = sold
    if quantity is not None:
        data["totalSoldQuantity"] = quantity
    if condition_id is not None:
        data["conditionId"] = condition_id
        data["condition"] = "Pre-owned"
    if auction and bids is not None:
        data["bidCount"] = bids
    return data


@dataclass
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, str]
    headers: Mapping[str, str]  # case-insensitive, as HTTP's are
    body: bytes


@dataclass
class Scripted:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


class FakeEbay:
    """The fake server. Use as a context manager; ``base_url`` points at it.

    ``script(path, status, body)`` queues an answer that is given, once, before
    the normal behaviour of that path.
    """

    def __init__(
        self,
        *,
        client_id: str,
        client_secret: str,
        items: list[dict[str, Any]] | None = None,
        token_lifetime: int = 7200,
        image_search_allowed: bool = True,
        token_prefix: str = "v^1.1#i^1#fake-token-",
        sales: list[dict[str, Any]] | None = None,
        insights_allowed: bool = True,
        scopes: tuple[str, ...] = (SCOPE, INSIGHTS_SCOPE),
    ) -> None:
        self.client_id = client_id
        self.client_secret = client_secret
        self.items = list(items or [])
        self.sales = list(sales or [])
        self.token_lifetime = token_lifetime
        self.image_search_allowed = image_search_allowed
        #: False: the Marketplace Insights API answers 403, as for an application
        #: eBay has not let in.
        self.insights_allowed = insights_allowed
        #: The scopes this application may ask a token for.
        self.scopes = scopes
        self.token_prefix = token_prefix
        self.requests: list[Recorded] = []
        self.valid_tokens: dict[str, str] = {}  # token -> its scope
        self.tokens_issued = 0
        self._scripts: dict[str, deque[Scripted]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._server = FakeServer(responder=self._respond)

    # -- control ---------------------------------------------------------------

    def __enter__(self) -> FakeEbay:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    @property
    def base_url(self) -> str:
        return self._server.base_url

    def script(self, path: str, status: int, body: Any,
               headers: dict[str, str] | None = None, *, times: int = 1,
               delay: float = 0.0) -> None:
        """Queue an answer for ``path``; ``delay`` seconds pass before it is sent."""
        with self._lock:
            for _ in range(times):
                self._scripts[path].append(Scripted(status, body, dict(headers or {}), delay))

    def revoke_tokens(self) -> None:
        """Make every token issued so far invalid, as if it had expired at eBay."""
        with self._lock:
            self.valid_tokens.clear()

    def calls(self, path: str) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    # -- serving ---------------------------------------------------------------

    def _record(self, request: Request) -> tuple[Recorded, Reply | None]:
        """The request, recorded, and the reply scripted for its path, if any."""
        parts = urlsplit(request.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        recorded = Recorded(request.method, parts.path, query,
                            CaseInsensitiveDict(request.headers), request.body)
        with self._lock:
            self.requests.append(recorded)
            scripted = self._scripts[parts.path].popleft() if self._scripts[parts.path] else None
        if scripted is None:
            return recorded, None
        return recorded, _reply(scripted.status, scripted.body, scripted.headers,
                                delay=scripted.delay)

    def _respond(self, request: Request) -> Reply:
        parts = urlsplit(request.path)
        recorded, scripted = self._record(request)
        if scripted is not None:
            return scripted
        method = request.method
        if parts.path == TOKEN_PATH and method == "POST":
            return self._token(recorded)
        if parts.path == SEARCH_PATH and method == "GET":
            return self._search(recorded)
        if parts.path == SALES_PATH and method == "GET":
            if not self.insights_allowed:
                return _reply(403, ACCESS_DENIED)
            return self._search(recorded, items=self.sales, field="itemSales",
                                scope=INSIGHTS_SCOPE)
        if parts.path == IMAGE_PATH and method == "POST":
            if not self.image_search_allowed:
                return _reply(403, ACCESS_DENIED)
            try:
                image = json.loads(request.body)["image"]
                base64.b64decode(image, validate=True)
            except (ValueError, KeyError, TypeError):
                return _reply(400, ebay_error(12500, "The image is not valid."))
            return self._search(recorded)
        return _reply(404, ebay_error(2002, "Resource not found"))

    def _token(self, recorded: Recorded) -> Reply:
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        form = {k: v[-1] for k, v in parse_qs(recorded.body.decode()).items()}
        if recorded.headers.get("Authorization") != f"Basic {expected}":
            return _reply(401, {"error": "invalid_client",
                                "error_description": "client authentication failed"})
        if form.get("grant_type") != "client_credentials" or not form.get("scope"):
            return _reply(400, {"error": "invalid_request",
                                "error_description": "request is missing a required "
                                                     "parameter or malformed."})
        scope = form["scope"]
        if scope not in self.scopes:
            return _reply(400, {"error": "invalid_scope",
                                "error_description": "The requested scope is invalid, "
                                "unknown, malformed, or exceeds the scope granted to the "
                                "client"})
        with self._lock:
            self.tokens_issued += 1
            token = f"{self.token_prefix}{self.tokens_issued}"
            self.valid_tokens[token] = scope
        return _reply(200, {"access_token": token, "expires_in": self.token_lifetime,
                            "token_type": "Application Access Token"})

    def _search(self, recorded: Recorded, *,
                items: list[dict[str, Any]] | None = None, field: str = "itemSummaries",
                scope: str = SCOPE) -> Reply:
        auth = recorded.headers.get("Authorization", "")
        with self._lock:
            token_scope = (self.valid_tokens.get(auth[len("Bearer "):])
                           if auth.startswith("Bearer ") else None)
        if token_scope is None:
            return _reply(401, INVALID_TOKEN)
        if token_scope != scope:  # a token of another API's scope
            return _reply(403, ACCESS_DENIED)
        items = self.items if items is None else items
        try:
            limit = int(recorded.query.get("limit", "50"))
            offset = int(recorded.query.get("offset", "0"))
        except ValueError:
            return _reply(400, ebay_error(12001, "The value of limit or offset is invalid."))
        if not 1 <= limit <= 200 or offset % limit:
            return _reply(400, ebay_error(12001, "The value of limit or offset is invalid."))
        page = items[offset:offset + limit]
        href = f"{self.base_url}{recorded.path}?limit={limit}&offset={offset}"
        answer: dict[str, Any] = {"href": href, "total": len(items), "limit": limit,
                                  "offset": offset}
        if offset + limit < len(items):
            answer["next"] = f"{self.base_url}{recorded.path}?limit={limit}&offset={offset + limit}"
        if page:  # eBay leaves the items out when nothing matched
            answer[field] = page
        return _reply(200, answer)


def _reply(status: int, body: Any, headers: dict[str, str] | None = None, *,
           delay: float = 0.0) -> Reply:
    """An answer as eBay gives it: JSON unless told otherwise."""
    headers = dict(headers or {})
    content_type = headers.pop("Content-Type", "application/json")
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Reply(status=status, body=payload, content_type=content_type, headers=headers,
                 delay=delay)

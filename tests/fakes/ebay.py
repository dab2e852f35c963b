"""A fake eBay on 127.0.0.1: OAuth tokens per scope, the Browse API's
item_summary search and search_by_image, and the Marketplace Insights API's
item_sales search, with scripted failures in eBay's own error envelopes."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

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
    headers: dict[str, str]
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
        self._connections: set[socket.socket] = set()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- control ---------------------------------------------------------------

    def __enter__(self) -> FakeEbay:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                fake._handle(self, "GET")

            def do_POST(self) -> None:
                fake._handle(self, "POST")

            def setup(self) -> None:
                super().setup()
                with fake._lock:
                    fake._connections.add(self.connection)

            def finish(self) -> None:
                with fake._lock:
                    fake._connections.discard(self.connection)
                super().finish()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # Handler threads are joined on close, so that no test leaves one behind.
        self._server.daemon_threads = False
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True, name="fake-ebay")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        with self._lock:
            open_connections = list(self._connections)
        for connection in open_connections:  # clients keep connections alive: end them
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        self._thread.join(timeout=5)
        assert not self._thread.is_alive(), "the fake eBay server did not stop"

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

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

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        recorded = Recorded(method, parts.path, query, dict(handler.headers.items()), body)
        with self._lock:
            self.requests.append(recorded)
            scripted = self._scripts[parts.path].popleft() if self._scripts[parts.path] else None
        if scripted is not None:
            if scripted.delay:
                time.sleep(scripted.delay)
            with contextlib.suppress(OSError):  # the client may have given up waiting
                self._send(handler, scripted.status, scripted.body, scripted.headers)
            return
        if parts.path == TOKEN_PATH and method == "POST":
            self._token(handler, recorded)
        elif parts.path == SEARCH_PATH and method == "GET":
            self._search(handler, recorded)
        elif parts.path == SALES_PATH and method == "GET":
            if not self.insights_allowed:
                self._send(handler, 403, ACCESS_DENIED)
                return
            self._search(handler, recorded, items=self.sales, field="itemSales",
                         scope=INSIGHTS_SCOPE)
        elif parts.path == IMAGE_PATH and method == "POST":
            if not self.image_search_allowed:
                self._send(handler, 403, ACCESS_DENIED)
                return
            try:
                image = json.loads(body)["image"]
                base64.b64decode(image, validate=True)
            except (ValueError, KeyError, TypeError):
                self._send(handler, 400, ebay_error(12500, "The image is not valid."))
                return
            self._search(handler, recorded)
        else:
            self._send(handler, 404, ebay_error(2002, "Resource not found"))

    def _token(self, handler: BaseHTTPRequestHandler, recorded: Recorded) -> None:
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        form = {k: v[-1] for k, v in parse_qs(recorded.body.decode()).items()}
        if recorded.headers.get("Authorization") != f"Basic {expected}":
            self._send(handler, 401, {"error": "invalid_client",
                                      "error_description": "client authentication failed"})
            return
        if form.get("grant_type") != "client_credentials" or not form.get("scope"):
            self._send(handler, 400, {"error": "invalid_request",
                                      "error_description": "request is missing a required "
                                                           "parameter or malformed."})
            return
        scope = form["scope"]
        if scope not in self.scopes:
            self._send(handler, 400, {"error": "invalid_scope",
                                      "error_description": "The requested scope is invalid, "
                                      "unknown, malformed, or exceeds the scope granted to the "
                                      "client"})
            return
        with self._lock:
            self.tokens_issued += 1
            token = f"{self.token_prefix}{self.tokens_issued}"
            self.valid_tokens[token] = scope
        self._send(handler, 200, {"access_token": token, "expires_in": self.token_lifetime,
                                  "token_type": "Application Access Token"})

    def _search(self, handler: BaseHTTPRequestHandler, recorded: Recorded, *,
                items: list[dict[str, Any]] | None = None, field: str = "itemSummaries",
                scope: str = SCOPE) -> None:
        auth = recorded.headers.get("Authorization", "")
        with self._lock:
            token_scope = (self.valid_tokens.get(auth[len("Bearer "):])
                           if auth.startswith("Bearer ") else None)
        if token_scope is None:
            self._send(handler, 401, INVALID_TOKEN)
            return
        if token_scope != scope:  # a token of another API's scope
            self._send(handler, 403, ACCESS_DENIED)
            return
        items = self.items if items is None else items
        try:
            limit = int(recorded.query.get("limit", "50"))
            offset = int(recorded.query.get("offset", "0"))
        except ValueError:
            self._send(handler, 400, ebay_error(12001, "The value of limit or offset is invalid."))
            return
        if not 1 <= limit <= 200 or offset % limit:
            self._send(handler, 400, ebay_error(12001, "The value of limit or offset is invalid."))
            return
        page = items[offset:offset + limit]
        href = f"{self.base_url}{recorded.path}?limit={limit}&offset={offset}"
        answer: dict[str, Any] = {"href": href, "total": len(items), "limit": limit,
                                  "offset": offset}
        if offset + limit < len(items):
            answer["next"] = f"{self.base_url}{recorded.path}?limit={limit}&offset={offset + limit}"
        if page:  # eBay leaves the items out when nothing matched
            answer[field] = page
        self._send(handler, 200, answer)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: Any,
              headers: dict[str, str] | None = None) -> None:
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", (headers or {}).get("Content-Type",
                                                                 "application/json"))
        handler.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            if name != "Content-Type":
                handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)

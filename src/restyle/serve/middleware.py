"""The service's ASGI layers around the routes: the gate (token, admission)
and the access log (the upload limit is :mod:`restyle.serve.uploads`).

:class:`AccessLog` writes one JSON line per request to the
``restyle.serve.access`` logger: its id, method, path (never the query
string), status, milliseconds, bytes in and out and the client's address.
Never a header (the token travels in one), a form field or a photo.
"""

from __future__ import annotations

import hmac
import itertools
import json
import logging
import os
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from restyle.serve.admission import Admission, Refused
from restyle.serve.uploads import send_error

__all__ = ["OPEN_PATHS", "AccessLog", "Gate"]

#: Routes anyone may ask: the page, and whether the service is up and ready.
OPEN_PATHS = frozenset({"/v1/health", "/v1/ready"})

access_logger = logging.getLogger("restyle.serve.access")


class Gate:
    """Before a request's body is read: its bearer token (every ``/v1/`` route
    but :data:`OPEN_PATHS`, when the service has a token), then for a POST
    whether the service takes it now (warm, not shutting down, room in the
    queue). Refusals carry Retry-After, or WWW-Authenticate for a token."""

    def __init__(self, app: ASGIApp, *, token: str | None, admission: Admission,
                 retry_after: int) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode() if token else None
        self.admission = admission
        self.retry_after = str(retry_after)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/v1/") or path in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if self.expected is not None:
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                await send_error(send, "unauthorized", {"WWW-Authenticate": "Bearer"})
                return
        if scope["method"] == "POST":
            # The request's deadline counts from here, its upload's reading included.
            scope.setdefault("state", {})["arrived"] = time.monotonic()
            try:
                self.admission.admit()
            except Refused as exc:
                await send_error(send, exc.code, {"Retry-After": self.retry_after})
                return
        await self.app(scope, receive, send)


class AccessLog:
    """One structured line per request, as it ends."""

    _ids = itertools.count(1)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.prefix = f"{os.getpid():x}-"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.monotonic()
        seen = {"status": 500, "bytes_in": 0, "bytes_out": 0}

        async def counted_receive() -> Message:
            message = await receive()
            seen["bytes_in"] += len(message.get("body", b""))
            return message

        async def counted_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            elif message["type"] == "http.response.body":
                seen["bytes_out"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, counted_receive, counted_send)
        finally:
            client = scope.get("client")
            access_logger.info(json.dumps({
                "event": "request", "id": f"{self.prefix}{next(self._ids)}",
                "method": scope["method"], "path": scope["path"][:200],
                "status": seen["status"], "ms": round((time.monotonic() - start) * 1000, 1),
                "bytes_in": seen["bytes_in"], "bytes_out": seen["bytes_out"],
                "client": client[0] if client else None,
            }, separators=(",", ":")))

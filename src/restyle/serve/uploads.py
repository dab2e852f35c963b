"""Uploads refused on their Content-Length and bounded while read, for any
ASGI app (``restyle serve`` and the FastAPI example).

:class:`UploadLimit` refuses a request body over the item's limit at once
from its Content-Length, before a byte of it is read, and otherwise (a chunked
upload) as soon as the bytes received pass it, reading no further.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from restyle.serve.schema import FORM_BYTES, ITEM_PHOTOS_BYTES, error_body

__all__ = ["BodyTooLarge", "UploadLimit", "send_error"]


class BodyTooLarge(HTTPException):
    """A request body passed the limit while it was read (FastAPI passes an
    HTTPException raised while it reads the form on to its handler)."""

    def __init__(self) -> None:
        super().__init__(status_code=413, detail="too_large")


async def send_error(send: Send, code: str, headers: dict[str, str] | None = None) -> None:
    """Answer the error ``code`` (one of the schema's ERRORS) and close the connection."""
    status, body = error_body(code)
    data = json.dumps(body).encode()
    extra = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close"),
                            (b"content-length", str(len(data)).encode()), *extra]})
    await send({"type": "http.response.body", "body": data})


class UploadLimit:
    """Bodies over ``limit`` bytes refused with 413 (``too_large``); ``limit``
    may be a function, asked at each request (an app whose limit is a setting)."""

    def __init__(self, app: ASGIApp,
                 limit: int | Callable[[], int] = ITEM_PHOTOS_BYTES + FORM_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit() if callable(self.limit) else self.limit
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await send_error(send, "too_large")
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge
            return message

        await self.app(scope, limited, send)

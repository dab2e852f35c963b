"""The page at ``/``: plain HTML, CSS and JavaScript shipped in the package
(``restyle/serve/static/``), no build step, no CDN.

Served with a Content-Security-Policy that lets the page run only its own
script and style and load images only from http(s), data the server made or
the photos the phone picked (``blob:``), so that nothing from a listing or an
upload can run even if it were ever put into the page as HTML (app.js puts
it in as text only).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources

from fastapi import FastAPI
from fastapi.responses import Response

__all__ = ["PAGE_FILES", "add_page"]

#: The page's files: URL path -> (file in static/, media type).
PAGE_FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}

POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; "
          "img-src 'self' data: blob: https: http:; connect-src 'self'; "
          "form-action 'none'; base-uri 'none'; frame-ancestors 'none'")


def add_page(app: FastAPI) -> None:
    """Routes for the page's files, read once from the package."""
    static = resources.files("restyle.serve") / "static"
    for path, (name, media_type) in PAGE_FILES.items():
        body = (static / name).read_bytes()
        app.add_api_route(path, _file_route(body, media_type), methods=["GET"],
                          include_in_schema=False)


def _file_route(body: bytes, media_type: str) -> Callable[[], Awaitable[Response]]:
    async def page_file() -> Response:
        return Response(body, media_type=media_type, headers={
            "Content-Security-Policy": POLICY, "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"})
    return page_file

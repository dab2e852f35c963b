"""``restyle serve``: one warm Engine behind an HTTP API and a page a reseller
uses from a phone (docs/serving.md).

- :mod:`restyle.serve.schema`: the public response schema, version 1 (needs
  pydantic only; the web examples use it too).
- :mod:`restyle.serve.batching`: :class:`BatchingEncoder`, the encoder's
  calls of concurrent requests gathered into one model batch.
- :mod:`restyle.serve.uploads`: uploads refused on their Content-Length and
  bounded while read, for any ASGI app.
- :mod:`restyle.serve.app`: :func:`create_app`, the FastAPI app; its parts:
  ``settings``, ``admission`` (the bounded queue and the deadlines),
  ``middleware`` (the token and admission gate, the access log), ``page``.
- :mod:`restyle.serve.server`: :func:`run` on uvicorn, with a graceful shutdown.
- :mod:`restyle.serve.ray`: the same app as a Ray Serve application.

The outermost floor, beside the command line. Installed with
``pip install 'restyle[serve]'`` (``restyle[ray]`` for Ray Serve).
"""

from __future__ import annotations

from typing import Any

from restyle.serve.batching import BatchingEncoder
from restyle.serve.settings import ServeSettings

__all__ = ["BatchingEncoder", "ServeSettings", "create_app", "run"]


def __getattr__(name: str) -> Any:
    # FastAPI and uvicorn load only when the app is asked for: the schema and
    # the batching encoder need neither.
    if name == "create_app":
        from restyle.serve.app import create_app

        return create_app
    if name == "run":
        from restyle.serve.server import run

        return run
    raise AttributeError(name)

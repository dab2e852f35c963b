"""The local image files restyle itself served: the only ones a notebook may show.

A listing's ``file://`` image URL can come from anywhere (a plugin, a JSON
file); displaying it would read that file. Only the URLs the local catalog
handed out in this process are vouched for: the catalog checked those files
were images when it was built. The record is bounded, oldest forgotten first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable

__all__ = ["is_vouched", "vouch"]

_LIMIT = 20_000
_urls: OrderedDict[str, None] = OrderedDict()
_lock = threading.Lock()


def vouch(urls: Iterable[str | None]) -> None:
    """Remember ``urls`` (``file://`` ones; others are ignored) as served by restyle."""
    with _lock:
        for url in urls:
            if url and url.startswith("file:"):
                _urls[url] = None
                _urls.move_to_end(url)
        while len(_urls) > _LIMIT:
            _urls.popitem(last=False)


def is_vouched(url: str) -> bool:
    """Whether ``url``, exactly as written, is one restyle's catalog served."""
    with _lock:
        return url in _urls

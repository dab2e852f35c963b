"""Downloading comp images: concurrent, bounded in time and size, http(s) only."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

from restyle._errors import FetchError
from restyle._imaging import sniff_format

__all__ = ["Fetcher"]

logger = logging.getLogger("restyle.fetching")

USER_AGENT = "restyle (+https://pypi.org/project/restyle/)"


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchLimits:
    timeout: float = 10.0
    max_bytes: int = 10 * 1024 * 1024
    max_redirects: int = 3
    workers: int = 8


class Fetcher:
    """Downloads images concurrently within :class:`FetchLimits`."""

    def __init__(self, limits: FetchLimits | None = None) -> None:
        self.limits = limits or FetchLimits()

    def fetch(self, url: str) -> bytes:
        """The bytes of the image at ``url``, or :class:`FetchError`."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchError(f"refusing to fetch {_redact(url)}: only http(s) URLs are allowed")
        deadline = time.monotonic() + self.limits.timeout
        session = requests.Session()
        session.trust_env = False
        session.max_redirects = self.limits.max_redirects
        try:
            with session.get(
                url,
                stream=True,
                timeout=(min(5.0, self.limits.timeout), self.limits.timeout),
                headers={"User-Agent": USER_AGENT, "Accept": "image/*"},
            ) as response:
                if response.status_code != 200:
                    raise FetchError(f"{_redact(url)} answered HTTP {response.status_code}")
                kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if not kind.startswith("image/"):
                    raise FetchError(f"{_redact(url)} is not an image (Content-Type {kind!r})")
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_content(64 * 1024):
                    size += len(chunk)
                    if size > self.limits.max_bytes:
                        raise FetchError(
                            f"{_redact(url)} is larger than {self.limits.max_bytes} bytes"
                        )
                    if time.monotonic() > deadline:
                        raise FetchError(f"{_redact(url)} took longer than {self.limits.timeout} s")
                    chunks.append(chunk)
        except requests.TooManyRedirects as exc:
            raise FetchError(f"{_redact(url)} redirected too often") from exc
        except requests.Timeout as exc:
            raise FetchError(f"{_redact(url)} timed out") from exc
        except requests.RequestException as exc:
            raise FetchError(f"{_redact(url)} failed: {type(exc).__name__}") from exc
        finally:
            session.close()
        data = b"".join(chunks)
        if sniff_format(data) is None:
            raise FetchError(f"{_redact(url)} is not a JPEG, PNG or WebP image")
        return data

    def fetch_many(self, urls: Sequence[str]) -> dict[str, bytes | FetchError]:
        """Fetch every distinct URL concurrently; each maps to its bytes or its error."""
        unique = list(dict.fromkeys(urls))
        results: dict[str, bytes | FetchError] = {}
        if not unique:
            return results

        def one(url: str) -> bytes | FetchError:
            try:
                return self.fetch(url)
            except FetchError as exc:
                return exc

        with ThreadPoolExecutor(max_workers=min(self.limits.workers, len(unique))) as pool:
            for url, result in zip(unique, pool.map(one, unique), strict=True):
                results[url] = result
        return results


def _redact(url: str) -> str:
    """The URL without credentials or query string, either of which may carry secrets."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:
        return "<invalid URL>"
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"[:300]

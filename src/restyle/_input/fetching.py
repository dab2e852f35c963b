"""Downloading comp images safely: concurrent, bounded in time and size, guarded against SSRF.

A fetch ends by its deadline whatever the server does: the watchdog
(:mod:`restyle._input.watchdog`) shuts down the sockets of every fetch whose
deadline has passed, and host lookups run in daemon threads the caller stops
waiting for.

What a fetch may reach is the address guard's to say
(:mod:`restyle._input.guard`): no credentials in a URL, public addresses on
the default ports only, each host resolved once and its every address
checked. The connection is made to the checked address (the Host header and
TLS SNI/certificate check still use the name), so a DNS answer cannot change
between the check and the connection. Redirects are followed by hand and each
hop is checked again. urllib3 is used directly: it never reads proxy
environment variables, so none of them can route around the guard.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import urllib3

from restyle._errors import FetchError
from restyle._input.guard import (
    AddressGuard,
    IPAddress,
    IPNetwork,
    Resolver,
    Target,
    address_refusal,
    redact_url,
    system_resolver,
)
from restyle._input.limits import sniff_format
from restyle._input.watchdog import WATCHDOG, HTTPPool, HTTPSPool, Watch

__all__ = [
    "FetchLimits",
    "Fetcher",
    "IPAddress",
    "IPNetwork",
    "Resolver",
    "address_refusal",
    "system_resolver",
]

logger = logging.getLogger("restyle.fetching")

USER_AGENT = "restyle (+https://pypi.org/project/restyle/)"

_REDIRECTS = {301, 302, 303, 307, 308}
_CHUNK = 64 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class FetchLimits:
    """Bounds on downloads. ``timeout`` is the total time one image may take
    (connecting, redirects and the body together); ``batch_timeout`` bounds a
    whole :meth:`Fetcher.fetch_many` call."""

    timeout: float = 10.0
    connect_timeout: float = 5.0
    batch_timeout: float = 30.0
    max_bytes: int = 10 * 1024 * 1024
    max_redirects: int = 3
    workers: int = 16
    per_host: int = 6

    def __post_init__(self) -> None:
        for name in ("timeout", "connect_timeout", "batch_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.max_bytes < 1 or self.workers < 1 or self.per_host < 1:
            raise ValueError("max_bytes, workers and per_host must be at least 1")
        if self.max_redirects < 0:
            raise ValueError("max_redirects must not be negative")


def _fetcher_from_settings(limits: FetchLimits, allowed_hosts: tuple[str, ...] | None,
                           resolver: Resolver, trusted: tuple[IPNetwork, ...],
                           ca_certs: str | None) -> Fetcher:
    return Fetcher(limits, allowed_hosts=allowed_hosts, resolver=resolver,
                   trusted_networks=trusted, ca_certs=ca_certs)


class Fetcher:
    """Downloads images concurrently within :class:`FetchLimits`, refusing
    anything but public http(s) addresses on the default ports.

    ``allowed_hosts`` restricts fetching to those hosts and their subdomains
    (for deployments that know their image CDNs); the address checks still
    apply to them. ``resolver`` replaces DNS (tests give fake answers); like
    the system resolver, it runs in a helper thread that a fetch stops waiting
    for at its deadline.
    ``trusted_networks`` exempts those networks from the address and port
    checks: it exists for test servers on 127.0.0.1 and private image stores,
    is only ever set explicitly in code, and is empty by default.
    """

    def __init__(
        self,
        limits: FetchLimits | None = None,
        *,
        allowed_hosts: Iterable[str] | None = None,
        resolver: Resolver | None = None,
        trusted_networks: Iterable[IPNetwork | str] = (),
        ca_certs: str | None = None,
    ) -> None:
        self.limits = limits or FetchLimits()
        self.allowed_hosts = (
            None if allowed_hosts is None
            else tuple(h.strip().lower().strip(".") for h in allowed_hosts if h.strip())
        )
        self._guard = AddressGuard(
            self.allowed_hosts, resolver or system_resolver,
            tuple(ipaddress.ip_network(n) for n in trusted_networks),
        )
        self._ca_certs = ca_certs
        self._host_slots: dict[str, threading.BoundedSemaphore] = {}
        self._slots_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Fetcher workers={self.limits.workers} per_host={self.limits.per_host}>"

    def __reduce__(self) -> tuple[Any, ...]:
        # A copy in another process (a Ray worker) has the same limits and
        # guards, and its own connections and per-host slots.
        return (_fetcher_from_settings, (self.limits, self.allowed_hosts, self._guard.resolver,
                                         self._guard.trusted, self._ca_certs))

    # -- fetching ---------------------------------------------------------------

    def fetch(self, url: str, *, deadline: float | None = None) -> bytes:
        """The bytes of the image at ``url``, or :class:`FetchError`.

        ``deadline`` (a :func:`time.monotonic` value) can only shorten the
        per-image ``timeout``. The call returns by the deadline whatever the
        server does: redirects, connecting, the TLS handshake and every byte of
        the answer all count against it.
        """
        start = time.monotonic()
        own = start + self.limits.timeout
        deadline = own if deadline is None else min(own, deadline)
        watch = WATCHDOG.watch(deadline)
        try:
            return self._follow(url, deadline, watch)
        except FetchError as exc:
            if time.monotonic() >= deadline:
                budget = max(0.0, deadline - start)
                raise FetchError(f"{redact_url(url)} took longer than {budget:.3g} s") from exc
            raise
        finally:
            watch.close()

    def _follow(self, url: str, deadline: float, watch: Watch) -> bytes:
        current = url
        for hop in range(self.limits.max_redirects + 1):
            target = self._guard.target(current)
            slot = self._slot(target.host)
            if not slot.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise FetchError(f"{redact_url(url)} timed out waiting for a connection")
            try:
                location = self._fetch_once(target, current, url, deadline, watch)
            finally:
                slot.release()
            if isinstance(location, bytes):
                return location
            if hop == self.limits.max_redirects:
                break
            current = urljoin(current, location)
        raise FetchError(
            f"{redact_url(url)} redirected more than {self.limits.max_redirects} times"
        )

    def _slot(self, host: str) -> threading.BoundedSemaphore:
        with self._slots_lock:
            slot = self._host_slots.get(host)
            if slot is None:
                slot = self._host_slots[host] = threading.BoundedSemaphore(self.limits.per_host)
            return slot

    def _fetch_once(self, target: Target, current: str, original: str,
                    deadline: float, watch: Watch) -> bytes | str:
        """The body, or the Location of a redirect."""
        address = self._guard.address(target, current, deadline)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError(f"{redact_url(original)} ran out of time")
        # The read timeout is only a backstop: the watch ends the fetch at its deadline.
        timeout = urllib3.Timeout(connect=min(self.limits.connect_timeout, remaining),
                                  read=remaining)
        pool: urllib3.HTTPConnectionPool
        if target.scheme == "https":
            pool = HTTPSPool(
                address, target.port, timeout=timeout, maxsize=1, retries=False,
                server_hostname=target.host, assert_hostname=target.host,
                cert_reqs="CERT_REQUIRED", ca_certs=self._ca_certs or _default_ca_certs(),
                watch=watch,
            )
        else:
            pool = HTTPPool(address, target.port, timeout=timeout, maxsize=1, retries=False,
                             watch=watch)
        headers = {
            "Host": target.host_header,
            "User-Agent": USER_AGENT,
            "Accept": "image/*",
            "Accept-Encoding": "identity",
        }
        try:
            response = pool.urlopen(
                "GET", target.path, headers=headers, redirect=False, retries=False,
                preload_content=False, decode_content=False, assert_same_host=False,
            )
            try:
                return self._read(response, original, deadline)
            finally:
                response.release_conn()
                response.close()
        except FetchError:
            raise
        except urllib3.exceptions.TimeoutError as exc:
            raise FetchError(f"{redact_url(original)} timed out") from exc
        except Exception as exc:  # urllib3, http.client, ssl and socket errors alike
            raise FetchError(f"{redact_url(original)} failed: {type(exc).__name__}") from exc
        finally:
            pool.close()

    def _read(self, response: urllib3.BaseHTTPResponse, url: str,
              deadline: float) -> bytes | str:
        status = response.status
        if status in _REDIRECTS:
            location = response.headers.get("Location")
            if not location:
                raise FetchError(f"{redact_url(url)} answered HTTP {status} without a Location")
            return str(location)
        if status != 200:
            raise FetchError(f"{redact_url(url)} answered HTTP {status}")
        kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if not kind.startswith("image/"):
            raise FetchError(f"{redact_url(url)} is not an image (Content-Type {kind[:40]!r})")
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.strip().isdigit() and (
            int(declared) > self.limits.max_bytes
        ):
            raise FetchError(f"{redact_url(url)} is larger than {self.limits.max_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            if time.monotonic() >= deadline:
                raise FetchError(f"{redact_url(url)} ran out of time")
            # read1 returns after one socket read, so the size limit is checked
            # as the bytes arrive.
            chunk = response.read1(_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > self.limits.max_bytes:
                raise FetchError(f"{redact_url(url)} is larger than {self.limits.max_bytes} bytes")
            chunks.append(chunk)
        data = b"".join(chunks)
        if sniff_format(data) is None:
            raise FetchError(f"{redact_url(url)} is not a JPEG, PNG or WebP image")
        return data

    def fetch_many(
        self, urls: Sequence[str], *, deadline: float | None = None,
        on_result: Callable[[str, bytes | FetchError], object] | None = None,
    ) -> dict[str, bytes | FetchError]:
        """Fetch every distinct URL concurrently; each maps to its bytes or its error.

        The whole call ends within ``limits.batch_timeout`` (or ``deadline``, a
        :func:`time.monotonic` value, if sooner); a URL not done by then maps
        to a :class:`FetchError`. ``on_result`` is called in the worker thread
        as each URL finishes, so callers can decode while others still
        download; it is never called after this method returns (a call already
        running at the deadline is waited for), and if it raises, the URL maps
        to a :class:`FetchError`.
        """
        unique = list(dict.fromkeys(urls))
        if not unique:
            return {}
        start = time.monotonic()
        batch_end = start + self.limits.batch_timeout
        batch_end = batch_end if deadline is None else min(batch_end, deadline)
        batch = _Batch(unique, on_result)

        def work() -> None:
            for url in batch:
                batch.finish(url, self._fetch_quietly(url, batch_end))

        # Daemon threads, waited for only until the deadline: whatever a worker
        # is doing, it can hold neither this call nor the interpreter's exit.
        workers = [
            threading.Thread(target=work, daemon=True, name="restyle-fetch")
            for _ in range(min(self.limits.workers, len(unique)))
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(max(0.0, batch_end - time.monotonic()))
        results = batch.close()
        late = f"was not fetched within {batch_end - start:.3g} s"
        return {url: results[url] if url in results else FetchError(f"{redact_url(url)} {late}")
                for url in unique}

    def _fetch_quietly(self, url: str, deadline: float) -> bytes | FetchError:
        try:
            return self.fetch(url, deadline=deadline)
        except FetchError as exc:
            return exc
        except Exception as exc:  # an unexpected error costs one image, not the batch
            logger.debug("fetching %s failed", redact_url(url), exc_info=True)
            error = FetchError(f"{redact_url(url)} failed: {type(exc).__name__}")
            error.__cause__ = exc
            return error


class _Batch:
    """The shared state of one :meth:`Fetcher.fetch_many` call: which URLs are
    left, what came back, and whether the caller has stopped listening."""

    def __init__(self, urls: Sequence[str],
                 on_result: Callable[[str, bytes | FetchError], object] | None) -> None:
        self._pending = iter(urls)
        self._on_result = on_result
        self._results: dict[str, bytes | FetchError] = {}
        self._lock = threading.Condition()
        self._closed = False
        self._calling = 0

    def __iter__(self) -> Iterator[str]:
        while True:
            with self._lock:
                url = None if self._closed else next(self._pending, None)
            if url is None:
                return
            yield url

    def finish(self, url: str, result: bytes | FetchError) -> None:
        with self._lock:
            if self._closed:
                return
            self._calling += 1
        try:
            # Outside the lock, so workers decode in parallel.
            if self._on_result is not None:
                self._on_result(url, result)
        except Exception as exc:
            logger.debug("handling %s failed", redact_url(url), exc_info=True)
            result = FetchError(f"{redact_url(url)} could not be used: {type(exc).__name__}")
            result.__cause__ = exc
        finally:
            with self._lock:
                self._results[url] = result
                self._calling -= 1
                self._lock.notify_all()

    def close(self) -> dict[str, bytes | FetchError]:
        """What came back; ``on_result`` is not running and will not be called again."""
        with self._lock:
            self._closed = True
            self._lock.wait_for(lambda: self._calling == 0)
            return dict(self._results)


_CA_CERTS: str | None = None


def _default_ca_certs() -> str | None:
    global _CA_CERTS
    if _CA_CERTS is None:
        try:
            import certifi

            _CA_CERTS = certifi.where()
        except ImportError:  # pragma: no cover - a declared dependency
            return None
    return _CA_CERTS

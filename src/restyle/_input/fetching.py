"""Downloading comp images safely: concurrent, bounded in time and size, guarded against SSRF.

A fetch ends by its deadline whatever the server does: one watchdog thread
shuts down the socket of every fetch whose deadline has passed, which wakes a
read blocked anywhere (TLS handshake, status line, headers, chunk sizes,
body), and host lookups run in daemon threads the caller stops waiting for.

A URL that carries credentials (``user:password@host``) is refused before
anything is resolved or connected: URL parsers disagree about where such a
host ends, and a comp image never needs a login. Every host name is resolved
once, every address it resolves to is checked, and the connection is made to
the checked address (the Host header and TLS SNI/certificate check still use
the name), so a DNS answer cannot change between the check and the
connection. Redirects are followed by hand and each
hop is checked again. urllib3 is used directly: it never reads proxy
environment variables, so none of them can route around the guard.
"""

from __future__ import annotations

import contextlib
import heapq
import ipaddress
import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection

from restyle._errors import FetchError
from restyle._input.limits import sniff_format

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

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: ``(host, port) -> addresses``: how host names become IP addresses.
Resolver = Callable[[str, int], Sequence[str]]

_DEFAULT_PORTS = {"http": 80, "https": 443}
_REDIRECTS = {301, 302, 303, 307, 308}
_CHUNK = 64 * 1024

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network
# Checked in order; the first match names the refusal. ``is_global`` below
# catches the rest (documentation, benchmarking, protocol-assignment ranges).
_REFUSED_V4: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("0.0.0.0/8"), "unspecified ('this network')"),
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("10.0.0.0/8"), "private"),
    (_V4("172.16.0.0/12"), "private"),
    (_V4("192.168.0.0/16"), "private"),
    (_V4("169.254.0.0/16"), "link-local"),
    (_V4("100.64.0.0/10"), "shared address space (CGNAT)"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("240.0.0.0/4"), "reserved"),
)
_REFUSED_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::/128"), "unspecified"),
    (_V6("::1/128"), "loopback"),
    (_V6("fc00::/7"), "unique local (ULA)"),
    (_V6("fe80::/10"), "link-local"),
    (_V6("fec0::/10"), "site-local"),
    (_V6("ff00::/8"), "multicast"),
    (_V6("64:ff9b:1::/48"), "local-use NAT64"),
    (_V6("100::/64"), "discard-only"),
)
_NAT64 = _V6("64:ff9b::/96")
_V4_COMPATIBLE = _V6("::/96")


def address_refusal(address: IPAddress) -> str | None:
    """Why ``address`` must not be fetched from, or None if it is a public address.

    IPv4 addresses hidden in IPv6 (mapped, compatible, 6to4, NAT64, Teredo)
    are unwrapped and judged as IPv4.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_v4(address)
        if embedded is not None:
            reason = address_refusal(embedded)
            return None if reason is None else f"{reason}, inside an IPv6 address"
        for network, reason in _REFUSED_V6:
            if address in network:
                return reason
    else:
        for network4, reason in _REFUSED_V4:
            if address in network4:
                return reason
    if not address.is_global or address.is_multicast:
        return "not globally routable"
    return None


def _embedded_v4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        # The client's obfuscated address is the one the tunnel delivers to.
        return address.teredo[1]
    if address in _NAT64 or (address in _V4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def system_resolver(host: str, port: int) -> list[str]:
    """Every address the system resolver gives for ``host``."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise FetchError(f"cannot resolve host {host!r}") from exc
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# -- deadlines ---------------------------------------------------------------------


class _Watch:
    """The sockets of one fetch, shut down by the watchdog at the fetch's deadline.
    Its state changes only under the watchdog's lock."""

    __slots__ = ("_sockets", "closed", "expired")

    def __init__(self) -> None:
        self.expired = False
        self.closed = False
        self._sockets: list[socket.socket] = []

    def attach(self, sock: socket.socket) -> None:
        # A duplicate, because TLS detaches the original object from its file
        # descriptor; shutting the duplicate down ends the same connection, and
        # since only this watch closes it, its number cannot be reused under us.
        copy = sock.dup()
        with _WATCHDOG.lock:
            if not self.closed:
                self._sockets.append(copy)
                if self.expired:
                    self._shut()
                return
        copy.close()

    def close(self) -> None:
        _WATCHDOG.release(self)

    def _expire(self) -> None:
        self.expired = True
        self._shut()

    def _shut(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):  # already gone
                sock.shutdown(socket.SHUT_RDWR)

    def _close(self) -> None:
        self.closed = True
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()


class _Watchdog:
    """One daemon thread for every fetch in flight: it waits for the earliest
    deadline and shuts that fetch's sockets down, which makes any recv, send or
    handshake blocked on them return at once. Per-read socket timeouts cannot do
    this: a server sending a byte a second resets them forever. The thread ends
    when nothing is watched."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._wake = threading.Condition(self.lock)
        self._heap: list[tuple[float, int, _Watch]] = []
        self._order = itertools.count()
        self._live = 0
        self._thread: threading.Thread | None = None

    def watch(self, deadline: float) -> _Watch:
        watch = _Watch()
        with self.lock:
            heapq.heappush(self._heap, (deadline, next(self._order), watch))
            self._live += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="restyle-fetch-watchdog")
                self._thread.start()
            elif self._heap[0][2] is watch:
                self._wake.notify()
        return watch

    def release(self, watch: _Watch) -> None:
        with self.lock:
            if watch.closed:
                return
            watch._close()
            self._live -= 1
            if self._live == 0:
                # Finished watches are dropped lazily; with none live, drop them
                # all so the thread can end now rather than at the last deadline.
                self._heap.clear()
                self._wake.notify()

    def _run(self) -> None:
        with self.lock:
            while True:
                while self._heap and self._heap[0][2].closed:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._thread = None
                    return
                deadline, _, watch = self._heap[0]
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._wake.wait(delay)
                    continue
                heapq.heappop(self._heap)
                watch._expire()


_WATCHDOG = _Watchdog()


class _WatchedHTTPConnection(HTTPConnection):
    """Hands its socket to the fetch's watch as soon as the TCP connection exists,
    before the TLS handshake, so the watchdog covers every step after connect
    (connect itself is bounded by its own timeout)."""

    def __init__(self, *args: Any, watch: _Watch, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watch = watch

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        try:
            self._watch.attach(sock)
        except BaseException:
            sock.close()  # not yet the connection's: nobody else would close it
            raise
        return sock


class _WatchedHTTPSConnection(_WatchedHTTPConnection, HTTPSConnection):
    pass


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class _Lookups:
    """Runs host lookups in daemon threads so that a caller stops waiting at its
    deadline.

    The system resolver blocks in C and cannot be interrupted, so a lookup that
    outlives its caller is abandoned: its thread ends when the lookup does. At
    most ``size`` lookups run at once; when every one of them is abandoned, new
    lookups fail at once rather than queue behind them.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._slots = threading.BoundedSemaphore(size)
        self._lock = threading.Lock()
        self._abandoned = 0

    def resolve(self, resolver: Resolver, host: str, port: int,
                deadline: float) -> Sequence[str]:
        """The resolver's answer; TimeoutError at the deadline, or what the resolver raised."""
        if time.monotonic() >= deadline:
            raise TimeoutError(host)
        with self._lock:
            busy = self._abandoned >= self.size
        if busy or not self._slots.acquire(timeout=max(0.0, deadline - time.monotonic())):
            raise _ResolverBusy
        done = threading.Event()
        outcome: list[Sequence[str] | BaseException] = []
        abandoned = [False]

        def lookup() -> None:
            try:
                outcome.append(resolver(host, port))
            except BaseException as exc:  # handed to the caller, who maps it
                outcome.append(exc)
            finally:
                with self._lock:
                    done.set()
                    if abandoned[0]:
                        self._abandoned -= 1
                self._slots.release()

        threading.Thread(target=lookup, daemon=True, name="restyle-fetch-resolve").start()
        if not done.wait(max(0.0, deadline - time.monotonic())):
            with self._lock:
                if not done.is_set():
                    abandoned[0] = True
                    self._abandoned += 1
                    raise TimeoutError(host)
        answer = outcome[0]
        if isinstance(answer, BaseException):
            raise answer
        return answer


class _ResolverBusy(Exception):
    """Every lookup thread is taken by lookups nobody waits for any more."""


_LOOKUPS = _Lookups(32)


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


@dataclass(frozen=True, slots=True)
class _Target:
    scheme: str
    host: str
    port: int
    path: str
    host_header: str


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
        self._resolver = resolver or system_resolver
        self._trusted = tuple(ipaddress.ip_network(n) for n in trusted_networks)
        self._ca_certs = ca_certs
        self._host_slots: dict[str, threading.BoundedSemaphore] = {}
        self._slots_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Fetcher workers={self.limits.workers} per_host={self.limits.per_host}>"

    def __reduce__(self) -> tuple[Any, ...]:
        # A copy in another process (a Ray worker) has the same limits and
        # guards, and its own connections and per-host slots.
        return (_fetcher_from_settings, (self.limits, self.allowed_hosts, self._resolver,
                                         self._trusted, self._ca_certs))

    # -- checks ----------------------------------------------------------------

    def _target(self, url: str) -> _Target:
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise FetchError(f"refusing to fetch {_redact(url)}: malformed URL") from exc
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").lower().rstrip(".")
        if scheme not in _DEFAULT_PORTS or not host:
            raise FetchError(f"refusing to fetch {_redact(url)}: only http(s) URLs are allowed")
        if "@" in parts.netloc:
            # Parsers disagree about where such a host ends, and no image needs a login.
            raise FetchError(
                f"refusing to fetch {_redact(url)}: a URL with credentials (user:password@) "
                "is not allowed"
            )
        if self.allowed_hosts is not None and not any(
            host == h or host.endswith("." + h) for h in self.allowed_hosts
        ):
            raise FetchError(f"refusing to fetch {_redact(url)}: host is not on the allow-list")
        default = _DEFAULT_PORTS[scheme]
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        bracketed = f"[{host}]" if ":" in host else host
        host_header = bracketed if port in (None, default) else f"{bracketed}:{port}"
        return _Target(scheme, host, default if port is None else port, path, host_header)

    def _checked_address(self, target: _Target, url: str, deadline: float) -> str:
        """The first address of the target's host that passes the checks."""
        try:
            literal: IPAddress | None = ipaddress.ip_address(target.host)
        except ValueError:
            literal = None
        if literal is not None:
            answers: Sequence[str] = [target.host]
        else:
            try:
                answers = _LOOKUPS.resolve(self._resolver, target.host, target.port, deadline)
            except FetchError:
                raise
            except _ResolverBusy as exc:
                raise FetchError(
                    f"cannot resolve the host of {_redact(url)}: resolver busy"
                ) from exc
            except Exception as exc:  # a custom resolver's own failure, or the deadline
                raise FetchError(f"cannot resolve the host of {_redact(url)}") from exc
        if not answers:
            raise FetchError(f"cannot resolve the host of {_redact(url)}")
        checked: list[IPAddress] = []
        for answer in answers:
            try:
                address = ipaddress.ip_address(str(answer).split("%")[0])
            except ValueError as exc:
                raise FetchError(f"{_redact(url)}: resolver gave a malformed address") from exc
            trusted = any(address in network for network in self._trusted)
            if not trusted:
                reason = address_refusal(address)
                if reason is not None:
                    # Refuse the host outright if any answer is internal: a name
                    # that mixes public and private answers is a rebinding attempt.
                    verb = "is" if literal is not None else "resolves to"
                    raise FetchError(
                        f"refusing to fetch {_redact(url)}: {target.host} {verb} "
                        f"{_kind_of_address(reason)}"
                    )
                if target.port != _DEFAULT_PORTS[target.scheme]:
                    raise FetchError(
                        f"refusing to fetch {_redact(url)}: only the default port of "
                        f"{target.scheme} is allowed"
                    )
            checked.append(address)
        return str(checked[0])

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
        watch = _WATCHDOG.watch(deadline)
        try:
            return self._follow(url, deadline, watch)
        except FetchError as exc:
            if time.monotonic() >= deadline:
                budget = max(0.0, deadline - start)
                raise FetchError(f"{_redact(url)} took longer than {budget:.3g} s") from exc
            raise
        finally:
            watch.close()

    def _follow(self, url: str, deadline: float, watch: _Watch) -> bytes:
        current = url
        for hop in range(self.limits.max_redirects + 1):
            target = self._target(current)
            slot = self._slot(target.host)
            if not slot.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise FetchError(f"{_redact(url)} timed out waiting for a connection")
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
            f"{_redact(url)} redirected more than {self.limits.max_redirects} times"
        )

    def _slot(self, host: str) -> threading.BoundedSemaphore:
        with self._slots_lock:
            slot = self._host_slots.get(host)
            if slot is None:
                slot = self._host_slots[host] = threading.BoundedSemaphore(self.limits.per_host)
            return slot

    def _fetch_once(self, target: _Target, current: str, original: str,
                    deadline: float, watch: _Watch) -> bytes | str:
        """The body, or the Location of a redirect."""
        address = self._checked_address(target, current, deadline)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError(f"{_redact(original)} ran out of time")
        # The read timeout is only a backstop: the watch ends the fetch at its deadline.
        timeout = urllib3.Timeout(connect=min(self.limits.connect_timeout, remaining),
                                  read=remaining)
        pool: urllib3.HTTPConnectionPool
        if target.scheme == "https":
            pool = _HTTPSPool(
                address, target.port, timeout=timeout, maxsize=1, retries=False,
                server_hostname=target.host, assert_hostname=target.host,
                cert_reqs="CERT_REQUIRED", ca_certs=self._ca_certs or _default_ca_certs(),
                watch=watch,
            )
        else:
            pool = _HTTPPool(address, target.port, timeout=timeout, maxsize=1, retries=False,
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
            raise FetchError(f"{_redact(original)} timed out") from exc
        except Exception as exc:  # urllib3, http.client, ssl and socket errors alike
            raise FetchError(f"{_redact(original)} failed: {type(exc).__name__}") from exc
        finally:
            pool.close()

    def _read(self, response: urllib3.BaseHTTPResponse, url: str,
              deadline: float) -> bytes | str:
        status = response.status
        if status in _REDIRECTS:
            location = response.headers.get("Location")
            if not location:
                raise FetchError(f"{_redact(url)} answered HTTP {status} without a Location")
            return str(location)
        if status != 200:
            raise FetchError(f"{_redact(url)} answered HTTP {status}")
        kind = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if not kind.startswith("image/"):
            raise FetchError(f"{_redact(url)} is not an image (Content-Type {kind[:40]!r})")
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.strip().isdigit() and (
            int(declared) > self.limits.max_bytes
        ):
            raise FetchError(f"{_redact(url)} is larger than {self.limits.max_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            if time.monotonic() >= deadline:
                raise FetchError(f"{_redact(url)} ran out of time")
            # read1 returns after one socket read, so the size limit is checked
            # as the bytes arrive.
            chunk = response.read1(_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > self.limits.max_bytes:
                raise FetchError(f"{_redact(url)} is larger than {self.limits.max_bytes} bytes")
            chunks.append(chunk)
        data = b"".join(chunks)
        if sniff_format(data) is None:
            raise FetchError(f"{_redact(url)} is not a JPEG, PNG or WebP image")
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
        return {url: results[url] if url in results else FetchError(f"{_redact(url)} {late}")
                for url in unique}

    def _fetch_quietly(self, url: str, deadline: float) -> bytes | FetchError:
        try:
            return self.fetch(url, deadline=deadline)
        except FetchError as exc:
            return exc
        except Exception as exc:  # an unexpected error costs one image, not the batch
            logger.debug("fetching %s failed", _redact(url), exc_info=True)
            error = FetchError(f"{_redact(url)} failed: {type(exc).__name__}")
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
            logger.debug("handling %s failed", _redact(url), exc_info=True)
            result = FetchError(f"{_redact(url)} could not be used: {type(exc).__name__}")
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


def _redact(url: str) -> str:
    """The URL without credentials or query string, either of which may carry secrets."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid URL>"
    host = parts.hostname
    if not parts.scheme or not host:
        return "<invalid URL>"
    if ":" in host:  # an IPv6 address: a URL keeps it in brackets
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path}"[:300]


def _kind_of_address(reason: str) -> str:
    """``address_refusal``'s reason as words: "an unspecified address", "a loopback
    address, inside an IPv6 address"."""
    kind, _, where = reason.partition(", ")
    article = "an" if kind[:1] in "aeio" or kind.startswith("unspecified") else "a"
    return f"{article} {kind} address" + (f", {where}" if where else "")

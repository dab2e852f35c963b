"""Downloading comp images safely: concurrent, bounded in time and size, guarded against SSRF.

Every host name is resolved once, every address it resolves to is checked,
and the connection is made to the checked address (the Host header and TLS
SNI/certificate check still use the name), so a DNS answer cannot change
between the check and the connection. Redirects are followed by hand and each
hop is checked again. urllib3 is used directly: it never reads proxy
environment variables, so none of them can route around the guard.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import urllib3

from restyle._errors import FetchError
from restyle._imaging import sniff_format

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
    apply to them. ``resolver`` replaces DNS (tests give fake answers).
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

    def _checked_address(self, target: _Target, url: str) -> str:
        """The first address of the target's host that passes the checks."""
        try:
            literal: IPAddress | None = ipaddress.ip_address(target.host)
        except ValueError:
            literal = None
        if literal is not None:
            answers: Sequence[str] = [target.host]
        else:
            try:
                answers = self._resolver(target.host, target.port)
            except FetchError:
                raise
            except Exception as exc:  # a custom resolver's own failure
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
                    raise FetchError(
                        f"refusing to fetch {_redact(url)}: {target.host} resolves to a "
                        f"{reason} address"
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
        per-image ``timeout``.
        """
        own = time.monotonic() + self.limits.timeout
        deadline = own if deadline is None else min(own, deadline)
        current = url
        for hop in range(self.limits.max_redirects + 1):
            target = self._target(current)
            slot = self._slot(target.host)
            if not slot.acquire(timeout=max(0.0, deadline - time.monotonic())):
                raise FetchError(f"{_redact(url)} timed out waiting for a connection")
            try:
                location = self._fetch_once(target, current, url, deadline)
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
                    deadline: float) -> bytes | str:
        """The body, or the Location of a redirect."""
        address = self._checked_address(target, current)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError(f"{_redact(original)} took longer than {self.limits.timeout:g} s")
        timeout = urllib3.Timeout(connect=min(self.limits.connect_timeout, remaining),
                                  read=remaining)
        pool: urllib3.HTTPConnectionPool
        if target.scheme == "https":
            pool = urllib3.HTTPSConnectionPool(
                address, target.port, timeout=timeout, maxsize=1, retries=False,
                server_hostname=target.host, assert_hostname=target.host,
                cert_reqs="CERT_REQUIRED", ca_certs=self._ca_certs or _default_ca_certs(),
            )
        else:
            pool = urllib3.HTTPConnectionPool(address, target.port, timeout=timeout, maxsize=1,
                                              retries=False)
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
        except (urllib3.exceptions.HTTPError, OSError) as exc:
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
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FetchError(f"{_redact(url)} took longer than {self.limits.timeout:g} s")
            _set_read_timeout(response, remaining)
            # read1 returns after one socket read, so a server dripping bytes
            # cannot stretch a read past the deadline.
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
        :func:`time.monotonic` value, if sooner). ``on_result`` is called in the
        worker thread as each URL finishes, so callers can decode while others
        still download.
        """
        unique = list(dict.fromkeys(urls))
        results: dict[str, bytes | FetchError] = {}
        if not unique:
            return results
        batch_end = time.monotonic() + self.limits.batch_timeout
        batch_end = batch_end if deadline is None else min(batch_end, deadline)

        def one(url: str) -> bytes | FetchError:
            result: bytes | FetchError
            try:
                result = self.fetch(url, deadline=batch_end)
            except FetchError as exc:
                result = exc
            if on_result is not None:
                on_result(url, result)
            return result

        with ThreadPoolExecutor(max_workers=min(self.limits.workers, len(unique)),
                                thread_name_prefix="restyle-fetch") as pool:
            for url, result in zip(unique, pool.map(one, unique), strict=True):
                results[url] = result
        return results


def _set_read_timeout(response: urllib3.BaseHTTPResponse, seconds: float) -> None:
    sock = getattr(getattr(response, "connection", None), "sock", None)
    if sock is not None:
        sock.settimeout(max(0.001, seconds))


_CA_CERTS: str | None = None


def _default_ca_certs() -> str | None:
    global _CA_CERTS
    if _CA_CERTS is None:
        try:
            import certifi

            _CA_CERTS = certifi.where()
        except ImportError:  # pragma: no cover - requests depends on certifi
            return None
    return _CA_CERTS


def _redact(url: str) -> str:
    """The URL without credentials or query string, either of which may carry secrets."""
    try:
        parts = urlsplit(url)
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid URL>"
    if not parts.scheme or not parts.hostname:
        return "<invalid URL>"
    return f"{parts.scheme}://{parts.hostname}{port}{parts.path}"[:300]

"""The address guard: what a fetch may reach.

Only http(s) URLs on the default ports, to public addresses, are fetched. A
URL that carries credentials (``user:password@host``) is refused before
anything is resolved or connected: URL parsers disagree about where such a
host ends, and a comp image never needs a login. Every host name is resolved
once (in a daemon thread the caller stops waiting for at its deadline), every
address it resolves to is checked, and the fetch connects to the checked
address, so a DNS answer cannot change between the check and the connection.
Private, loopback, link-local and other internal addresses are refused,
IPv4 hidden in IPv6 included; networks a deployment trusts are exempt.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from restyle._errors import FetchError

__all__ = [
    "AddressGuard",
    "IPAddress",
    "IPNetwork",
    "Resolver",
    "Target",
    "address_refusal",
    "redact_url",
    "system_resolver",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: ``(host, port) -> addresses``: how host names become IP addresses.
Resolver = Callable[[str, int], Sequence[str]]

_DEFAULT_PORTS = {"http": 80, "https": 443}

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


# -- resolving under a deadline -------------------------------------------------------


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


# -- the checks -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    """Where a checked URL points, and the Host header to send there."""

    scheme: str
    host: str
    port: int
    path: str
    host_header: str


@dataclass(frozen=True, slots=True)
class AddressGuard:
    """The checks every hop of a fetch passes: ``allowed_hosts`` (None: any
    host), the resolver, and the networks exempt from the address and port
    checks."""

    allowed_hosts: tuple[str, ...] | None
    resolver: Resolver
    trusted: tuple[IPNetwork, ...]

    def target(self, url: str) -> Target:
        """Where ``url`` points, refused unless it is an http(s) URL without
        credentials to an allowed host."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise FetchError(f"refusing to fetch {redact_url(url)}: malformed URL") from exc
        scheme = parts.scheme.lower()
        host = (parts.hostname or "").lower().rstrip(".")
        if scheme not in _DEFAULT_PORTS or not host:
            raise FetchError(f"refusing to fetch {redact_url(url)}: only http(s) URLs are allowed")
        if "@" in parts.netloc:
            # Parsers disagree about where such a host ends, and no image needs a login.
            raise FetchError(
                f"refusing to fetch {redact_url(url)}: a URL with credentials (user:password@) "
                "is not allowed"
            )
        if self.allowed_hosts is not None and not any(
            host == h or host.endswith("." + h) for h in self.allowed_hosts
        ):
            raise FetchError(f"refusing to fetch {redact_url(url)}: host is not on the allow-list")
        default = _DEFAULT_PORTS[scheme]
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        bracketed = f"[{host}]" if ":" in host else host
        host_header = bracketed if port in (None, default) else f"{bracketed}:{port}"
        return Target(scheme, host, default if port is None else port, path, host_header)

    def address(self, target: Target, url: str, deadline: float) -> str:
        """The first address of the target's host that passes the checks."""
        try:
            literal: IPAddress | None = ipaddress.ip_address(target.host)
        except ValueError:
            literal = None
        if literal is not None:
            answers: Sequence[str] = [target.host]
        else:
            try:
                answers = _LOOKUPS.resolve(self.resolver, target.host, target.port, deadline)
            except FetchError:
                raise
            except _ResolverBusy as exc:
                raise FetchError(
                    f"cannot resolve the host of {redact_url(url)}: resolver busy"
                ) from exc
            except Exception as exc:  # a custom resolver's own failure, or the deadline
                raise FetchError(f"cannot resolve the host of {redact_url(url)}") from exc
        if not answers:
            raise FetchError(f"cannot resolve the host of {redact_url(url)}")
        checked: list[IPAddress] = []
        for answer in answers:
            try:
                address = ipaddress.ip_address(str(answer).split("%")[0])
            except ValueError as exc:
                raise FetchError(f"{redact_url(url)}: resolver gave a malformed address") from exc
            trusted = any(address in network for network in self.trusted)
            if not trusted:
                reason = address_refusal(address)
                if reason is not None:
                    # Refuse the host outright if any answer is internal: a name
                    # that mixes public and private answers is a rebinding attempt.
                    verb = "is" if literal is not None else "resolves to"
                    raise FetchError(
                        f"refusing to fetch {redact_url(url)}: {target.host} {verb} "
                        f"{_kind_of_address(reason)}"
                    )
                if target.port != _DEFAULT_PORTS[target.scheme]:
                    raise FetchError(
                        f"refusing to fetch {redact_url(url)}: only the default port of "
                        f"{target.scheme} is allowed"
                    )
            checked.append(address)
        return str(checked[0])


def redact_url(url: str) -> str:
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

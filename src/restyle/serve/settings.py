"""What a service is told: where it listens, its token, its limits, its batching."""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field

from restyle._errors import ConfigurationError

__all__ = ["ServeSettings", "is_loopback"]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, kw_only=True)
class ServeSettings:
    """A service's settings; :meth:`check` refuses the unsafe ones.

    ``concurrency`` analyses run at once, ``queue`` more may wait for one of
    them (then 429 with Retry-After); each request ends by ``deadline``
    seconds from its arrival, waiting included (then 504). ``token``, when
    set, is the bearer token every ``/v1/`` route but health and readiness
    wants; a non-loopback ``host`` without one is refused unless
    ``allow_no_token``. ``batch_window`` seconds (0: off) and ``max_batch``
    images shape the encoder's cross-request batches. ``grace`` is how long a
    shutdown waits for the requests in flight.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = field(default=None, repr=False)
    allow_no_token: bool = False
    concurrency: int = 8
    queue: int = 32
    deadline: float = 30.0
    batch_window: float = 0.01
    max_batch: int = 32
    retry_after: int = 2
    grace: float = 60.0

    def check(self) -> ServeSettings:
        for name in ("concurrency", "max_batch", "retry_after"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"{name} must be 1 or more, got {getattr(self, name)}")
        if self.queue < 0:
            raise ConfigurationError(f"queue must be 0 or more, got {self.queue}")
        for name in ("deadline", "grace"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigurationError(f"{name} must be a positive number of seconds")
        if not (math.isfinite(self.batch_window) and 0 <= self.batch_window <= 1):
            raise ConfigurationError("batch_window must be 0 to 1 second")
        if self.token is not None and len(self.token) < 16:
            raise ConfigurationError("the token must be at least 16 characters long")
        if not self.token and not self.allow_no_token and not is_loopback(self.host):
            raise ConfigurationError(
                f"refusing to listen on {self.host}, which other machines can reach, without "
                "a token: set RESTYLE_SERVE_TOKEN (or --token-file), or pass --allow-no-token "
                "if something in front of it checks who calls")
        return self

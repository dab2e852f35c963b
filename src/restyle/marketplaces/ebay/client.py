"""Talking to eBay: one requests session per thread, bounded retries on 429, 5xx
and lost connections, and eBay's error answers as typed errors with no secret
in them."""

from __future__ import annotations

import email.utils
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import requests

from restyle._errors import (
    MarketplaceAuthError,
    MarketplaceError,
    MarketplaceRateLimitError,
    MarketplaceResponseError,
    MarketplaceUnavailableError,
)
from restyle._plugin.remote import RemoteComponent
from restyle._secrets import redact

logger = logging.getLogger("restyle.marketplaces.ebay")

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class _Sessions:
    """One requests session per thread (requests does not promise a shared one is
    thread safe), all closed together."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._open: list[requests.Session] = []
        self._lock = threading.Lock()

    def get(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            with self._lock:
                self._open.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            sessions, self._open = self._open, []
            self._local = threading.local()
        for session in sessions:
            session.close()


class _EbayClient(RemoteComponent):
    """What an eBay component does over HTTP, whatever the API: its sessions,
    sending with retries, and reading answers and errors. The settings it
    reads are the marketplace's (see :class:`~restyle.marketplaces.ebay.EbayMarketplace`)."""

    request_timeout: float | tuple[float, float]
    max_retries: int
    backoff: float
    max_backoff: float
    max_retry_after: float
    _sleep: Callable[[float], None]

    def _make_client(self) -> _Sessions:
        return _Sessions()

    def _session(self) -> requests.Session:
        sessions: _Sessions = self.client()
        return sessions.get()

    def close(self) -> None:
        """Close the connections kept open to eBay; a later search opens new ones."""
        with self._client_lock:
            sessions: _Sessions | None = self._client
        if sessions is not None:
            sessions.close()

    def _send(self, method: str, url: str, *, what: str, **kwargs: Any) -> requests.Response:
        """Send with bounded retries on 429, 5xx and lost connections."""
        attempts = self.max_retries + 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = self._session().request(
                    method, url, timeout=self.request_timeout, **kwargs
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                if last:
                    self._fail(
                        f"eBay {what}: no answer after {attempts} tries ({type(exc).__name__})",
                        exc, error_type=MarketplaceUnavailableError, marketplace=self.name,
                    )
                self._wait(self._backoff(attempt), what, type(exc).__name__)
                continue
            except requests.RequestException as exc:
                self._fail(
                    f"eBay {what} could not be sent: {type(exc).__name__}", exc,
                    error_type=MarketplaceError, marketplace=self.name,
                )
            if response.status_code not in _RETRY_STATUSES or last:
                return response
            retry_after = _retry_after(response)
            if retry_after is not None and retry_after > self.max_retry_after:
                # Waiting minutes would hang an interactive caller: report it instead.
                return response
            delay = retry_after if retry_after is not None else self._backoff(attempt)
            self._wait(delay, what, f"HTTP {response.status_code}")
            response.close()
        raise AssertionError("unreachable")  # pragma: no cover

    def _backoff(self, attempt: int) -> float:
        return float(min(self.max_backoff, self.backoff * (2**attempt)))

    def _wait(self, delay: float, what: str, why: str) -> None:
        logger.info("eBay %s: %s, retrying in %.1f s", what, why, delay)
        self._sleep(delay)

    def _http_error(self, response: requests.Response, what: str) -> MarketplaceError:
        """eBay's ``{"errors": [...]}`` envelope (or whatever came instead) as a typed error."""
        status = response.status_code
        ids, messages = _error_envelope(response)
        detail = "; ".join(messages) or (response.reason or "no details")
        if ids:
            detail += " (errorId " + ", ".join(str(i) for i in ids) + ")"
        message = f"eBay {what} failed with HTTP {status}: {detail}"
        kwargs: dict[str, Any] = {"marketplace": self.name, "status": status, "error_ids": ids}
        error_type: type[MarketplaceError] = MarketplaceResponseError
        if status in (401, 403):
            error_type = MarketplaceAuthError
        elif status == 429:
            error_type = MarketplaceRateLimitError
            kwargs["retry_after"] = _retry_after(response)
        elif status >= 500:
            error_type = MarketplaceUnavailableError
        error: MarketplaceError = self._error(message, error_type=error_type, **kwargs)
        return error

    def _json_object(self, response: requests.Response, what: str) -> dict[str, Any]:
        try:
            data = response.json()
        except ValueError as exc:
            self._fail(
                f"eBay {what} answered HTTP {response.status_code} with something that is "
                "not JSON", exc, error_type=MarketplaceResponseError, marketplace=self.name,
                status=response.status_code,
            )
        if not isinstance(data, dict):
            self._fail(
                f"eBay {what} answered with JSON that is not an object",
                error_type=MarketplaceResponseError, marketplace=self.name,
                status=response.status_code,
            )
        return data


def _retry_after(response: requests.Response) -> float | None:
    """Seconds from ``Retry-After`` (a number or an HTTP date), or None without one."""
    raw = response.headers.get("Retry-After")
    if not raw:
        return None
    raw = raw.strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _error_envelope(response: requests.Response) -> tuple[tuple[int, ...], list[str]]:
    try:
        data = response.json()
    except ValueError:
        return (), []
    errors = data.get("errors") if isinstance(data, dict) else None
    if not isinstance(errors, list):
        return (), []
    ids: list[int] = []
    messages: list[str] = []
    for error in errors:
        if not isinstance(error, dict):
            continue
        error_id = error.get("errorId")
        if isinstance(error_id, int) and not isinstance(error_id, bool):
            ids.append(error_id)
        message = error.get("longMessage") or error.get("message")
        if isinstance(message, str) and message.strip():
            # Redacted before it is cut, so that no part of a secret survives the cut.
            messages.append(redact(message.strip())[:300])
    return tuple(ids), messages


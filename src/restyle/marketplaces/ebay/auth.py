"""The application's OAuth token: its keys (from the arguments or the
environment), the token fetched with them for a scope, kept and shared by every
thread until it nears expiry or eBay rejects it, and the authorised call."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import requests

from restyle import _settings
from restyle._errors import ConfigurationError, MarketplaceAuthError, MarketplaceResponseError
from restyle._secrets import Secret, basic_credentials, redact
from restyle.marketplaces.ebay.client import _EbayClient
from restyle.marketplaces.ebay.config import ENV_CLIENT_ID, ENV_CLIENT_SECRET, TOKEN_PATH, _Config

logger = logging.getLogger("restyle.marketplaces.ebay")

#: A token is renewed this long before eBay says it expires (capped at a tenth of its life).
_TOKEN_MARGIN = 120.0


class _Credentials:
    """The application's keys, and the Basic authorization made of them."""

    __slots__ = ("basic", "client_id", "client_secret")

    def __init__(self, client_id: str, client_secret: str) -> None:
        self.client_id = Secret(client_id)
        self.client_secret = Secret(client_secret)
        self.basic = basic_credentials(client_id, client_secret)

    def __repr__(self) -> str:
        return "<eBay credentials>"


@dataclass(frozen=True, slots=True)
class _Token:
    value: Secret
    expires_at: float

    def __repr__(self) -> str:
        return f"<eBay token expiring at {self.expires_at:.0f}>"


class _EbayAuth(_EbayClient):
    """An eBay client with the application's token: :meth:`_call` makes one
    authorised call. :attr:`api` and :attr:`scope` are the marketplace's."""

    api: ClassVar[str]
    scope: ClassVar[str]
    _credentials: _Credentials | None
    _clock: Callable[[], float]
    _token: _Token | None
    _token_lock: threading.Lock
    _scope_refused: bool

    def _resolve_credentials(self) -> _Credentials:
        if self._credentials is not None:
            return self._credentials
        client_id = _settings.env_str(ENV_CLIENT_ID)
        client_secret = _settings.env_str(ENV_CLIENT_SECRET)
        if not client_id or not client_secret:
            raise ConfigurationError(
                f"the ebay marketplace needs an eBay application's keys: set {ENV_CLIENT_ID} "
                f"and {ENV_CLIENT_SECRET} (see docs/marketplaces.md)"
            )
        # Kept once read, so that every later message can be scrubbed of them.
        self._credentials = _Credentials(client_id, client_secret)
        return self._credentials

    def _call(
        self, method: str, path: str, params: Mapping[str, str], config: _Config, *,
        what: str, body: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """One authorised call: a rejected token is renewed once, then the call repeated."""
        token = self._access_token(config)
        for renewed in (False, True):
            headers = {
                "Authorization": f"Bearer {token}",
                "X-EBAY-C-MARKETPLACE-ID": config.marketplace_id,
                "Accept": "application/json",
            }
            response = self._send(
                method, config.base_url + path, what=what, headers=headers,
                params=params, json=body,
            )
            if response.status_code == 401 and not renewed:
                logger.info("eBay rejected the access token; fetching a new one")
                token = self._access_token(config, rejected=token)
                continue
            break
        if not response.ok:
            raise self._http_error(response, what)
        return self._json_object(response, what)

    def _access_token(self, config: _Config, *, rejected: str | None = None) -> str:
        """A cached application token for this marketplace's :attr:`scope`; a new
        one when it nears expiry or was rejected.

        The lock makes concurrent searches share one token request; a thread whose
        token was rejected after another thread already renewed it reuses the new one.
        """
        with self._token_lock:
            token = self._token
            if token is not None and self._clock() < token.expires_at \
                    and token.value.reveal() != rejected:
                return token.value.reveal()
            self._token = None
            self._token = token = self._fetch_token(config)
            return token.value.reveal()

    def _fetch_token(self, config: _Config) -> _Token:
        credentials = self._resolve_credentials()
        response = self._send(
            "POST", config.base_url + TOKEN_PATH, what="token request",
            data={"grant_type": "client_credentials", "scope": self.scope},
            headers={"Authorization": f"Basic {credentials.basic.reveal()}",
                     "Accept": "application/json"},
        )
        if response.status_code in (400, 403) and _oauth_error(response) == "invalid_scope":
            self._scope_refused = True
            self._fail(
                f"eBay refused a token for the {self.api} (HTTP {response.status_code}: "
                f"invalid_scope): its scope {self.scope} is not granted to this application",
                error_type=MarketplaceAuthError, marketplace=self.name,
                status=response.status_code,
            )
        if response.status_code in (400, 401, 403):
            detail = _oauth_detail(response)
            self._fail(
                f"eBay refused the application's keys (HTTP {response.status_code}"
                f"{': ' + detail if detail else ''}); check {ENV_CLIENT_ID} and "
                f"{ENV_CLIENT_SECRET}",
                error_type=MarketplaceAuthError, marketplace=self.name,
                status=response.status_code,
            )
        if not response.ok:
            raise self._http_error(response, "token request")
        return self._token_from(response)

    def _token_from(self, response: requests.Response) -> _Token:
        """The token in eBay's answer, to be renewed a little before it expires."""
        data = self._json_object(response, "token request")
        value = data.get("access_token")
        expires_in = data.get("expires_in", 7200)
        if not isinstance(value, str) or not value:
            self._fail(
                "eBay token answer has no access_token", error_type=MarketplaceResponseError,
                marketplace=self.name, status=response.status_code,
            )
        token = Secret(value)  # registered before anything can log or echo it
        if isinstance(expires_in, bool) or not isinstance(expires_in, (int, float)) \
                or expires_in <= 0:
            self._fail(
                "eBay token answer has no usable expires_in",
                error_type=MarketplaceResponseError, marketplace=self.name,
                status=response.status_code,
            )
        margin = min(_TOKEN_MARGIN, expires_in / 10)
        return _Token(value=token, expires_at=self._clock() + expires_in - margin)


def _oauth_error(response: requests.Response) -> str | None:
    """The ``error`` code of an OAuth error answer, if it is one."""
    try:
        data = response.json()
    except ValueError:
        return None
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, str) else None


def _oauth_detail(response: requests.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return ""
    if not isinstance(data, dict):
        return ""
    parts = [data.get("error"), data.get("error_description")]
    return ": ".join(redact(p.strip())[:200] for p in parts if isinstance(p, str) and p.strip())


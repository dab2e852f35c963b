"""The exceptions restyle raises, all under one root.

```
RestyleError
├── ConfigurationError      a bad option, environment variable or component name
├── PluginError             a plugin failed to load or registered something invalid
│   ├── DuplicateComponentError
│   └── PluginContractError  a component handed back something off its contract
├── ImageError              input that is not a usable JPEG, PNG, WebP, HEIC or AVIF photo
├── FetchError              a remote image could not be downloaded safely
├── ExpertError             an expert could not examine the photo
├── SynthesizerError        a synthesizer could not merge the opinions
├── MarketplaceError        a marketplace search failed
│   ├── MarketplaceAuthError        credentials missing or rejected
│   ├── MarketplaceRateLimitError   still rate limited after the allowed retries
│   ├── MarketplaceUnavailableError server errors or no connection after the retries
│   └── MarketplaceResponseError    a request refused, or an answer that makes no sense
├── EncoderError            the encoder could not load its model or embed inputs
├── CatalogError            the local catalog is missing, corrupt or built with another model
└── RecordingError          a recording that is missing, outside its folder, too large or malformed
```

Foreign exceptions are translated where they enter restyle, with
``raise ... from exc`` so the cause is kept. Messages never contain secrets.
"""

from __future__ import annotations

__all__ = [
    "CatalogError",
    "ConfigurationError",
    "DuplicateComponentError",
    "EncoderError",
    "ExpertError",
    "FetchError",
    "ImageError",
    "MarketplaceAuthError",
    "MarketplaceError",
    "MarketplaceRateLimitError",
    "MarketplaceResponseError",
    "MarketplaceUnavailableError",
    "PluginContractError",
    "PluginError",
    "RecordingError",
    "RestyleError",
    "SynthesizerError",
]


class RestyleError(Exception):
    """Root of every error restyle raises on purpose."""


class ConfigurationError(RestyleError):
    """An option, environment variable or component name is invalid."""


class PluginError(RestyleError):
    """A plugin could not be loaded or registered an invalid component.

    ``distribution`` is the distribution that installed the plugin (``"restyle"``
    for a built-in one, ``"<in-process>"`` for a plugin object passed in code) and
    ``plugin`` the plugin's name (its entry point's, or its module's), when known.
    """

    def __init__(
        self, message: str, *, distribution: str | None = None, plugin: str | None = None
    ) -> None:
        super().__init__(message)
        self.distribution = distribution
        self.plugin = plugin


class DuplicateComponentError(PluginError):
    """Two plugins registered a component of the same kind under the same name."""


class PluginContractError(PluginError):
    """A component returned something its contract does not allow: a wrong
    type, a wrong count or shape, or numbers that are not finite.

    ``component`` is the component's name and ``kind`` its kind (``"expert"``,
    ``"synthesizer"``, ``"marketplace"`` or ``"encoder"``).
    """

    def __init__(self, message: str, *, component: str, kind: str) -> None:
        super().__init__(f"{kind} {component} {message}")
        self.component = component
        self.kind = kind


class ImageError(RestyleError):
    """The input is not a photo restyle can safely decode."""


class FetchError(RestyleError):
    """A remote image could not be downloaded within the safety limits."""


class ExpertError(RestyleError):
    """An expert failed to examine a photo."""


class SynthesizerError(RestyleError):
    """A synthesizer failed to produce an identification."""


class MarketplaceError(RestyleError):
    """A marketplace search failed.

    ``status`` is the HTTP status when there was one; ``error_ids`` the
    marketplace's own error codes (eBay's ``errorId``), when it sent any.
    """

    def __init__(
        self,
        message: str,
        *,
        marketplace: str | None = None,
        status: int | None = None,
        error_ids: tuple[int, ...] = (),
    ) -> None:
        super().__init__(message)
        self.marketplace = marketplace
        self.status = status
        self.error_ids = error_ids


class MarketplaceAuthError(MarketplaceError):
    """The marketplace credentials are missing or were rejected."""


class MarketplaceRateLimitError(MarketplaceError):
    """The marketplace kept refusing with "too many requests".

    ``retry_after`` is the wait in seconds the marketplace asked for, if it said.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        marketplace: str | None = None,
        status: int | None = None,
        error_ids: tuple[int, ...] = (),
    ) -> None:
        super().__init__(message, marketplace=marketplace, status=status, error_ids=error_ids)
        self.retry_after = retry_after


class MarketplaceUnavailableError(MarketplaceError):
    """The marketplace answered with server errors, or not at all, on every try."""


class MarketplaceResponseError(MarketplaceError):
    """The marketplace refused the request, or answered with something malformed."""


class EncoderError(RestyleError):
    """The encoder could not load its model or embed its inputs."""


class CatalogError(RestyleError):
    """The local catalog is missing, damaged, or was built with another encoder."""


class RecordingError(RestyleError):
    """A recording that cannot be replayed: missing, a file outside its folder
    or not a regular file, over a size limit, or a field of the wrong type or
    out of range (the message names the file and the field)."""

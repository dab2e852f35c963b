"""What every component that calls a cloud service shares: a client made once, on
first use, whichever thread asks first; credentials held as Secrets; and errors
whose message, cause and traceback show no secret."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar, NoReturn, TypeVar, overload

from restyle._errors import RestyleError
from restyle._secrets import Secret, exposes_secret, protect_loggers, redact

__all__ = ["RemoteComponent"]

E = TypeVar("E", bound=RestyleError)


class RemoteComponent:
    """Mixin for components that talk to a remote service, listed before the
    Component base: ``class GoogleVisionExpert(RemoteComponent, Expert)``.

    A subclass sets :attr:`error_type`, implements :meth:`_make_client`, keeps
    each credential it learns as a :class:`~restyle._secrets.Secret` (see
    :meth:`_secret`), and raises only through :meth:`_fail` (or raises what
    :meth:`_error` built).
    """

    #: The RestyleError subclass this component raises.
    error_type: ClassVar[type[RestyleError]] = RestyleError
    name: str

    def __init__(self) -> None:
        self._client: Any = None
        self._client_lock = threading.Lock()

    def client(self) -> Any:
        """The service's client, made (and credentials resolved) on first use."""
        # Before the client exists, so that even its construction logs nothing secret,
        # and after, for the loggers its library made when it was imported.
        protect_loggers()
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client()
                protect_loggers()
            return self._client

    def _make_client(self) -> Any:
        """Create the client; import the SDK here, not at module level."""
        raise NotImplementedError

    @staticmethod
    def _secret(value: str | None) -> Secret | None:
        """``value`` held as a Secret, and so redacted everywhere from now on."""
        return Secret(value) if value else None

    @overload
    def _error(
        self, message: str, cause: BaseException | None = ..., *, error_type: type[E],
        **details: Any,
    ) -> E: ...

    @overload
    def _error(
        self, message: str, cause: BaseException | None = ..., **details: Any
    ) -> RestyleError: ...

    def _error(
        self, message: str, cause: BaseException | None = None, *,
        error_type: type[RestyleError] | None = None, **details: Any,
    ) -> RestyleError:
        """This component's error: ``message`` redacted, and ``cause`` attached only
        when nothing in its chain shows a secret.

        Whatever exception is being handled where it is raised is never shown as
        its context (``__suppress_context__``): the check did not vouch for it.
        Raised outside an ``except`` block, as the synthesizers do, it gets no
        context at all; inside one, use :meth:`_fail`.
        """
        error = (error_type or self.error_type)(redact(message), **details)
        error.__cause__ = None if cause is None or exposes_secret(cause) else cause
        error.__suppress_context__ = True
        return error

    def _fail(
        self, message: str, cause: BaseException | None = None, *,
        error_type: type[RestyleError] | None = None, **details: Any,
    ) -> NoReturn:
        """Raise what :meth:`_error` builds: ``from cause``, or ``from None`` when the
        cause would show a secret."""
        error = self._error(message, cause, error_type=error_type, **details)
        raise error from error.__cause__

    @contextmanager
    def _boundary(self, what: str) -> Iterator[None]:
        """Turn any foreign exception escaping ``what`` into this component's error,
        so that no unredacted text leaves the component, whatever went wrong."""
        try:
            yield
        except RestyleError:
            raise
        except Exception as exc:
            self._fail(f"{self.name} {what} failed: {type(exc).__name__}: {exc}", exc)

"""What a component may use of the Engine that calls it.

An Engine hands each component a :class:`Context` when it adopts it
(:meth:`Component.attach`) and makes its context the *current* one while it
runs the pipeline, so a component reads the resources of the Engine that is
calling it now (:attr:`Component.context`). One component instance can serve
several Engines at once, each with its own catalog, encoder and fetcher.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from restyle._errors import ConfigurationError

if TYPE_CHECKING:
    from restyle._input.fetching import Fetcher
    from restyle._plugin.components import Encoder
    from restyle._store.catalog import Catalog

__all__ = ["Context", "current_context"]

_CURRENT: contextvars.ContextVar[Context] = contextvars.ContextVar("restyle_context")
# The deadline (a time.monotonic value) of the component call running in this
# thread; infinity for work started on behalf of no one call (a warm-up).
CALL_DEADLINE: contextvars.ContextVar[float] = contextvars.ContextVar("restyle_call_deadline")


@dataclass(frozen=True, eq=False)
class Context:
    """The parts of an Engine a component may use.

    - ``encoder``: the Engine's encoder (the photo's vectors come from it).
    - ``fetcher``: the guarded image downloader, with the Engine's limits.
    - ``catalog``: the Engine's local catalog, opened on first use.
    - ``logger``: where components log (``restyle.components``).
    - :meth:`time_left`: seconds left for the call in progress, to size a
      component's own network timeouts.
    """

    encoder: Encoder
    fetcher: Fetcher
    _open_catalog: Callable[[], Catalog] = field(repr=False)
    logger: logging.Logger = field(default=logging.getLogger("restyle.components"), repr=False)

    @property
    def catalog(self) -> Catalog:
        return self._open_catalog()

    @staticmethod
    def time_left() -> float | None:
        """Seconds left before the current component call is abandoned; None
        outside a call made by an Engine."""
        deadline = CALL_DEADLINE.get(None)
        if deadline is None or deadline == float("inf"):  # outside a call, or work of no call's
            return None
        return max(0.0, deadline - time.monotonic())


def current_context() -> Context:
    """The context of the Engine whose pipeline is running in this thread."""
    context = _CURRENT.get(None)
    if context is None:
        raise ConfigurationError(
            "this component needs an Engine: call it through Engine.analyze() (or "
            "identify(), find_comps()), not directly"
        )
    return context


def activate(context: Context) -> contextvars.Token[Context]:
    return _CURRENT.set(context)


def deactivate(token: contextvars.Token[Context]) -> None:
    _CURRENT.reset(token)

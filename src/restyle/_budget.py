"""One wall-clock budget per analysis, split across its stages, and component
calls that end by their deadline whatever the component does.

A :class:`Budget` is a deadline on the :func:`time.monotonic` clock. Each stage
gets the time up to a fixed mark of the total (:data:`STAGE_MARKS`), so what an
early stage leaves unused rolls over to the later ones, and no stage can eat
the time the stages after it are owed.

:func:`call` runs one component call in a daemon thread and stops waiting at
the deadline. A call that overran is abandoned, not killed (Python threads
cannot be), and the component is *busy* until that call returns: it is not
called again meanwhile, so a hung plugin costs one thread, not one per call.
Daemon threads never keep the interpreter from exiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from restyle._components import is_timeout
from restyle._errors import RestyleError

__all__ = ["STAGE_MARKS", "Budget", "ComponentBusy", "Overdue", "busy", "call", "timeout_of"]

T = TypeVar("T")

#: How far into the total each stage may run, as a fraction of it. The
#: experts answer by 40 %, the synthesizer by 50 %, the marketplaces (and the
#: photo's embedding) by 75 %, the comp images are fetched and compared by
#: 95 %; the price and the thumbnail take the rest.
STAGE_MARKS = {"experts": 0.40, "synthesize": 0.50, "search": 0.75, "rerank": 0.95}


@dataclass(frozen=True, slots=True)
class Budget:
    """A deadline (a :func:`time.monotonic` value) and the total it was set from."""

    start: float
    end: float

    @classmethod
    def of(cls, seconds: float) -> Budget:
        now = time.monotonic()
        return cls(now, now + seconds)

    @property
    def total(self) -> float:
        return self.end - self.start

    def remaining(self) -> float:
        return max(0.0, self.end - time.monotonic())

    def stage(self, name: str, *, cap: float | None = None) -> Budget:
        """The part of this budget stage ``name`` may use: up to its mark of the
        total, and no more than ``cap`` seconds from now when given."""
        end = min(self.end, self.start + STAGE_MARKS[name] * self.total)
        if cap is not None:
            end = min(end, time.monotonic() + cap)
        return Budget(self.start, end)


def timeout_of(component: object, default: float = 20.0) -> float:
    """The component's own per-call ``timeout`` in seconds, or ``default`` when
    it has none that is a positive number (a plugin's attribute is not trusted)."""
    value = getattr(component, "timeout", None)
    return float(value) if is_timeout(value) else default


class Overdue(RestyleError):
    """A component gave no answer by its deadline (the call was abandoned)."""

    def __init__(self, message: str, *, seconds: float) -> None:
        super().__init__(message)
        self.seconds = seconds


class ComponentBusy(RestyleError):
    """A component is still stuck in an earlier call that overran its deadline."""


_lock = threading.Lock()
# id(component) -> calls abandoned at their deadline that have not returned yet.
# The stuck thread holds a reference to the component, so the id stays its own.
_stuck: dict[int, int] = {}


def busy(component: object) -> bool:
    """True while an abandoned call of ``component`` is still running."""
    with _lock:
        return _stuck.get(id(component), 0) > 0


class _Outcome:
    __slots__ = ("abandoned", "done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.abandoned = False
        self.value: Any = None
        self.error: BaseException | None = None


def call(component: object, label: str, fn: Callable[..., T], *args: Any,
         deadline: float, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` run for ``component``, answered by ``deadline``
    (a :func:`time.monotonic` value).

    Raises :class:`ComponentBusy` without calling when an earlier call is still
    stuck, :class:`Overdue` when this one overran, and whatever ``fn`` raised.
    ``label`` names the call in messages and in the thread's name.
    """
    key = id(component)
    with _lock:
        if _stuck.get(key, 0):
            raise ComponentBusy(f"{label} is still busy with an earlier call that overran "
                                "its deadline")
    if deadline <= time.monotonic():
        raise Overdue(f"{label} was not called: no time was left", seconds=0.0)
    outcome = _Outcome()

    def run() -> None:
        try:
            outcome.value = fn(*args, **kwargs)
        except BaseException as exc:  # handed to the caller, which decides
            outcome.error = exc
        finally:
            with _lock:
                outcome.done.set()
                if outcome.abandoned:
                    left = _stuck[key] - 1
                    if left:
                        _stuck[key] = left
                    else:
                        del _stuck[key]

    started = time.monotonic()
    threading.Thread(target=run, name=f"restyle {label}", daemon=True).start()
    if not outcome.done.wait(max(0.0, deadline - started)):
        with _lock:
            if not outcome.done.is_set():
                outcome.abandoned = True
                _stuck[key] = _stuck.get(key, 0) + 1
        if outcome.abandoned:
            waited = time.monotonic() - started
            raise Overdue(f"{label} gave no answer within {waited:.1f} s", seconds=waited)
    if outcome.error is not None:
        if not isinstance(outcome.error, Exception):  # KeyboardInterrupt, SystemExit
            raise RestyleError(f"{label} stopped: {type(outcome.error).__name__}")
        raise outcome.error
    value: T = outcome.value
    return value

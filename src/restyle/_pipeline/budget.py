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

import contextvars
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from restyle._errors import RestyleError
from restyle._plugin.components import CALL_DEADLINE, is_timeout

__all__ = [
    "STAGE_MARKS",
    "Budget",
    "ComponentBusy",
    "Overdue",
    "Pending",
    "abandoned_calls",
    "busy",
    "call",
    "spawn",
    "start",
    "timeout_of",
]

logger = logging.getLogger("restyle")

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


def abandoned_calls() -> int:
    """How many component calls abandoned at their deadline are still running
    in this process (a program about to exit may have to end without waiting
    for them: see docs/guarantees.md)."""
    with _lock:
        return sum(_stuck.values())


#: Component calls one Engine may have running at once, whatever the nesting
#: (an expert that calls ``analyze`` again, calls stuck past their deadline).
MAX_CALLS = 64


class CallLimit:
    """The component calls one Engine has running; past :data:`MAX_CALLS` a
    new call is refused (:class:`ComponentBusy`) instead of starting a thread."""

    __slots__ = ("_lock", "limit", "running")

    def __init__(self, limit: int = MAX_CALLS) -> None:
        self._lock = threading.Lock()
        self.limit = limit
        self.running = 0

    def acquire(self, label: str) -> None:
        with self._lock:
            if self.running >= self.limit:
                raise ComponentBusy(
                    f"{label} was not called: this Engine already has {self.running} "
                    "component calls running (calls nested in components, or stuck)")
            self.running += 1

    def release(self) -> None:
        with self._lock:
            self.running -= 1


#: The call limit of the Engine whose pipeline runs in this thread.
CALL_LIMIT: contextvars.ContextVar[CallLimit] = contextvars.ContextVar("restyle_call_limit")


class _Workers:
    """Daemon threads reused across calls (starting a thread costs about a
    millisecond on a busy machine, several per analysis). A worker that finds
    no work for :data:`IDLE_SECONDS` ends; one stuck in a call stays stuck, and
    a new one is started for the next job, so stuck calls never block others."""

    IDLE_SECONDS = 30.0

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = 0  # workers waiting for a job that no submitter has claimed
        self._jobs: queue.SimpleQueue[Callable[[], object]] = queue.SimpleQueue()

    def submit(self, job: Callable[[], object]) -> None:
        with self._lock:
            claimed = self._idle > 0
            if claimed:
                self._idle -= 1
        self._jobs.put(job)
        if not claimed:
            threading.Thread(target=self._work, name="restyle worker", daemon=True).start()

    def _work(self) -> None:
        while True:
            try:
                job = self._jobs.get(timeout=self.IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:  # nobody is about to hand this worker a job
                        self._idle -= 1
                        return
                continue  # a submitter claimed a waiting worker: its job is on the way
            try:
                job()
            except BaseException:  # jobs report their own outcome; a worker never dies of one
                logger.exception("restyle worker job failed")
            with self._lock:
                self._idle += 1


_WORKERS = _Workers()


def spawn(target: Callable[[], object], *, name: str) -> threading.Event:
    """Run ``target`` on a daemon worker thread that sees this thread's context
    variables (the calling Engine's context among them); the event is set when
    it has finished. ``name`` names the thread while it runs ``target``."""
    context = contextvars.copy_context()
    done = threading.Event()

    def job() -> None:
        threading.current_thread().name = name
        try:
            context.run(target)
        finally:
            threading.current_thread().name = "restyle worker"
            done.set()

    _WORKERS.submit(job)
    return done


class Pending:
    """A component call in progress; :meth:`result` waits for it until its deadline."""

    __slots__ = ("_key", "_limit", "abandoned", "deadline", "done", "error", "label", "started",
                 "value")

    def __init__(self, key: int, label: str, deadline: float,
                 limit: CallLimit | None = None) -> None:
        self._key = key
        self._limit = limit
        self.label = label
        self.deadline = deadline
        self.started = time.monotonic()
        self.done = threading.Event()
        self.abandoned = False
        self.value: Any = None
        self.error: BaseException | None = None

    def _finish(self) -> None:
        if self._limit is not None:
            self._limit.release()
        with _lock:
            self.done.set()
            if self.abandoned:
                left = _stuck[self._key] - 1
                if left:
                    _stuck[self._key] = left
                else:
                    del _stuck[self._key]

    def result(self) -> Any:
        """The call's value; :class:`Overdue` at the deadline; what it raised."""
        if not self.done.wait(max(0.0, self.deadline - time.monotonic())):
            with _lock:
                if not self.done.is_set():
                    self.abandoned = True
                    _stuck[self._key] = _stuck.get(self._key, 0) + 1
            if self.abandoned:
                waited = time.monotonic() - self.started
                raise Overdue(f"{self.label} gave no answer within {waited:.1f} s",
                              seconds=waited)
        if self.error is not None:
            if not isinstance(self.error, Exception):  # KeyboardInterrupt, SystemExit
                raise RestyleError(f"{self.label} stopped: {type(self.error).__name__}")
            raise self.error
        return self.value


def start(component: object, label: str, fn: Callable[..., Any], *args: Any,
          deadline: float, check: Callable[[Any], Any] | None = None,
          **kwargs: Any) -> Pending:
    """Start ``fn(*args, **kwargs)`` for ``component``, to be answered by
    ``deadline`` (a :func:`time.monotonic` value).

    ``check``, when given, is applied to the value on the same worker thread,
    under the same deadline: a plugin's answer is read whole (a lazy iterable
    that stalls or never ends overruns there, not on the caller's thread),
    checked and copied into restyle's own types before the caller sees it.

    Raises :class:`ComponentBusy` without calling when an earlier call is still
    stuck or the calling Engine has :data:`MAX_CALLS` calls running, and
    :class:`Overdue` when no time is left. ``label`` names the call in
    messages and in the thread's name.
    """
    key = id(component)
    with _lock:
        if _stuck.get(key, 0):
            raise ComponentBusy(f"{label} is still busy with an earlier call that overran "
                                "its deadline")
    if deadline <= time.monotonic():
        raise Overdue(f"{label} was not called: no time was left", seconds=0.0)
    limit = CALL_LIMIT.get(None)
    if limit is not None:
        limit.acquire(label)
    pending = Pending(key, label, deadline, limit)

    def run() -> None:
        CALL_DEADLINE.set(deadline)
        try:
            value = fn(*args, **kwargs)
            pending.value = value if check is None else check(value)
        except BaseException as exc:  # handed to the caller, which decides
            pending.error = exc
        finally:
            pending._finish()

    try:
        spawn(run, name=f"restyle {label}")
    except BaseException:
        if limit is not None:
            limit.release()
        raise
    return pending


def call(component: object, label: str, fn: Callable[..., Any], *args: Any,
         deadline: float, check: Callable[[Any], T] | None = None, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` run for ``component`` and answered by ``deadline``
    (``check`` applied on the worker): :func:`start` and :meth:`Pending.result` in one."""
    value: T = start(component, label, fn, *args, deadline=deadline, check=check,
                     **kwargs).result()
    return value

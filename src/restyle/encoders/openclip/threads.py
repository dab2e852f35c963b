"""The one thread every model call runs on, and the accounting of torch work
that lets the interpreter's exit wait for it (see the package docstring)."""

from __future__ import annotations

import ctypes
import functools
import queue
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager, suppress
from typing import Any

from restyle._errors import EncoderError
from restyle._plugin.components import wait_time

__all__ = ["EXIT_WAIT_SECONDS"]

#: Longest the interpreter's exit waits for torch work in progress, in seconds.
EXIT_WAIT_SECONDS = 120.0


class _TorchWork:
    """Counts the torch work running on this module's threads, so that the
    interpreter's exit can wait for it (see the module docstring): torch code
    that releases the GIL and takes it back while the interpreter finalises
    makes a daemon thread unwind through C++ and aborts the process."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running = 0
        self.closing = False

    @contextmanager
    def section(self) -> Iterator[None]:
        with self._cond:
            if self.closing:
                raise EncoderError("the encoder is not available: the interpreter is exiting")
            self._running += 1
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

    def drain(self, timeout: float = EXIT_WAIT_SECONDS) -> bool:
        """Start no more work; wait for the work running. True when none is left."""
        with self._cond:
            self.closing = True
            return self._cond.wait_for(lambda: self._running == 0, timeout)


_TORCH_WORK = _TorchWork()
# Run at interpreter exit before daemon threads are frozen, as concurrent.futures does.
with suppress(AttributeError, RuntimeError):  # other interpreters; already exiting
    threading._register_atexit(_TORCH_WORK.drain)  # type: ignore[attr-defined]


def _wait(future: Future[Any], what: str) -> Any:
    """``future``'s result, waited for until the deadline of the component call
    running on this thread (without one, for as long as it takes). At the
    deadline the work is left to finish on its own and EncoderError raised."""
    try:
        return future.result(wait_time())
    except FutureTimeout:
        raise EncoderError(f"{what} did not finish within the call's deadline; it goes on "
                           "in the background") from None
    except CancelledError:
        raise EncoderError(f"{what} was cancelled") from None


class _ModelThread:
    """The one thread on which this module runs its models.

    torch's CPU operators run on OpenMP, which gives every thread that starts
    parallel work its own team of worker threads. Once a process holds more of
    them than it has CPUs, OpenMP puts them to sleep between operators instead
    of letting them spin, and a one-photo forward pass of ViT-B-32 takes half as
    long again. Loading and running every model on this thread keeps a single
    team however many threads ask for embeddings, and runs concurrent requests
    one after another instead of fighting over the same cores.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any], int | None]] = (
            queue.SimpleQueue())
        self._thread: threading.Thread | None = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """``fn(*args)`` started on the model thread (at once when called from it)."""
        if args:
            fn = functools.partial(fn, *args)
        future: Future[Any] = Future()
        if threading.current_thread() is self._thread:  # a model call inside one
            _settle(future, fn)
            return future
        with self._lock:
            if self._thread is None or not self._thread.is_alive():  # first use, or forked
                self._thread = threading.Thread(target=self._work, name="restyle-model",
                                                daemon=True)
                self._thread.start()
        self._jobs.put((fn, future, _torch_threads()))
        return future

    def run(self, fn: Callable[..., Any], *args: Any, what: str = "the model") -> Any:
        """``fn(*args)`` run on the model thread; waits for it until the
        deadline of the component call running on this thread, if any."""
        return _wait(self.submit(fn, *args), what)

    def _work(self) -> None:
        worked = False
        while True:
            try:
                fn, future, threads = self._jobs.get(timeout=_TRIM_AFTER if worked else None)
            except queue.Empty:  # idle for a while after some work
                _give_back_free_memory()
                worked = False
                continue
            worked = True
            if future.set_running_or_notify_cancel():
                try:
                    with _TORCH_WORK.section():
                        _follow_torch_threads(threads)
                        _settle(future, fn)
                except EncoderError as exc:  # exiting: the job is not started
                    future.set_exception(exc)


#: Seconds the model thread waits for more work before it gives the memory
#: its last batch freed back to the system.
_TRIM_AFTER = 0.5


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none."""
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def _give_back_free_memory() -> None:
    """Return the C heap's free pages to the system. A batch's activations
    (tens to hundreds of MB) are freed into glibc's heaps, which keep them:
    a warm Engine that once encoded a batch of comps would hold that much
    more than its model for good (measured by bench/engine_memory.py). Done
    only when the model thread has been idle a while: within a run of batches
    the memory is used again at once."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _torch_threads() -> int | None:
    """The OpenMP team size torch uses on the calling thread (None before torch
    is imported). OpenMP keeps one per thread: ``torch.set_num_threads`` on the
    application's thread does not reach a thread that was already running."""
    torch = sys.modules.get("torch")
    return None if torch is None else int(torch.get_num_threads())


def _follow_torch_threads(wanted: int | None) -> None:
    """Give the model thread the team size of the thread that asked for the work."""
    if wanted is not None and wanted != _torch_threads():
        sys.modules["torch"].set_num_threads(wanted)


def _settle(future: Future[Any], fn: Callable[[], Any]) -> None:
    try:
        future.set_result(fn())
    except BaseException as exc:  # handed to the caller, which decides
        future.set_exception(exc)


_MODEL_THREAD = _ModelThread()

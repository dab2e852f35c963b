"""The bounded queue in front of the Engine, and each request's deadline.

At most ``concurrency`` analyses run at once, on a pool of that many threads;
at most ``queue`` more wait for one. A request that finds the queue full is
refused at once (``busy``: 429); one that arrives while the service warms up
or shuts down too (``warming_up``, ``shutting_down``: 503). A request ends by
its deadline, counted from its arrival, waiting included: past it the client
gets ``timeout`` (504). An analysis answered with a 504 keeps its thread
until it ends (the Engine ends it by the same deadline), so the count of
work under way stays true.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

__all__ = ["Admission", "Refused"]

_T = TypeVar("_T")

#: How long past its deadline a request's work may take before the client is
#: answered 504 anyway: the Engine ends an analysis by its deadline, and this
#: is the slack for its last step.
SLACK = 1.0


class Refused(Exception):
    """A request not served: ``code`` is its error (one of the schema's ERRORS)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code


class Admission:
    """The service's slots and queue (one per app, used on its event loop)."""

    def __init__(self, *, concurrency: int, queue: int) -> None:
        self.concurrency = concurrency
        self.queue = queue
        self.ready = False
        self.draining = False
        self.running = 0
        self.waiting = 0
        self._slots = asyncio.Semaphore(concurrency)
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="restyle-serve")

    def admit(self) -> None:
        """Refuse now what cannot be served: not ready, shutting down, queue full."""
        if self.draining:
            raise Refused("shutting_down")
        if not self.ready:
            raise Refused("warming_up")
        if self.running + self.waiting >= self.concurrency + self.queue:
            raise Refused("busy")

    async def run(self, work: Callable[[], _T], *, ends: float) -> _T:
        """``work()`` on a free slot's thread, waiting for a slot until the monotonic
        clock reads ``ends``; its result, or Refused("timeout") once ``ends`` (plus the
        slack, for work already started) has passed."""
        loop = asyncio.get_running_loop()
        self.admit()
        self.waiting += 1
        try:
            await self._acquire(max(0.0, ends - time.monotonic()))
        finally:
            self.waiting -= 1
        self.running += 1
        call = functools.partial(contextvars.copy_context().run, work)
        future = loop.run_in_executor(self._pool, call)
        future.add_done_callback(self._release)
        try:
            return await asyncio.wait_for(asyncio.shield(future),
                                          max(0.0, ends + SLACK - time.monotonic()))
        except asyncio.TimeoutError:
            raise Refused("timeout") from None

    async def _acquire(self, timeout: float) -> None:
        """A slot within ``timeout`` seconds, else Refused("timeout"); a slot
        granted just as the wait ends (or is cancelled) is given back, never lost."""
        acquiring = asyncio.ensure_future(self._slots.acquire())
        try:
            done, _ = await asyncio.wait({acquiring}, timeout=timeout)
        except asyncio.CancelledError:
            self._give_back(acquiring)
            raise
        if not done:
            self._give_back(acquiring)
            raise Refused("timeout")

    def _give_back(self, acquiring: asyncio.Future[Any]) -> None:
        if not acquiring.cancel():  # it had already got the slot
            self._slots.release()

    def _release(self, _: object) -> None:
        self.running -= 1
        self._slots.release()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

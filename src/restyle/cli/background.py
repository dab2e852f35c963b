"""An iterator of results run on a thread of its own, so that the command's
main thread only waits for the next result: Ctrl-C reaches it at once, not
after the analyses under way finish, and the command ends within a second
(its process does not wait for them: see ``restyle.cli.main``)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from types import TracebackType
from typing import Generic, TypeVar

__all__ = ["Background"]

T = TypeVar("T")

#: Seconds between the producer's looks at whether it should stop.
_POLL = 0.1


class _End:
    """The iterator is done (``error`` None) or failed with ``error``."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error


class Background(Generic[T]):
    """``with Background(iterator) as results: results.next()``: the iterator is
    advanced on a daemon thread, at most one result ahead of its reader.

    Leaving the block normally or on an error stops the thread and waits for
    it (a generator is closed on its own thread, while what it uses is still
    there); leaving it on KeyboardInterrupt stops it without waiting.
    """

    def __init__(self, items: Iterator[T]) -> None:
        self._items = items
        self._queue: queue.Queue[T | _End] = queue.Queue(maxsize=1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="restyle results", daemon=True)

    def __enter__(self) -> Background[T]:
        self._thread.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if kind is None or not issubclass(kind, KeyboardInterrupt):
            self._thread.join()

    def next(self) -> T:
        """The next result; StopIteration when there is none; the iterator's error."""
        item = self._queue.get()
        if isinstance(item, _End):
            self._queue.put(item)  # for a later call
            if item.error is not None:
                raise item.error
            raise StopIteration
        return item

    def _put(self, item: T | _End) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        end = _End()
        try:
            for item in self._items:
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the reader, raised there
            end = _End(exc)
        finally:
            if isinstance(self._items, Generator):
                self._items.close()
        self._put(end)

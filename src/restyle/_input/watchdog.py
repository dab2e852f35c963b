"""Fetches ended at their deadlines whatever the server does: one watchdog
thread shuts down the sockets of every fetch whose deadline has passed, which
wakes a read blocked anywhere (TLS handshake, status line, headers, chunk
sizes, body), and the connection pools that hand it their sockets.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import socket
import threading
import time
from typing import Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection

__all__ = ["WATCHDOG", "HTTPPool", "HTTPSPool", "Watch"]


class Watch:
    """The sockets of one fetch, shut down by the watchdog at the fetch's deadline.
    Its state changes only under the watchdog's lock."""

    __slots__ = ("_sockets", "closed", "expired")

    def __init__(self) -> None:
        self.expired = False
        self.closed = False
        self._sockets: list[socket.socket] = []

    def attach(self, sock: socket.socket) -> None:
        # A duplicate, because TLS detaches the original object from its file
        # descriptor; shutting the duplicate down ends the same connection, and
        # since only this watch closes it, its number cannot be reused under us.
        copy = sock.dup()
        with WATCHDOG.lock:
            if not self.closed:
                self._sockets.append(copy)
                if self.expired:
                    self._shut()
                return
        copy.close()

    def close(self) -> None:
        WATCHDOG.release(self)

    def _expire(self) -> None:
        self.expired = True
        self._shut()

    def _shut(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):  # already gone
                sock.shutdown(socket.SHUT_RDWR)

    def _close(self) -> None:
        self.closed = True
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()


class _Watchdog:
    """One daemon thread for every fetch in flight: it waits for the earliest
    deadline and shuts that fetch's sockets down, which makes any recv, send or
    handshake blocked on them return at once. Per-read socket timeouts cannot do
    this: a server sending a byte a second resets them forever. The thread ends
    when nothing is watched."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._wake = threading.Condition(self.lock)
        self._heap: list[tuple[float, int, Watch]] = []
        self._order = itertools.count()
        self._live = 0
        self._thread: threading.Thread | None = None

    def watch(self, deadline: float) -> Watch:
        watch = Watch()
        with self.lock:
            heapq.heappush(self._heap, (deadline, next(self._order), watch))
            self._live += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="restyle-fetch-watchdog")
                self._thread.start()
            elif self._heap[0][2] is watch:
                self._wake.notify()
        return watch

    def release(self, watch: Watch) -> None:
        with self.lock:
            if watch.closed:
                return
            watch._close()
            self._live -= 1
            if self._live == 0:
                # Finished watches are dropped lazily; with none live, drop them
                # all so the thread can end now rather than at the last deadline.
                self._heap.clear()
                self._wake.notify()

    def _run(self) -> None:
        with self.lock:
            while True:
                while self._heap and self._heap[0][2].closed:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._thread = None
                    return
                deadline, _, watch = self._heap[0]
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._wake.wait(delay)
                    continue
                heapq.heappop(self._heap)
                watch._expire()


WATCHDOG = _Watchdog()


class _WatchedHTTPConnection(HTTPConnection):
    """Hands its socket to the fetch's watch as soon as the TCP connection exists,
    before the TLS handshake, so the watchdog covers every step after connect
    (connect itself is bounded by its own timeout)."""

    def __init__(self, *args: Any, watch: Watch, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._watch = watch

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        try:
            self._watch.attach(sock)
        except BaseException:
            sock.close()  # not yet the connection's: nobody else would close it
            raise
        return sock


class _WatchedHTTPSConnection(_WatchedHTTPConnection, HTTPSConnection):
    pass


class HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection

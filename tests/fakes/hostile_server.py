"""A raw-socket server on 127.0.0.1 that misbehaves below HTTP, for testing deadlines.

Each path is answered by a script that writes raw bytes: drip the status line,
a header or a chunk-size line one byte at a time, stream a body that never
ends, lie about Content-Length and hang, reset the connection mid-body, or
never answer. Every script ends when the client hangs up or the server stops,
so no thread outlives the server.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Callable

#: ``(connection, stop) -> None``: writes one answer, raw.
Script = Callable[[socket.socket, threading.Event], None]

OK_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n"


def drip(head: bytes, piece: bytes, every: float = 0.05) -> Script:
    """Send ``head``, then ``piece`` every ``every`` seconds, forever: each
    piece arrives well within any per-read timeout."""

    def script(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(head)
        while not stop.wait(every):
            conn.sendall(piece)

    return script


def hang_after(head: bytes) -> Script:
    """Send ``head``, then nothing until the client gives up."""

    def script(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(head)
        wait_for_hangup(conn, stop)

    return script


def reset_after(head: bytes) -> Script:
    """Send ``head``, then reset the connection (TCP RST)."""

    def script(conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(head)
        stop.wait(0.05)
        # SO_LINGER with a zero timeout makes close() send a TCP RST.
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))

    return script


def silent(conn: socket.socket, stop: threading.Event) -> None:
    """Accept and never answer."""
    wait_for_hangup(conn, stop)


def wait_for_hangup(conn: socket.socket, stop: threading.Event) -> None:
    conn.settimeout(0.05)
    while not stop.is_set():
        try:
            if not conn.recv(4096):
                return
        except TimeoutError:
            continue


class HostileServer:
    """Answers each path with its script; a single script answers every
    connection as soon as it is accepted, without reading (a TLS client then
    waits for a handshake that never comes). Use as a context manager."""

    def __init__(self, scripts: dict[str, Script] | Script) -> None:
        self.scripts = scripts
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._handlers: list[threading.Thread] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self._thread = threading.Thread(target=self._accept, name="hostile-server", daemon=True)

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def url(self, path: str = "/", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> HostileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()
        with self._lock:
            connections = list(self._connections)
            handlers = list(self._handlers)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for handler in handlers:
            handler.join(timeout=5)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            handler = threading.Thread(target=self._serve, args=(conn,), daemon=True,
                                       name="hostile-server-handler")
            with self._lock:
                self._connections.add(conn)
                self._handlers = [h for h in self._handlers if h.is_alive()]
                self._handlers.append(handler)
            handler.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            script = self.scripts if callable(self.scripts) else self._script_for(conn)
            if script is not None:
                script(conn, self._stop)
        except OSError:  # the client hung up, which is what the tests provoke
            pass
        finally:
            with self._lock:
                self._connections.discard(conn)
            conn.close()

    def _script_for(self, conn: socket.socket) -> Script | None:
        assert isinstance(self.scripts, dict)
        head = b""
        conn.settimeout(5)
        while b"\r\n\r\n" not in head:
            data = conn.recv(4096)
            if not data:
                return None
            head += data
        path = head.split(b" ", 2)[1].decode("latin-1").split("?")[0]
        script = self.scripts.get(path)
        if script is None:
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            return None
        conn.settimeout(None)
        return script

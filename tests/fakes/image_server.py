"""A fake image host on 127.0.0.1 with fault injection, for fetching tests and benchmarks.

Each path is scripted with a :class:`Route`: serve bytes (optionally after a
delay), hang, reset the connection, drip bytes slowly, lie about
Content-Length, send the wrong content type, or redirect. The server records
every request and releases hanging handlers when it stops, so no thread
outlives it.
"""

from __future__ import annotations

import contextlib
import io
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image


def jpeg_bytes(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (64, 64),
               *, pattern: int = 0) -> bytes:
    """A small JPEG of one colour (``pattern`` adds a stripe so images can differ slightly)."""
    img = Image.new("RGB", size, color)
    if pattern:
        for x in range(size[0]):
            img.putpixel((x, pattern % size[1]), (255 - color[0], 255 - color[1], 255 - color[2]))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


@dataclass
class Route:
    """How the server answers one path."""

    body: bytes = b""
    status: int = 200
    content_type: str = "image/jpeg"
    delay: float = 0.0
    hang: bool = False
    reset: bool = False
    drip: float = 0.0  # seconds between single bytes
    content_length: int | None = None  # a lie when set; -1 sends no Content-Length
    location: str | None = None  # answer a redirect to here
    headers: dict[str, str] = field(default_factory=dict)


class FakeImageServer:
    """A threaded HTTP server on 127.0.0.1; use as a context manager."""

    def __init__(self, routes: dict[str, Route] | None = None, *, latency: float = 0.0,
                 tls: tuple[str, str] | None = None) -> None:
        self.routes: dict[str, Route] = dict(routes or {})
        self.latency = latency
        self.requests: list[tuple[str, dict[str, str]]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def handle(self) -> None:
                # The client hanging up early is what several tests provoke.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError, TimeoutError):
                    super().handle()

            def do_GET(self) -> None:
                with server._lock:
                    server.requests.append((self.path, dict(self.headers.items())))
                    server.active += 1
                    server.max_active = max(server.max_active, server.active)
                try:
                    server._answer(self)
                except (BrokenPipeError, ConnectionResetError, TimeoutError):
                    pass
                finally:
                    with server._lock:
                        server.active -= 1

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = False
        self._httpd.block_on_close = True
        self.scheme = "http"
        if tls is not None:
            import ssl

            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
            self.scheme = "https"
        self._thread = threading.Thread(target=self._httpd.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def paths(self) -> list[str]:
        with self._lock:
            return [path for path, _ in self.requests]

    def __enter__(self) -> FakeImageServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()  # joins every handler thread
        self._thread.join(timeout=5)

    def _answer(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?")[0]
        route = self.routes.get(path)
        if self.latency:
            self._stop.wait(self.latency)
        if route is None:
            self._send(handler, 404, b"not found", "text/plain")
            return
        if route.delay:
            self._stop.wait(route.delay)
        if route.hang:
            self._stop.wait(30)
            return
        if route.reset:
            # SO_LINGER with a zero timeout makes close() send a TCP RST.
            handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                          struct.pack("ii", 1, 0))
            handler.connection.close()
            handler.close_connection = True
            return
        if route.location is not None:
            handler.send_response(route.status if route.status in (301, 302, 303, 307, 308)
                                  else 302)
            handler.send_header("Location", route.location)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        length = route.content_length if route.content_length is not None else len(route.body)
        handler.send_response(route.status)
        handler.send_header("Content-Type", route.content_type)
        if length >= 0:
            handler.send_header("Content-Length", str(length))
        for key, value in route.headers.items():
            handler.send_header(key, value)
        handler.end_headers()
        if route.drip:
            for i in range(len(route.body)):
                if self._stop.wait(route.drip):
                    return
                handler.wfile.write(route.body[i : i + 1])
                handler.wfile.flush()
        else:
            handler.wfile.write(route.body)
        handler.close_connection = True

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, body: bytes, kind: str) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", kind)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)


def wait_until(predicate, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()

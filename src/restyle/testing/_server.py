"""A fake web service on 127.0.0.1 for testing code that talks HTTP: marketplace APIs,
image hosts, cloud services; with the faults real servers have, down to the socket.

:class:`FakeServer` answers each request with a :class:`Reply` chosen by a
responder function, a script, or a mapping of paths, and records every
:class:`Request`. A reply can be slow, hang, reset the connection, drip its
body, lie about its length, redirect, or hand the raw socket to the test.
Stopping the server releases every waiting handler and closes every
connection, so no thread outlives it.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from socketserver import TCPServer
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

from PIL import Image

__all__ = ["FakeServer", "Raw", "Reply", "Request", "Responder", "image_bytes"]

#: Takes over a connection once its request was read: ``raw(connection, stopping)``
#: writes whatever bytes it likes and returns when done, when the client hangs up
#: (an ``OSError``), or soon after ``stopping`` is set; the server then closes it.
Raw = Callable[[socket.socket, threading.Event], None]

_SIGNATURES = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


@dataclass(frozen=True, kw_only=True, slots=True)
class Reply:
    """How the server answers one request.

    ``body`` may be bytes (sent as ``image/jpeg``, ``image/png``, ``image/gif``
    or ``image/webp`` when they start like one, else ``application/octet-stream``),
    a str (``text/plain``) or a dict or list (sent as JSON); ``content_type``
    overrides the type. The faults, in the order they apply:

    - ``delay``: seconds to wait before answering.
    - ``hang``: never answer; the connection is dropped when the client hangs
      up or the server stops.
    - ``reset``: reset the connection (TCP RST) instead of answering.
    - ``raw``: hand the connection to this function instead of answering.
    - ``location``: redirect there (HTTP 302 unless ``status`` is a 3xx).
    - ``content_length``: send this Content-Length whatever the body's length,
      or none at all when -1; the connection is then closed after the body.
    - ``drip``: send the body one byte at a time, this many seconds apart.
    """

    status: int = 200
    body: bytes | str | dict[str, Any] | list[Any] | None = None
    content_type: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    hang: bool = False
    reset: bool = False
    drip: float = 0.0
    content_length: int | None = None
    location: str | None = None
    raw: Raw | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.body, (bytes, str, dict, list, type(None))):
            raise TypeError(f"a Reply body is bytes, str, dict, list or None, "
                            f"not {type(self.body).__name__}")


@dataclass(frozen=True, kw_only=True, slots=True)
class Request:
    """One request the server received. Header names are lower-case."""

    method: str
    path: str  # with the query string
    headers: Mapping[str, str]
    body: bytes = b""

    @property
    def route(self) -> str:
        """The path without its query string: what the routes mapping is keyed by."""
        return urlsplit(self.path).path

    @property
    def query(self) -> dict[str, str]:
        """The query string's parameters (the last value of a repeated one)."""
        return dict(parse_qsl(urlsplit(self.path).query, keep_blank_values=True))

    def json(self) -> Any:
        return json.loads(self.body)


#: Chooses the reply to a request.
Responder = Callable[[Request], Reply]

_NOT_FOUND = Reply(status=404, body="not found")


class FakeServer:
    """A threaded HTTP/1.1 server on 127.0.0.1, answering from one of:

    - ``FakeServer(responder=fn)``: ``fn(request)`` returns the Reply;
    - ``FakeServer(reply, ...)``: the replies in order, the last one repeating
      (:meth:`script` replaces them while the server runs);
    - ``FakeServer(routes={"/a.jpg": Reply(...)})``: the reply of the request's
      path, query string ignored, 404 for other paths. :attr:`routes` stays a
      mutable dict, and a server given nothing answers from it, empty at first.

    ``tls=(certfile, keyfile)`` serves https. Use it as a context manager, or
    call :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        *replies: Reply,
        routes: Mapping[str, Reply] | None = None,
        responder: Responder | None = None,
        tls: tuple[str, str] | None = None,
    ) -> None:
        if sum(bool(x) for x in (replies, routes is not None, responder is not None)) > 1:
            raise TypeError("give a FakeServer replies, routes or a responder, not several")
        self.routes: dict[str, Reply] = dict(routes or {})
        self._responder = responder
        self._script: list[Reply] = list(replies)
        self._requests: list[Request] = []
        self._active = 0
        self._max_active = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()
        self._started = False
        self._httpd = _HTTPServer(("127.0.0.1", 0), _handler_for(self))
        self.scheme = "http"
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            # The handshake happens in the handler thread, so that a client
            # that never sends one cannot stall the accepting thread.
            self._httpd.socket = context.wrap_socket(
                self._httpd.socket, server_side=True, do_handshake_on_connect=False
            )
            self.scheme = "https"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),
                                        name="restyle-fake-server", daemon=True)

    # -- addresses ----------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` (or https), without a trailing slash."""
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def url(self, path: str = "/") -> str:
        return self.base_url + path

    # -- what it answers and what it saw -----------------------------------------

    def script(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies`` in order, the last one
        repeating, instead of the responder or the routes; ``script()`` with
        none goes back to the routes."""
        with self._lock:
            self._script = list(replies)
            self._responder = None

    @property
    def requests(self) -> list[Request]:
        """Every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def paths(self) -> list[str]:
        """The path (with query string) of every request received so far."""
        return [request.path for request in self.requests]

    @property
    def active(self) -> int:
        """How many requests are being answered now."""
        return self._active

    @property
    def max_active(self) -> int:
        """The most requests that were ever being answered at once."""
        return self._max_active

    # -- life ---------------------------------------------------------------------

    def start(self) -> FakeServer:
        self._started = True
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, release every handler that waits or drips, close every
        connection and wait for every handler thread to end."""
        self._stopping.set()
        if self._started:
            self._httpd.shutdown()
            self._thread.join()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed
                connection.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        left = self._httpd.join_handlers(timeout=10.0)
        if left:
            raise RuntimeError(f"{left} FakeServer handler thread(s) still running 10 s after "
                               f"stop: a responder or raw function that does not return?")

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<FakeServer {self.base_url}>"

    # -- serving ------------------------------------------------------------------

    def _opened(self, connection: socket.socket) -> bool:
        with self._lock:
            if self._stopping.is_set():
                return False
            self._connections.add(connection)
            return True

    def _closed(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.discard(connection)

    def _received(self, request: Request) -> Reply:
        with self._lock:
            self._requests.append(request)
            self._active += 1
            self._max_active = max(self._max_active, self._active)
            responder = self._responder
            if responder is None and self._script:
                return self._script.pop(0) if len(self._script) > 1 else self._script[0]
        if responder is None:
            return self.routes.get(request.route, _NOT_FOUND)
        try:
            reply = responder(request)
        except Exception as exc:  # a bug in the test's responder: say so to the client
            return Reply(status=500, body=f"the responder raised {type(exc).__name__}: {exc}")
        if not isinstance(reply, Reply):
            return Reply(status=500, body=f"the responder returned {type(reply).__name__}, "
                                          f"not a Reply")
        return reply

    def _answered(self) -> None:
        with self._lock:
            self._active -= 1


class _HTTPServer(HTTPServer):
    """Serves each connection on a thread of its own, and joins them all on close."""

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._handlers: list[threading.Thread] = []

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up in DNS; 127.0.0.1 needs no name.
        TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        # Daemon threads, so that one left waiting by a server never stopped
        # cannot hold up interpreter exit; FakeServer.stop joins them.
        thread = threading.Thread(target=self._serve, args=(request, client_address),
                                  name="restyle-fake-server-handler", daemon=True)
        self._handlers = [t for t in self._handlers if t.is_alive()]
        self._handlers.append(thread)
        thread.start()

    def _serve(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def join_handlers(self, timeout: float) -> int:
        """Wait up to ``timeout`` seconds for every handler thread; how many are left."""
        end = time.monotonic() + timeout
        for thread in self._handlers:
            thread.join(max(0.0, end - time.monotonic()))
        return sum(thread.is_alive() for thread in self._handlers)


def _handler_for(server: FakeServer) -> type[BaseHTTPRequestHandler]:
    """The request handler class of ``server``."""
    return type("Handler", (_Handler,), {"fake": server})


class _Handler(BaseHTTPRequestHandler):
    """Answers each request as its :class:`FakeServer` (``fake``) says."""

    fake: ClassVar[FakeServer]
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: without TCP_NODELAY each
    # kept-alive request would wait ~40 ms on the client's delayed ACK.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
        pass

    def setup(self) -> None:
        if not self.fake._opened(self.request):
            self.request.shutdown(socket.SHUT_RDWR)
        super().setup()

    def handle(self) -> None:
        # Clients hanging up early, and the server closing connections as it
        # stops, are what tests provoke.
        with contextlib.suppress(OSError):
            if isinstance(self.request, ssl.SSLSocket):
                self.request.do_handshake()
            super().handle()

    def finish(self) -> None:
        self.fake._closed(self.request)
        with contextlib.suppress(OSError):
            super().finish()

    def serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        request = Request(method=self.command, path=self.path, body=body,
                          headers={k.lower(): v for k, v in self.headers.items()})
        reply = self.fake._received(request)
        try:
            self.answer(reply)
        finally:
            self.fake._answered()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = serve

    def answer(self, reply: Reply) -> None:
        if self.misbehave(reply):
            self.close_connection = True
            return
        data, content_type = _encode(reply)
        self.send_head(reply, len(data), content_type)
        if not reply.drip:
            self.wfile.write(data)
            return
        for i in range(len(data)):
            if self.fake._stopping.wait(reply.drip):
                return
            self.wfile.write(data[i : i + 1])

    def misbehave(self, reply: Reply) -> bool:
        """Whether ``reply`` is a fault (a delay cut short by the server
        stopping, a hang, a reset, raw bytes), acted out here, instead of a
        response."""
        stopping = self.fake._stopping
        if reply.delay and stopping.wait(reply.delay):
            return True
        if reply.hang:
            self.wait_for_hangup()
            return True
        if reply.reset:
            # SO_LINGER with a zero timeout makes close() send a TCP RST.
            self.request.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
            self.request.close()
            return True
        if reply.raw is not None:
            try:
                reply.raw(self.request, stopping)
            finally:
                self.request.close()
            return True
        return False

    def send_head(self, reply: Reply, size: int, content_type: str | None) -> None:
        """The status line and headers of ``reply``, whose body is ``size`` bytes."""
        status = reply.status
        if reply.location is not None and not 300 <= status < 400:
            status = 302
        self.send_response(status)
        if reply.location is not None:
            self.send_header("Location", reply.location)
        named = {name.lower() for name in reply.headers}
        if content_type is not None and "content-type" not in named:
            self.send_header("Content-Type", content_type)
        length = size if reply.content_length is None else reply.content_length
        if length >= 0:
            self.send_header("Content-Length", str(length))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.content_length is not None or reply.drip:
            # A body of wrong or no length ends only when the connection does, and a
            # dripping one may be cut off half-way: neither connection can be reused.
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()

    def wait_for_hangup(self) -> None:
        """Return when the client hangs up or the server stops."""
        self.request.settimeout(0.05)
        while not self.fake._stopping.is_set():
            try:
                if not self.request.recv(4096):
                    return
            except TimeoutError:
                continue


def _encode(reply: Reply) -> tuple[bytes, str | None]:
    """The body as sent, and its content type (None for no body and no type)."""
    body = reply.body
    if body is None:
        return b"", reply.content_type
    if isinstance(body, bytes):
        return body, reply.content_type or _sniff(body)
    if isinstance(body, str):
        return body.encode(), reply.content_type or "text/plain; charset=utf-8"
    return json.dumps(body).encode(), reply.content_type or "application/json"


def _sniff(data: bytes) -> str:
    for signature, kind in _SIGNATURES:
        if data.startswith(signature):
            return kind
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def image_bytes(
    color: tuple[int, int, int] = (200, 30, 30),
    size: tuple[int, int] = (64, 64),
    format: str = "JPEG",
) -> bytes:
    """An image of one colour, encoded as ``format`` (JPEG, PNG, WebP, GIF ...):
    something for a fake image host to serve. The same arguments give the same bytes."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=format,
                                       **({"quality": 95} if format.upper() == "JPEG" else {}))
    return buffer.getvalue()

"""Fake Google Cloud Vision endpoints on 127.0.0.1, for REST and for gRPC.

:class:`FakeVision` speaks the REST wire format the official client uses;
:class:`FakeVisionGrpc` serves ``ImageAnnotator.BatchAnnotateImages`` over gRPC
with TLS, as the client's default transport expects. Both record every request
and answer from the same script: a payload, an error, malformed JSON or a hang.
A hang ends by itself when the fake stops, so no thread outlives a test.
"""

from __future__ import annotations

import base64
import json
import threading
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import grpc
from google.cloud.vision_v1 import BatchAnnotateImagesRequest, BatchAnnotateImagesResponse

ANNOTATE_PATH = "/v1/images:annotate"
GRPC_SERVICE = "google.cloud.vision.v1.ImageAnnotator"
GRPC_METHOD = "BatchAnnotateImages"

#: A realistic answer for a photo of a pair of sneakers, as Vision sends it:
#: web entity scores above 1, HTML in page titles, zero fields left out.
SNEAKER_RESPONSE: dict[str, Any] = {
    "webDetection": {
        "webEntities": [
            {"entityId": "/m/0bqlgn", "score": 1.4523, "description": "Nike Air Max"},
            {"entityId": "/m/09kx5", "score": 0.9121, "description": "Sneakers"},
            {"entityId": "/g/11bc6", "score": 0.3561, "description": "Nike Air Max 90"},
            {"entityId": "/m/0x2"},
        ],
        "fullMatchingImages": [{"url": "https://img.example.com/full.jpg"}],
        "pagesWithMatchingImages": [
            {
                "url": "https://shop.example.com/p/1",
                "pageTitle": "<b>Nike Air Max 90</b> Men&#39;s Shoes &amp; More",
                "fullMatchingImages": [{"url": "https://img.example.com/full.jpg"}],
            },
            {
                "url": "https://blog.example.com/x",
                "pageTitle": "Best <b>sneakers</b> of 2024",
                "partialMatchingImages": [{"url": "https://img.example.com/part.jpg"}],
            },
        ],
        "visuallySimilarImages": [
            {"url": "https://img.example.com/sim1.jpg"},
            {"url": "https://img.example.com/sim2.jpg"},
        ],
        "bestGuessLabels": [{"label": "nike air max 90", "languageCode": "en"}],
    },
    "localizedObjectAnnotations": [
        {
            "mid": "/m/06rrc",
            "name": "Shoe",
            "score": 0.92,
            "boundingPoly": {
                "normalizedVertices": [
                    {"y": 0.1},
                    {"x": 0.5, "y": 0.1},
                    {"x": 0.5, "y": 0.6},
                    {"y": 0.6},
                ]
            },
        }
    ],
    "logoAnnotations": [
        {
            "mid": "/m/0lwkh",
            "description": "Nike",
            "score": 0.88,
            "boundingPoly": {
                "vertices": [{"x": 16, "y": 8}, {"x": 48, "y": 8},
                             {"x": 48, "y": 24}, {"x": 16, "y": 24}]
            },
        }
    ],
    "textAnnotations": [
        {"locale": "en", "description": "AIR MAX\nCW2288-111\nAIR MAX\n"},
        {"description": "AIR"},
    ],
}


@dataclass
class Recorded:
    """One request the fake received."""

    path: str
    query: str
    headers: dict[str, str]
    body: dict[str, Any]

    @property
    def features(self) -> list[int]:
        return [f.get("type") for f in self.body["requests"][0]["features"]]

    @property
    def image(self) -> bytes:
        return base64.b64decode(self.body["requests"][0]["image"]["content"])


@dataclass
class Reply:
    """What the fake answers to one request."""

    status: int = 200
    body: bytes = b""
    hang: bool = False


def payload(*responses: dict[str, Any]) -> Reply:
    return Reply(body=json.dumps({"responses": list(responses)}).encode())


def error(status: int, message: str, grpc_status: str) -> Reply:
    envelope = {"error": {"code": status, "message": message, "status": grpc_status}}
    return Reply(status=status, body=json.dumps(envelope).encode())


def malformed() -> Reply:
    return Reply(body=b'{"responses": [{"webDetection": {"webEntities": [')


def hang() -> Reply:
    return Reply(hang=True)


class _Scripted:
    """Replies served in order, the last one repeating; shared by both fakes."""

    replies: list[Reply]
    _lock: threading.Lock
    _served: int

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self.replies = list(replies)
            self._served = 0

    def _next(self) -> Reply:
        with self._lock:
            reply = self.replies[min(self._served, len(self.replies) - 1)]
            self._served += 1
            return reply


@dataclass
class FakeVision(_Scripted):
    """Serves scripted replies in order; the last one repeats."""

    replies: list[Reply] = field(default_factory=lambda: [payload(SNEAKER_RESPONSE)])
    requests: list[Recorded] = field(default_factory=list)
    #: The longest a hang lasts if the fake is never stopped.
    max_hang: float = 10.0

    def __post_init__(self) -> None:
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._served = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers

            def do_POST(self) -> None:
                fake._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = False
        self._server.block_on_close = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,),
                                        daemon=True, name="fake-vision")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length)
        self.requests.append(Recorded(
            path=url.path, query=url.query,
            headers={k.lower(): v for k, v in handler.headers.items()},
            body=json.loads(raw or b"{}"),
        ))
        if url.path != ANNOTATE_PATH:
            reply = error(404, f"no route {url.path}", "NOT_FOUND")
        else:
            reply = self._next()
        if reply.hang:
            self._stopping.wait(self.max_hang)
            return
        try:
            handler.send_response(reply.status)
            handler.send_header("Content-Type", "application/json; charset=UTF-8")
            handler.send_header("Content-Length", str(len(reply.body)))
            handler.end_headers()
            handler.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up first, as it should on a timeout

    def __enter__(self) -> FakeVision:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()  # joins the handler threads
        self._thread.join()


@dataclass
class GrpcRecorded:
    """One call the gRPC fake received: the request message and the call's metadata."""

    request: BatchAnnotateImagesRequest
    metadata: dict[str, str]

    @property
    def features(self) -> list[str]:
        return [f.type_.name for f in self.request.requests[0].features]

    @property
    def image(self) -> bytes:
        return bytes(self.request.requests[0].image.content)


class FakeVisionGrpc(_Scripted):
    """``ImageAnnotator.BatchAnnotateImages`` over gRPC with TLS; a context manager.

    It answers the same scripted :class:`Reply` objects as :class:`FakeVision`:
    a payload becomes a ``BatchAnnotateImagesResponse``, an error the gRPC status
    its envelope names (``RESOURCE_EXHAUSTED`` ...). The last reply repeats.
    """

    def __init__(self, tls: tuple[str, str], *replies: Reply, max_hang: float = 10.0) -> None:
        cert, key = tls
        with open(cert, "rb") as f_cert, open(key, "rb") as f_key:
            identity = (f_key.read(), f_cert.read())
        self.replies: list[Reply] = list(replies) or [payload(SNEAKER_RESPONSE)]
        self.requests: list[GrpcRecorded] = []
        self.max_hang = max_hang
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._served = 0
        self._pool = futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="fake-vision")
        self._server = grpc.server(self._pool)
        handler = grpc.method_handlers_generic_handler(GRPC_SERVICE, {
            GRPC_METHOD: grpc.unary_unary_rpc_method_handler(
                self._annotate,
                request_deserializer=BatchAnnotateImagesRequest.deserialize,
                response_serializer=BatchAnnotateImagesResponse.serialize,
            ),
        })
        self._server.add_generic_rpc_handlers((handler,))
        self.port = self._server.add_secure_port(
            "127.0.0.1:0", grpc.ssl_server_credentials([identity])
        )

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _annotate(
        self, request: BatchAnnotateImagesRequest, context: grpc.ServicerContext
    ) -> BatchAnnotateImagesResponse:
        self.requests.append(GrpcRecorded(
            request=request, metadata={k: str(v) for k, v in context.invocation_metadata()},
        ))
        reply = self._next()
        if reply.hang:
            self._stopping.wait(self.max_hang)
            context.abort(grpc.StatusCode.UNAVAILABLE, "the fake stopped")
        if reply.status != 200:
            envelope = json.loads(reply.body)["error"]
            context.abort(grpc.StatusCode[envelope["status"]], envelope["message"])
        return BatchAnnotateImagesResponse.from_json(reply.body)

    def __enter__(self) -> FakeVisionGrpc:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._server.stop(grace=None).wait()
        self._pool.shutdown(wait=True)

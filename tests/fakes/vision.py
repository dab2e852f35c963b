"""Fake Google Cloud Vision endpoints on 127.0.0.1, for REST and for gRPC.

:class:`FakeVision` speaks the REST wire format the official client uses, as a
responder on :class:`restyle.testing.FakeServer`; :class:`FakeVisionGrpc` serves
``ImageAnnotator.BatchAnnotateImages`` over gRPC with TLS, as the client's
default transport expects. Both record every request and answer from the same
script of Replies: a payload, an error, malformed JSON or a hang. A hang ends
when the fake stops, so no thread outlives a test.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Mapping
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from google.cloud.vision_v1 import BatchAnnotateImagesRequest, BatchAnnotateImagesResponse

from restyle.testing import FakeServer, Reply, Request

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


@dataclass(frozen=True)
class Annotation:
    """One annotate call the REST fake received."""

    request: Request

    @property
    def path(self) -> str:
        return self.request.route

    @property
    def headers(self) -> Mapping[str, str]:
        return self.request.headers

    @property
    def body(self) -> dict[str, Any]:
        return self.request.json()  # type: ignore[no-any-return]

    @property
    def features(self) -> list[int]:
        return [f.get("type") for f in self.body["requests"][0]["features"]]

    @property
    def image(self) -> bytes:
        return base64.b64decode(self.body["requests"][0]["image"]["content"])


def payload(*responses: dict[str, Any]) -> Reply:
    return Reply(body={"responses": list(responses)})


def error(status: int, message: str, grpc_status: str) -> Reply:
    return Reply(status=status,
                 body={"error": {"code": status, "message": message, "status": grpc_status}})


def malformed() -> Reply:
    return Reply(body=b'{"responses": [{"webDetection": {"webEntities": [',
                 content_type="application/json; charset=UTF-8")


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


class FakeVision(_Scripted):
    """The REST endpoint: a FakeServer whose responder answers ``POST
    /v1/images:annotate`` from the script, and other paths with a 404 in
    Google's envelope. A context manager."""

    def __init__(self, *replies: Reply) -> None:
        self.replies = list(replies) or [payload(SNEAKER_RESPONSE)]
        self._lock = threading.Lock()
        self._served = 0
        self.server = FakeServer(responder=self.answer)

    def answer(self, request: Request) -> Reply:
        if request.route != ANNOTATE_PATH:
            return error(404, f"no route {request.route}", "NOT_FOUND")
        return self._next()

    @property
    def endpoint(self) -> str:
        return self.server.base_url

    @property
    def requests(self) -> list[Annotation]:
        return [Annotation(request) for request in self.server.requests]

    def __enter__(self) -> FakeVision:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()


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

    It answers the same scripted Replies as :class:`FakeVision`:
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
        body = reply.body if isinstance(reply.body, (bytes, str)) else json.dumps(reply.body)
        if reply.status != 200:
            envelope = json.loads(body)["error"]
            context.abort(grpc.StatusCode[envelope["status"]], envelope["message"])
        return BatchAnnotateImagesResponse.from_json(body)

    def __enter__(self) -> FakeVisionGrpc:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._server.stop(grace=None).wait()
        self._pool.shutdown(wait=True)

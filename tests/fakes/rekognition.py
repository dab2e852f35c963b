"""Amazon Rekognition served by moto in server mode, with scripted answers.

moto answers DetectLabels with one canned label whatever the image; here its
response handlers are patched (they, unlike the backend, see the request) so a
test chooses the answer, an error, and sees exactly what boto3 sent.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from moto.core.exceptions import JsonRESTError
from moto.rekognition.responses import RekognitionResponse
from moto.server import ThreadedMotoServer

REGION = "eu-west-1"

#: A model 2.0 answer: names, confidences, instances and parents only.
LABELS_V2: dict[str, Any] = {
    "LabelModelVersion": "2.0",
    "OrientationCorrection": "ROTATE_0",
    "Labels": [
        {"Name": "Shoe", "Confidence": 98.51, "Parents": [{"Name": "Footwear"},
                                                          {"Name": "Clothing"}],
         "Instances": [{"Confidence": 97.2, "BoundingBox": {"Width": 0.5, "Height": 0.4,
                                                            "Left": 0.25, "Top": 0.3}}]},
        {"Name": "Footwear", "Confidence": 98.51, "Parents": [{"Name": "Clothing"}],
         "Instances": []},
        {"Name": "Sneaker", "Confidence": 91.0, "Parents": [{"Name": "Shoe"}]},
    ],
}

#: A model 3.0 answer: adds aliases, categories, instance colours and image properties.
LABELS_V3: dict[str, Any] = {
    "LabelModelVersion": "3.0",
    "Labels": [
        {"Name": "Shoe", "Confidence": 99.1, "Parents": [{"Name": "Footwear"}],
         "Aliases": [{"Name": "Sneakers"}],
         "Categories": [{"Name": "Apparel and Accessories"}],
         "Instances": [{"Confidence": 95.0,
                        "BoundingBox": {"Width": 0.6, "Height": 0.5, "Left": 0.2, "Top": 0.25},
                        "DominantColors": [{"Red": 10, "Green": 10, "Blue": 10,
                                            "SimplifiedColor": "black", "PixelPercent": 60.0}]}]},
        {"Name": "Footwear", "Confidence": 99.1, "Parents": [], "Aliases": [],
         "Categories": [{"Name": "Apparel and Accessories"}], "Instances": []},
    ],
    "ImageProperties": {
        "Quality": {"Brightness": 80.1, "Sharpness": 90.2, "Contrast": 70.0},
        "DominantColors": [
            {"Red": 250, "Green": 250, "Blue": 250, "HexCode": "#FAFAFA",
             "SimplifiedColor": "white", "CSSColor": "white", "PixelPercent": 55.0},
        ],
        "Foreground": {"Quality": {"Brightness": 40.0, "Sharpness": 88.0},
                       "DominantColors": [
                           {"SimplifiedColor": "black", "PixelPercent": 48.5},
                           {"SimplifiedColor": "gray", "PixelPercent": 20.0},
                           {"SimplifiedColor": "black", "PixelPercent": 10.0}]},
        "Background": {"DominantColors": [{"SimplifiedColor": "white",
                                           "PixelPercent": 80.0}]},
    },
}

TEXT: dict[str, Any] = {
    "TextModelVersion": "3.0",
    "TextDetections": [
        {"DetectedText": "CW2288-111", "Type": "LINE", "Id": 0, "Confidence": 97.5,
         "Geometry": {"BoundingBox": {"Width": 0.3, "Height": 0.05, "Left": 0.1, "Top": 0.8}}},
        {"DetectedText": "CW2288-111", "Type": "WORD", "Id": 1, "ParentId": 0,
         "Confidence": 97.5},
    ],
}


def throttling() -> JsonRESTError:
    return JsonRESTError("ThrottlingException", "Rate exceeded")


@dataclass
class FakeRekognition:
    """The endpoint to point boto3 at, the scripted answers, and what was received."""

    endpoint: str
    labels: list[Any] = field(default_factory=lambda: [LABELS_V3])
    text: list[Any] = field(default_factory=lambda: [TEXT])
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._served = {"DetectLabels": 0, "DetectText": 0}

    def script(self, *, labels: list[Any] | None = None, text: list[Any] | None = None) -> None:
        """Answers in order (a dict, or an exception to raise); the last one repeats."""
        with self._lock:
            if labels is not None:
                self.labels = labels
                self._served["DetectLabels"] = 0
            if text is not None:
                self.text = text
                self._served["DetectText"] = 0

    def image(self, index: int = -1) -> bytes:
        return base64.b64decode(self.requests[index][1]["Image"]["Bytes"])

    def answer(self, operation: str, body: str) -> str:
        with self._lock:
            self.requests.append((operation, json.loads(body)))
            replies = self.labels if operation == "DetectLabels" else self.text
            reply = replies[min(self._served[operation], len(replies) - 1)]
            self._served[operation] += 1
        if isinstance(reply, Exception):
            raise reply
        return json.dumps(reply)


@contextmanager
def fake_rekognition(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRekognition]:
    """Start moto on 127.0.0.1 with test credentials, and stop it afterwards."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        fake = FakeRekognition(endpoint=f"http://{host}:{port}")
        monkeypatch.setattr(RekognitionResponse, "detect_labels",
                            lambda self: fake.answer("DetectLabels", self.body))
        monkeypatch.setattr(RekognitionResponse, "detect_text",
                            lambda self: fake.answer("DetectText", self.body))
        yield fake
    finally:
        server.stop()

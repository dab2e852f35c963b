"""The FastAPI example, served in-process with an offline Engine."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator

import app as example
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from restyle import Engine, RestyleError
from restyle.testing import ScriptedExpert, sample_image


@pytest.fixture
def client(restyle_engine: Callable[..., Engine]) -> Iterator[TestClient]:
    engine = restyle_engine(experts=[ScriptedExpert("acme", entities=[("Acme", 0.9, "brand")])])
    example.app.dependency_overrides[example.get_engine] = lambda: engine
    with TestClient(example.app) as client:
        yield client
    example.app.dependency_overrides.clear()


def jpeg() -> bytes:
    buf = io.BytesIO()
    sample_image().save(buf, format="JPEG")
    return buf.getvalue()


def test_analyze_returns_the_analysis(client: TestClient) -> None:
    response = client.post("/analyze", files={"image": ("item.jpg", jpeg(), "image/jpeg")})
    assert response.status_code == 200
    assert response.json()["identification"]["brand"] == "Acme"


def test_bad_uploads_get_clear_4xx(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    response = client.post("/analyze", files={"image": ("x.jpg", b"%PDF-1.7 ...", "image/jpeg")})
    assert response.status_code == 400
    assert response.json()["detail"] == "The upload is not a JPEG, PNG or WebP photo we can read."
    assert client.post("/analyze", files={"image": ("x.jpg", b"", "image/jpeg")}).status_code == 400
    monkeypatch.setattr(example, "MAX_UPLOAD_BYTES", 100)
    assert client.post("/analyze", files={"image": ("x.jpg", jpeg(),
                                                    "image/jpeg")}).status_code == 413
    assert client.post("/analyze").status_code == 422


def test_internal_errors_are_not_leaked(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(self: Engine, image: object) -> None:
        raise RestyleError("catalog at /srv/secret/path is damaged")

    monkeypatch.setattr(Engine, "analyze", boom)
    response = client.post("/analyze", files={"image": ("item.jpg", jpeg(), "image/jpeg")})
    assert response.status_code == 503
    assert "secret" not in response.text


def test_upload_png(client: TestClient) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (10, 10), "red").save(buf, format="PNG")
    response = client.post("/analyze", files={"image": ("a.png", buf.getvalue(), "image/png")})
    assert response.status_code == 200

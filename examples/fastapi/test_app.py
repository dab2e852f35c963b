"""The FastAPI example, served in-process with an offline Engine."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import app as example
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from restyle import Engine, ExpertError, RestyleError
from restyle.testing import ScriptedExpert, sample_image

EXAMPLES = Path(__file__).resolve().parent.parent


@pytest.fixture
def client(restyle_engine: Callable[..., Engine],
           monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    engine = restyle_engine(experts=[ScriptedExpert("acme", entities=[("Acme", 0.9, "brand")])])
    monkeypatch.setattr(example, "Engine", lambda: engine)  # the app's start-up builds this one
    example.app.dependency_overrides[example.get_engine] = lambda: engine
    with TestClient(example.app) as client:
        yield client
    example.app.dependency_overrides.clear()


@pytest.fixture
def catalog_client(
    restyle_engine: Callable[..., Engine], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TestClient]:
    """An Engine whose comps come from a local catalog: their images are server files."""
    engine = restyle_engine(
        experts=[ScriptedExpert("acme", entities=[("Northwind", 0.9, "brand")]),
                 ScriptedExpert("vision", error=ExpertError("quota at /srv/keys/vision.json"))],
        marketplaces=["catalog"], catalog=tmp_path / "catalog",
    )
    engine.build_catalog(EXAMPLES / "catalog" / "listings.jsonl", progress=False)
    monkeypatch.setattr(example, "Engine", lambda: engine)
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


def test_the_answer_has_no_server_paths_and_no_copy_of_the_upload(
    catalog_client: TestClient, tmp_path: Path
) -> None:
    photo = (EXAMPLES / "photo.jpg").read_bytes()
    response = catalog_client.post("/analyze", files={"image": ("item.jpg", photo, "image/jpeg")})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"identification", "price", "comps", "failed_experts"}
    assert body["identification"]["brand"] == "Northwind"
    assert set(body["price"]) >= {"status", "currency", "estimate", "low", "high", "comps_used"}
    assert body["comps"], "the catalog serves comps"
    assert set(body["comps"][0]) == {"marketplace", "listing_id", "title", "price", "condition",
                                     "sold", "url", "image_url", "similarity", "score"}
    assert all(comp["image_url"] is None for comp in body["comps"])  # files on the server
    assert body["failed_experts"] == ["vision"]
    text = response.text
    assert "file:" not in text and str(EXAMPLES) not in text and str(tmp_path) not in text
    assert "/srv/" not in text  # an expert's error stays on the server
    assert "base64" not in text and "data:image" not in text
    assert base64.b64encode(photo[:600]).decode()[:64] not in text


def test_the_answer_matches_the_documented_schema(catalog_client: TestClient) -> None:
    import public_analysis  # importable once the app is

    documented = json.loads((EXAMPLES / "analysis-response.schema.json").read_text())
    assert documented == public_analysis.schema(), "regenerate analysis-response.schema.json"
    openapi = catalog_client.get("/openapi.json").json()
    answer = openapi["paths"]["/analyze"]["post"]["responses"]["200"]["content"]
    assert answer["application/json"]["schema"] == {"$ref": "#/components/schemas/PublicAnalysis"}


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

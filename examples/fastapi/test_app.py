"""The FastAPI example, served in-process with an offline Engine."""

from __future__ import annotations

import base64
import io
import json
import select
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import app as example
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from restyle import Engine, ExpertError, RestyleError
from restyle.testing import ScriptedExpert, sample_image

EXAMPLES = Path(__file__).resolve().parent.parent

TOO_LARGE = "A photo is larger than 10 MB, or the photos are larger than 30 MB in all."

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
    assert set(body) == {"identification", "price", "comps", "photos", "failed_experts",
                         "draft"}
    assert body["photos"] == [{"index": 0, "role": "whole", "role_score": None}]
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
    from restyle.serve import schema as public_analysis

    documented = json.loads((EXAMPLES / "analysis-response.schema.json").read_text())
    assert documented == public_analysis.schema(), "regenerate analysis-response.schema.json"
    documented = json.loads((EXAMPLES / "error-response.schema.json").read_text())
    assert documented == public_analysis.error_schema(), "regenerate error-response.schema.json"
    openapi = catalog_client.get("/openapi.json").json()
    responses = openapi["paths"]["/analyze"]["post"]["responses"]
    answer = responses["200"]["content"]
    assert answer["application/json"]["schema"] == {"$ref": "#/components/schemas/PublicAnalysis"}
    for status in ("400", "413", "422", "503"):
        assert responses[status]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/PublicError"}, status
    assert "no_image" in responses["400"]["description"]
    assert "unreadable_image" in responses["400"]["description"]


def test_the_price_says_what_it_rests_on(catalog_client: TestClient) -> None:
    photo = (EXAMPLES / "photo.jpg").read_bytes()
    price = catalog_client.post("/analyze", files={"image": ("a.jpg", photo, "image/jpeg")}).json()[
        "price"]
    assert price["basis"] in ("sold", "mixed", "asking")
    assert (price["basis"] is None) == (price["estimate"] is None)


def error(code: str, message: str) -> dict[str, object]:
    return {"error": {"code": code, "message": message}}


def test_bad_uploads_get_clear_4xx_in_one_shape(
    client: TestClient, monkeypatch: pytest.MonkeyPatch,
) -> None:
    response = client.post("/analyze", files={"image": ("x.jpg", b"%PDF-1.7 ...", "image/jpeg")})
    assert response.status_code == 400
    assert response.json() == error(
        "unreadable_image", "The upload is not a JPEG, PNG, WebP, HEIC or AVIF photo we can read.")
    response = client.post("/analyze", files={"image": ("x.jpg", b"", "image/jpeg")})
    assert response.status_code == 400 and response.json()["error"]["code"] == "no_image"
    response = client.post("/analyze")
    assert response.status_code == 422 and response.json()["error"]["code"] == "invalid_request"
    response = client.get("/analyze")
    assert response.status_code == 405
    assert response.json() == error("method_not_allowed", "Only POST is allowed here.")
    monkeypatch.setattr(example, "MAX_UPLOAD_BYTES", 100)
    response = client.post("/analyze", files={"image": ("x.jpg", jpeg(), "image/jpeg")})
    assert response.status_code == 413
    assert response.json() == error("too_large", TOO_LARGE)


@pytest.fixture
def server(client: TestClient) -> Iterator[int]:
    """The app served by uvicorn on a real socket (the client's Engine), its port."""
    import threading

    import uvicorn

    config = uvicorn.Config(example.app, host="127.0.0.1", port=0, log_level="warning",
                            lifespan="off")
    served = uvicorn.Server(config)
    thread = threading.Thread(target=served.run, daemon=True)
    thread.start()
    while not served.started and thread.is_alive():
        time.sleep(0.02)
    yield served.servers[0].sockets[0].getsockname()[1]
    served.should_exit = True
    thread.join(10)


def answer(sock: socket.socket) -> tuple[int, dict[str, object]]:
    """The status and JSON body of the HTTP response read from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < int(
            next((line.split(b":")[1] for line in data.split(b"\r\n")
                  if line.lower().startswith(b"content-length:")), b"0")):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_an_upload_over_the_limit_is_refused_from_its_content_length_unsent(
    server: int,
) -> None:
    with socket.create_connection(("127.0.0.1", server), timeout=10) as sock:
        sock.sendall(b"POST /analyze HTTP/1.1\r\nHost: test\r\n"
                     b"Content-Type: multipart/form-data; boundary=x\r\n"
                     b"Content-Length: 52428800\r\n\r\n")  # 50 MB announced, none sent
        status, body = answer(sock)
    assert status == 413 and body == error("too_large", TOO_LARGE)


def test_a_chunked_upload_is_not_read_past_the_limit(
    server: int, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(example, "MAX_UPLOAD_BYTES", 100_000)
    sent = 0
    with socket.create_connection(("127.0.0.1", server), timeout=10) as sock:
        sock.sendall(b"POST /analyze HTTP/1.1\r\nHost: test\r\n"
                     b"Content-Type: multipart/form-data; boundary=x\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        part = (b'--x\r\nContent-Disposition: form-data; name="image"; filename="a.jpg"\r\n'
                b"Content-Type: image/jpeg\r\n\r\n")
        sock.sendall(b"%x\r\n%s\r\n" % (len(part), part))
        chunk = b"%x\r\n%s\r\n" % (65536, b"\xff" * 65536)
        while sent < 50 * 1024 * 1024:
            if select.select([sock], [], [], 0)[0]:
                break  # the answer came: stop sending
            try:
                sock.sendall(chunk)
            except OSError:  # the server closed the connection
                break
            sent += 65536
        status, body = answer(sock)
    assert status == 413 and body["error"]["code"] == "too_large"  # type: ignore[index]
    assert sent < 16 * 1024 * 1024  # the limit (164 KB), plus what the sockets buffer


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


def colour_jpeg(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buf, format="JPEG")
    return buf.getvalue()


def test_several_photos_of_one_item_with_their_roles(client: TestClient) -> None:
    files = [("image", (f"{i}.jpg", colour_jpeg(c), "image/jpeg"))
             for i, c in enumerate([(200, 30, 30), (20, 20, 20), (240, 240, 240)])]
    response = client.post("/analyze", files=files, data={"roles": "whole,tag,"})
    assert response.status_code == 200, response.text
    photos = response.json()["photos"]
    assert [(p["index"], p["role"]) for p in photos[:2]] == [(0, "whole"), (1, "tag")]
    assert len(photos) == 3

    response = client.post("/analyze", files=files[:1], data={"roles": "whole,tag"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_roles"
    many = [("image", (f"{i}.jpg", jpeg(), "image/jpeg")) for i in range(13)]
    response = client.post("/analyze", files=many)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "too_many_photos"


def test_a_listing_draft_comes_back_when_asked(client: TestClient,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EBAY_CLIENT_ID", raising=False)  # offline: a generic list of specifics
    files = {"image": ("item.jpg", jpeg(), "image/jpeg")}
    assert client.post("/analyze", files=files).json()["draft"] is None
    response = client.post("/analyze", files=files, data={"draft": "quick"})
    assert response.status_code == 200, response.text
    draft = response.json()["draft"]
    assert draft["title"] == "Acme" and draft["item_specifics"]["Brand"] == ["Acme"]
    assert draft["price_strategy"] == "quick" and draft["price"] is None
    assert any("offline" in p for p in draft["problems"])
    response = client.post("/analyze", files=files, data={"draft": "cheap"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_draft"

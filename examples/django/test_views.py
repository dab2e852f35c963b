"""The Django example view, driven through Django's test client with an offline Engine."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import django
import pytest

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "restyle_site.settings")
django.setup()

from django.test import Client  # noqa: E402
from django.test.utils import override_settings  # noqa: E402
from restyle_site import views  # noqa: E402

from restyle import Engine, ExpertError, RestyleError  # noqa: E402
from restyle.testing import ScriptedExpert, sample_image  # noqa: E402

URL = "/api/ai-image-search/"
EXAMPLES = Path(__file__).resolve().parent.parent

TOO_LARGE = "A photo is larger than 10 MB, or the photos are larger than 30 MB in all."

@pytest.fixture
def client(
    restyle_engine: Callable[..., Engine], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Client]:
    engine = restyle_engine(experts=[ScriptedExpert("acme", entities=[("Acme", 0.9, "brand")])])
    monkeypatch.setattr(views, "_engine", engine)
    yield Client()


@pytest.fixture
def catalog_client(
    restyle_engine: Callable[..., Engine], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[Client]:
    """An Engine whose comps come from a local catalog: their images are server files."""
    engine = restyle_engine(
        experts=[ScriptedExpert("acme", entities=[("Northwind", 0.9, "brand")]),
                 ScriptedExpert("vision", error=ExpertError("quota at /srv/keys/vision.json"))],
        marketplaces=["catalog"], catalog=tmp_path / "catalog",
    )
    engine.build_catalog(EXAMPLES / "catalog" / "listings.jsonl", progress=False)
    monkeypatch.setattr(views, "_engine", engine)
    yield Client()


def upload(data: bytes, name: str = "item.jpg") -> io.BytesIO:
    buf = io.BytesIO(data)
    buf.name = name
    return buf


def jpeg() -> bytes:
    buf = io.BytesIO()
    sample_image().save(buf, format="JPEG")
    return buf.getvalue()


def test_analysis_comes_back_as_json(client: Client) -> None:
    response = client.post(URL, {"image": upload(jpeg())})
    assert response.status_code == 200
    assert response.json()["identification"]["brand"] == "Acme"


def test_the_answer_has_no_server_paths_and_no_copy_of_the_upload(
    catalog_client: Client, tmp_path: Path
) -> None:
    from restyle.serve.schema import PublicAnalysis

    photo = (EXAMPLES / "photo.jpg").read_bytes()
    response = catalog_client.post(URL, {"image": upload(photo)})
    assert response.status_code == 200
    body = response.json()
    PublicAnalysis.model_validate(body)  # the shape the FastAPI example documents
    assert set(body) == {"identification", "price", "comps", "photos", "failed_experts",
                         "draft"}
    assert body["identification"]["brand"] == "Northwind"
    assert body["comps"], "the catalog serves comps"
    assert set(body["comps"][0]) == {"marketplace", "listing_id", "title", "price", "condition",
                                     "sold", "url", "image_url", "similarity", "score"}
    assert all(comp["image_url"] is None for comp in body["comps"])  # files on the server
    assert body["failed_experts"] == ["vision"]
    text = response.content.decode()
    assert "file:" not in text and str(EXAMPLES) not in text and str(tmp_path) not in text
    assert "/srv/" not in text  # an expert's error stays on the server
    assert "base64" not in text and "data:image" not in text
    assert base64.b64encode(photo[:600]).decode()[:64] not in text


def test_missing_and_bad_images_are_400(client: Client) -> None:
    response = client.post(URL, {})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "no_image"
    response = client.post(URL, {"image": upload(b"GIF89a....")})
    assert response.status_code == 400
    assert response.json() == {"error": {
        "code": "unreadable_image",
        "message": "The upload is not a JPEG, PNG, WebP, HEIC or AVIF photo we can read."}}


def test_get_is_405_with_the_error_shape(client: Client) -> None:
    response = client.get(URL)
    assert response.status_code == 405 and response["Allow"] == "POST"
    assert response.json() == {"error": {"code": "method_not_allowed",
                                         "message": "Only POST is allowed here."}}


def test_oversized_upload_is_413(client: Client) -> None:
    with override_settings(RESTYLE_MAX_UPLOAD_BYTES=100):
        response = client.post(URL, {"image": upload(jpeg())})
    assert response.status_code == 413
    assert response.json()["error"] == {"code": "too_large",
                                        "message": TOO_LARGE}


class Body(io.BytesIO):
    """A request body that counts what the server reads of it."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.taken = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.taken += len(chunk)
        return chunk

    def readline(self, size: int | None = -1) -> bytes:
        chunk = super().readline(size)
        self.taken += len(chunk)
        return chunk


def test_an_upload_over_the_limit_is_refused_from_its_content_length_unread(
    client: Client,
) -> None:
    body = Body(b"")
    response = client.generic("POST", URL, b"", CONTENT_TYPE="multipart/form-data; boundary=x",
                              CONTENT_LENGTH=str(52 * 1024 * 1024), **{"wsgi.input": body})
    assert response.status_code == 413 and response.json()["error"]["code"] == "too_large"
    assert body.taken == 0


def test_internal_errors_are_not_leaked(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: Engine, image: object) -> None:
        raise RestyleError("token sk-live-123 rejected by /internal/service")

    monkeypatch.setattr(Engine, "analyze", boom)
    response = client.post(URL, {"image": upload(jpeg())})
    assert response.status_code == 503
    assert b"sk-live" not in response.content and b"internal" not in response.content


def test_one_engine_per_process_warmed_up_once(monkeypatch: pytest.MonkeyPatch) -> None:
    class Counted:
        warm_ups = 0

        def warm_up(self) -> None:
            Counted.warm_ups += 1

    monkeypatch.setattr(views, "_engine", None)
    monkeypatch.setattr(views, "Engine", Counted)
    assert views.get_engine() is views.get_engine()
    assert Counted.warm_ups == 1


def colour_jpeg(colour: tuple[int, int, int]) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buf, format="JPEG")
    return buf.getvalue()


def test_several_photos_of_one_item_with_their_roles(client: Client) -> None:
    photos = [upload(colour_jpeg(c), f"{i}.jpg")
              for i, c in enumerate([(200, 30, 30), (20, 20, 20), (240, 240, 240)])]
    response = client.post(URL, {"image": photos, "roles": "whole,tag,"})
    assert response.status_code == 200, response.content
    photos_back = response.json()["photos"]
    assert [(p["index"], p["role"]) for p in photos_back[:2]] == [(0, "whole"), (1, "tag")]
    assert len(photos_back) == 3

    response = client.post(URL, {"image": [upload(jpeg())], "roles": "whole,tag"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_roles"
    response = client.post(URL, {"image": [upload(jpeg(), f"{i}.jpg") for i in range(13)]})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "too_many_photos"


def test_a_listing_draft_comes_back_when_asked(client: Client,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EBAY_CLIENT_ID", raising=False)  # offline: a generic list of specifics
    assert client.post(URL, {"image": upload(jpeg())}).json()["draft"] is None
    response = client.post(URL, {"image": upload(jpeg()), "draft": "patient"})
    assert response.status_code == 200, response.content
    draft = response.json()["draft"]
    assert draft["title"] == "Acme" and draft["price_strategy"] == "patient"
    response = client.post(URL, {"image": upload(jpeg()), "draft": "cheap"})
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_draft"

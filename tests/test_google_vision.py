"""The google-vision expert: the real Cloud Vision client against fake REST and gRPC endpoints."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.auth.credentials import AnonymousCredentials
from PIL import Image

from restyle import ConfigurationError, ExpertError
from restyle._input.imaging import Photo, decode, load_photo
from restyle.experts.google_vision import API_KEY_ENV, GoogleVisionExpert
from tests.conftest import SAMPLE_PHOTO
from tests.fakes.vision import (
    ANNOTATE_PATH,
    SNEAKER_RESPONSE,
    FakeVision,
    FakeVisionGrpc,
    error,
    hang,
    malformed,
    payload,
)

SENTINEL_KEY = "AIzaSy-SENTINEL-do-not-leak-0123456789"


@pytest.fixture
def fake() -> Iterator[FakeVision]:
    with FakeVision() as server:
        yield server


@pytest.fixture
def grpc_fake(certificate: tuple[str, str]) -> Iterator[FakeVisionGrpc]:
    with FakeVisionGrpc(certificate) as server:
        yield server


@pytest.fixture
def photo() -> Photo:
    return load_photo(SAMPLE_PHOTO)


def expert_for(server: FakeVision, **options: object) -> GoogleVisionExpert:
    options.setdefault("credentials", AnonymousCredentials())
    return GoogleVisionExpert(transport="rest", endpoint=server.endpoint, **options)  # type: ignore[arg-type]


def test_realistic_answer_becomes_a_full_opinion(fake: FakeVision, photo: Photo) -> None:
    opinion = expert_for(fake).examine(photo)

    assert opinion.ok
    # Entity scores above 1 are scaled into [0, 1]; the service's own number is kept.
    air_max, sneakers, air_max_90 = opinion.entities
    assert (air_max.text, air_max.score) == ("Nike Air Max", 1.0)
    assert air_max.raw_score == pytest.approx(1.4523)
    assert sneakers.score == pytest.approx(0.9121 / 1.4523, abs=1e-4)
    assert sneakers.facet == "category" and air_max.facet is None
    assert air_max_90.score < sneakers.score
    assert [(o.text, o.facet) for o in opinion.labels] == [("nike air max 90", "product")]
    # HTML is stripped and entities unescaped; full matches rank above partial ones.
    assert [(p.text, p.score) for p in opinion.pages] == [
        ("Nike Air Max 90 Men's Shoes & More", 1.0),
        ("Best sneakers of 2024", 0.75),
    ]
    assert opinion.similar_images == ("https://img.example.com/sim1.jpg",
                                      "https://img.example.com/sim2.jpg")
    (shoe,) = opinion.objects
    assert shoe.text == "Shoe" and shoe.score == pytest.approx(0.92)
    # Omitted zero coordinates are read as 0.
    assert shoe.box is not None
    assert (shoe.box.left, shoe.box.top, shoe.box.width) == (0.0, pytest.approx(0.1), 0.5)
    (logo,) = opinion.logos
    assert (logo.text, logo.facet) == ("Nike", "brand")
    # Logo boxes come in pixels of the image sent and are turned into fractions.
    width, height = photo.image.size
    assert logo.box is not None and logo.box.left == pytest.approx(16 / width)
    assert logo.box.height == pytest.approx(16 / height)
    assert [t.text for t in opinion.texts] == ["AIR MAX", "CW2288-111"]


def test_one_call_with_the_wanted_features(fake: FakeVision, photo: Photo) -> None:
    expert_for(fake).examine(photo)
    expert_for(fake, logos=False, text=False, max_results=4).examine(photo)

    first, second = fake.requests
    assert first.path == ANNOTATE_PATH
    assert first.features == [10, 19, 3, 5]  # web, objects, logos, text
    assert second.features == [10, 19]
    assert second.body["requests"][0]["features"][0]["maxResults"] == 4
    assert first.image == SAMPLE_PHOTO.read_bytes()  # within limits: sent untouched


def test_large_photo_is_downscaled_before_upload(fake: FakeVision) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (3200, 1600), (200, 30, 30)).save(buf, format="PNG")
    expert_for(fake).examine(decode(buf.getvalue()))
    with Image.open(io.BytesIO(fake.requests[0].image)) as sent:
        assert sent.size == (1600, 800)


def test_per_image_error_inside_a_200_is_a_clear_failure(fake: FakeVision, photo: Photo) -> None:
    fake.script(payload({"error": {"code": 3, "message": "Bad image data."}}))
    with pytest.raises(ExpertError, match=r"INVALID_ARGUMENT \(3\): Bad image data"):
        expert_for(fake).examine(photo)


def test_rate_limit_is_retried_then_succeeds(fake: FakeVision, photo: Photo) -> None:
    fake.script(error(429, "Quota exceeded for quota metric", "RESOURCE_EXHAUSTED"),
                payload(SNEAKER_RESPONSE))
    opinion = expert_for(fake).examine(photo)
    assert opinion.ok and opinion.logos
    assert len(fake.requests) == 2


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (error(429, "Quota exceeded", "RESOURCE_EXHAUSTED"), r"rate limited \(429\): Quota"),
        (error(500, "Internal error encountered.", "INTERNAL"), r"server error \(500\): Internal"),
        (error(503, "The service is currently unavailable.", "UNAVAILABLE"), r"\(503\)"),
    ],
)
def test_transient_errors_that_persist_fail_after_bounded_retries(
    fake: FakeVision, photo: Photo, reply: object, reason: str
) -> None:
    fake.script(reply)  # type: ignore[arg-type]
    with pytest.raises(ExpertError, match=r"after 2 attempts: .*" + reason):
        expert_for(fake, max_attempts=2).examine(photo)
    assert len(fake.requests) == 2


def test_permanent_errors_are_not_retried(fake: FakeVision, photo: Photo) -> None:
    fake.script(error(403, "Cloud Vision API has not been used in project 1", "PERMISSION_DENIED"))
    with pytest.raises(ExpertError, match=r"refused \(403\): Cloud Vision API has not been"):
        expert_for(fake).examine(photo)
    assert len(fake.requests) == 1


def test_malformed_json_is_a_clear_failure(fake: FakeVision, photo: Photo) -> None:
    fake.script(malformed())
    with pytest.raises(ExpertError, match="malformed answer"):
        expert_for(fake).examine(photo)


def test_a_hanging_server_is_cut_off_by_the_experts_timeout(
    fake: FakeVision, photo: Photo
) -> None:
    fake.script(hang())
    with pytest.raises(ExpertError, match=r"no answer within 0\.5 s"):
        expert_for(fake, timeout=0.5).examine(photo)
    assert len(fake.requests) == 1


def test_api_key_is_sent_but_never_shown(
    fake: FakeVision, photo: Photo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    expert = GoogleVisionExpert(api_key=SENTINEL_KEY, transport="rest", endpoint=fake.endpoint)
    assert expert.examine(photo).ok
    assert fake.requests[-1].headers["x-goog-api-key"] == SENTINEL_KEY

    # A server that echoes the key back must not get it into the message.
    fake.script(error(400, f"API key not valid: {SENTINEL_KEY}", "INVALID_ARGUMENT"),
                error(500, f"backend saw {SENTINEL_KEY}", "INTERNAL"))
    messages = []
    for _ in range(2):
        with pytest.raises(ExpertError) as info:
            expert.examine(photo)
        messages.append(str(info.value))
    fake.script(payload({"error": {"code": 7, "message": f"key {SENTINEL_KEY} denied"}}))
    with pytest.raises(ExpertError) as info:
        expert.examine(photo)
    messages.append(str(info.value))

    assert "API key not valid" in messages[0]
    shown = " ".join([*messages, repr(expert), repr(vars(expert)), caplog.text])
    assert SENTINEL_KEY not in shown


def test_api_key_from_the_environment(
    fake: FakeVision, photo: Photo, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(API_KEY_ENV, SENTINEL_KEY)
    expert = GoogleVisionExpert(transport="rest", endpoint=fake.endpoint)
    assert expert.examine(photo).ok
    assert fake.requests[-1].headers["x-goog-api-key"] == SENTINEL_KEY
    assert SENTINEL_KEY not in repr(vars(expert))


def test_service_account_file_signs_requests(
    fake: FakeVision, photo: Photo, tmp_path: Path
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    account = tmp_path / "account.json"
    account.write_text(json.dumps({
        "type": "service_account", "project_id": "p", "private_key_id": "k1",
        "private_key": pem, "client_email": "restyle@p.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": "http://127.0.0.1:9/token",
    }))
    expert = GoogleVisionExpert(credentials_file=account, transport="rest",
                                endpoint=fake.endpoint)
    assert expert.examine(photo).ok
    # The client signs its own token: no round trip to an OAuth server.
    assert fake.requests[-1].headers["authorization"].startswith("Bearer ey")
    assert pem not in repr(vars(expert))


def test_unusable_credentials_are_explained(
    photo: Photo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ExpertError, match=r"cannot use .*missing\.json"):
        GoogleVisionExpert(credentials_file=tmp_path / "missing.json").examine(photo)

    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    expert = GoogleVisionExpert()  # constructing needs no credentials
    with pytest.raises(ExpertError, match="found no Google credentials"):
        expert.examine(photo)


def test_bad_options_are_refused_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="'grpc' or 'rest'"):
        GoogleVisionExpert(transport="http")
    with pytest.raises(ConfigurationError):
        GoogleVisionExpert(timeout=0)


def test_grpc_is_the_default_transport_and_its_failures_are_translated(photo: Photo) -> None:
    # Nothing listens on port 9: the gRPC channel reports UNAVAILABLE, which is retried.
    expert = GoogleVisionExpert(credentials=AnonymousCredentials(), endpoint="127.0.0.1:9",
                                max_attempts=2, timeout=5)
    assert expert.transport == "grpc"
    with pytest.raises(ExpertError, match=r"after 2 attempts: server error \(503\)"):
        expert.examine(photo)


def grpc_expert_for(
    server: FakeVisionGrpc, certificate: tuple[str, str], **options: object
) -> GoogleVisionExpert:
    if "api_key" not in options:
        options.setdefault("credentials", AnonymousCredentials())
    # The default transport, over TLS, trusting the fake's self-signed certificate.
    return GoogleVisionExpert(endpoint=server.endpoint, ca_certs=certificate[0], **options)  # type: ignore[arg-type]


def test_grpc_answer_is_the_same_opinion_as_over_rest(
    fake: FakeVision, grpc_fake: FakeVisionGrpc, certificate: tuple[str, str], photo: Photo
) -> None:
    expert = grpc_expert_for(grpc_fake, certificate)
    assert expert.transport == "grpc"
    opinion = expert.examine(photo)

    assert opinion.ok
    assert opinion == expert_for(fake).examine(photo)  # the same canned answer over REST
    assert [e.text for e in opinion.entities] == ["Nike Air Max", "Sneakers", "Nike Air Max 90"]
    assert [o.text for o in opinion.labels] == ["nike air max 90"]
    (shoe,) = opinion.objects
    assert shoe.box is not None and (shoe.box.left, shoe.box.width) == (0.0, 0.5)
    assert [(o.text, o.facet) for o in opinion.logos] == [("Nike", "brand")]
    assert [t.text for t in opinion.texts] == ["AIR MAX", "CW2288-111"]

    (call,) = grpc_fake.requests
    assert call.features == ["WEB_DETECTION", "OBJECT_LOCALIZATION", "LOGO_DETECTION",
                             "TEXT_DETECTION"]
    assert call.image == SAMPLE_PHOTO.read_bytes()
    assert call.metadata["x-goog-api-client"].startswith("gl-python/")


def test_grpc_rate_limit_is_retried_then_succeeds(
    grpc_fake: FakeVisionGrpc, certificate: tuple[str, str], photo: Photo
) -> None:
    grpc_fake.script(error(429, "Quota exceeded for quota metric", "RESOURCE_EXHAUSTED"),
                     payload(SNEAKER_RESPONSE))
    opinion = grpc_expert_for(grpc_fake, certificate).examine(photo)
    assert opinion.ok and opinion.logos
    assert len(grpc_fake.requests) == 2


def test_grpc_hanging_server_is_cut_off_by_the_experts_timeout(
    grpc_fake: FakeVisionGrpc, certificate: tuple[str, str], photo: Photo
) -> None:
    grpc_fake.script(hang())
    with pytest.raises(ExpertError, match=r"no answer within 0\.5 s"):
        grpc_expert_for(grpc_fake, certificate, timeout=0.5).examine(photo)
    assert len(grpc_fake.requests) == 1  # a deadline that ran out is not retried


def test_grpc_sends_the_api_key_but_never_shows_it(
    grpc_fake: FakeVisionGrpc, certificate: tuple[str, str], photo: Photo,
    caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    expert = grpc_expert_for(grpc_fake, certificate, api_key=SENTINEL_KEY)
    assert expert.examine(photo).ok
    assert grpc_fake.requests[-1].metadata["x-goog-api-key"] == SENTINEL_KEY

    grpc_fake.script(error(400, f"API key not valid: {SENTINEL_KEY}", "INVALID_ARGUMENT"))
    with pytest.raises(ExpertError, match=r"refused .*API key not valid") as info:
        expert.examine(photo)
    shown = " ".join([str(info.value), repr(vars(expert)), caplog.text])
    assert SENTINEL_KEY not in shown


def test_grpc_refuses_a_server_its_ca_certs_do_not_vouch_for(
    grpc_fake: FakeVisionGrpc, photo: Photo, tmp_path: Path
) -> None:
    # The system's authorities do not know the fake's self-signed certificate.
    with pytest.raises(ExpertError, match=r"server error \(503\)"):
        GoogleVisionExpert(credentials=AnonymousCredentials(), endpoint=grpc_fake.endpoint,
                           max_attempts=1).examine(photo)
    assert grpc_fake.requests == []

    not_pem = tmp_path / "ca.pem"
    not_pem.write_text("not a certificate")
    with pytest.raises(ExpertError, match="holds no PEM certificate"):
        grpc_expert_for(grpc_fake, (str(not_pem), "")).examine(photo)
    with pytest.raises(ExpertError, match=r"cannot read ca_certs .*missing\.pem"):
        grpc_expert_for(grpc_fake, (str(tmp_path / "missing.pem"), "")).examine(photo)
    with pytest.raises(ConfigurationError, match="REQUESTS_CA_BUNDLE"):
        GoogleVisionExpert(transport="rest", ca_certs=not_pem)

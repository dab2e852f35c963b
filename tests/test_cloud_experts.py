"""What the cloud experts share: upload preparation, lazy SDKs, and degrading in the Engine."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from google.auth.credentials import AnonymousCredentials
from PIL import Image

from restyle import Engine, ExpertError
from restyle._input.imaging import Photo, UploadLimits, decode, load_photo, prepare_upload
from restyle.experts.aws_rekognition import AwsRekognitionExpert
from restyle.experts.google_vision import GoogleVisionExpert
from tests.conftest import ROOT, SAMPLE_PHOTO
from tests.fakes.components import ColorEncoder
from tests.fakes.rekognition import REGION, FakeRekognition, fake_rekognition, throttling
from tests.fakes.vision import FakeVision, error


def encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **params)
    return buf.getvalue()


# -- prepare_upload ------------------------------------------------------------


def test_upload_keeps_original_bytes_that_fit() -> None:
    data = SAMPLE_PHOTO.read_bytes()
    upload = prepare_upload(decode(data), UploadLimits(max_bytes=len(data)))
    assert upload.data == data and not upload.reencoded


def test_upload_reencodes_a_format_the_service_refuses() -> None:
    webp = decode(encode(Image.new("RGB", (64, 48), (0, 90, 200)), "WEBP"))
    upload = prepare_upload(webp, UploadLimits(max_bytes=10**6, formats=("JPEG", "PNG")))
    assert upload.reencoded and upload.format == "JPEG" and upload.data[:3] == b"\xff\xd8\xff"
    assert (upload.width, upload.height) == (64, 48)


def test_upload_sends_upright_pixels_when_exif_rotates() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    photo = decode(encode(Image.new("RGB", (80, 40), "white"), "JPEG", exif=exif))
    assert photo.image.size == (40, 80)
    upload = prepare_upload(photo, UploadLimits(max_bytes=10**6))
    assert upload.reencoded
    with Image.open(io.BytesIO(upload.data)) as sent:
        assert sent.size == (40, 80)


def test_upload_shrinks_until_it_fits_every_limit() -> None:
    import numpy as np

    noise = np.random.default_rng(1).integers(0, 256, (600, 900, 3), dtype=np.uint8)
    photo = decode(encode(Image.fromarray(noise), "PNG"))
    limits = UploadLimits(max_bytes=60_000, max_side=800, max_pixels=300_000)
    upload = prepare_upload(photo, limits)
    assert len(upload.data) <= 60_000
    assert max(upload.width, upload.height) <= 800 and upload.width * upload.height <= 300_000
    with Image.open(io.BytesIO(upload.data)) as sent:
        assert sent.size == (upload.width, upload.height)
        assert abs(sent.width / sent.height - 1.5) < 0.01


def test_upload_of_a_pil_photo_is_encoded() -> None:
    photo = load_photo(Image.new("RGB", (30, 20), "blue"))
    upload = prepare_upload(photo, UploadLimits(max_bytes=10**6))
    assert upload.reencoded and upload.format == "JPEG"


# -- the SDKs are optional -------------------------------------------------------


def test_restyle_imports_and_registers_cloud_experts_without_their_sdks() -> None:
    script = textwrap.dedent("""
        import sys
        for name in ("boto3", "botocore", "google.cloud.vision", "google.cloud"):
            sys.modules[name] = None  # an import of these now fails
        from restyle._plugin.registry import PluginRegistry
        from restyle.experts.aws_rekognition import AwsRekognitionExpert
        from restyle.experts.google_vision import GoogleVisionExpert
        registry = PluginRegistry(load_entrypoints=False)
        names = registry.names("expert")
        assert "google-vision" in names and "aws-rekognition" in names, names
        for expert in (GoogleVisionExpert(), AwsRekognitionExpert()):
            try:
                expert.client()
            except Exception as exc:
                print(type(exc).__name__, exc)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            cwd=ROOT, env={"PYTHONPATH": str(ROOT / "src"), "PATH": ""},
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "ExpertError" in result.stdout
    assert "pip install 'restyle[google]'" in result.stdout
    assert "pip install 'restyle[aws]'" in result.stdout


# -- the Engine degrades when one cloud expert fails -------------------------------


@pytest.fixture
def vision() -> Iterator[FakeVision]:
    with FakeVision() as server:
        yield server


@pytest.fixture
def rekognition(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRekognition]:
    with fake_rekognition(monkeypatch) as fake:
        yield fake


@pytest.fixture
def photo() -> Photo:
    return load_photo(SAMPLE_PHOTO)


def engine_with(vision: FakeVision, rekognition: FakeRekognition) -> Engine:
    experts = [
        GoogleVisionExpert(credentials=AnonymousCredentials(), transport="rest",
                           endpoint=vision.endpoint, max_attempts=2),
        AwsRekognitionExpert(region=REGION, endpoint_url=rekognition.endpoint, max_attempts=1),
    ]
    return Engine(experts=experts, marketplaces=[], encoder=ColorEncoder(),
                  load_entrypoints=False)


def test_both_cloud_experts_agree(
    vision: FakeVision, rekognition: FakeRekognition, photo: Photo
) -> None:
    analysis = engine_with(vision, rekognition).analyze(photo)
    assert not analysis.failed_experts
    ident = analysis.identification
    assert (ident.brand, ident.category) == ("Nike", "sneakers")
    assert {e.expert for e in ident.evidence_for("category")} == {"google-vision",
                                                                  "aws-rekognition"}
    assert ident.attribute("color") == "black"


def test_engine_degrades_when_google_vision_fails(
    vision: FakeVision, rekognition: FakeRekognition, photo: Photo
) -> None:
    vision.script(error(503, "The service is currently unavailable.", "UNAVAILABLE"))
    analysis = engine_with(vision, rekognition).analyze(photo)

    assert set(analysis.failed_experts) == {"google-vision"}
    assert "503" in analysis.failed_experts["google-vision"]
    assert "ExpertError" in analysis.failed_experts["google-vision"]
    ident = analysis.identification
    assert ident.category == "sneakers" and ident.brand is None
    assert ident.attribute("color") == "black"
    assert 0 < ident.confidence < 0.5


def test_engine_degrades_when_rekognition_is_throttled(
    vision: FakeVision, rekognition: FakeRekognition, photo: Photo
) -> None:
    rekognition.script(labels=[throttling()])
    analysis = engine_with(vision, rekognition).analyze(photo)

    assert set(analysis.failed_experts) == {"aws-rekognition"}
    assert "ThrottlingException" in analysis.failed_experts["aws-rekognition"]
    ident = analysis.identification
    assert (ident.brand, ident.category) == ("Nike", "sneakers")


def test_an_expert_error_carries_its_cause(vision: FakeVision, photo: Photo) -> None:
    vision.script(error(500, "boom", "INTERNAL"))
    expert = GoogleVisionExpert(credentials=AnonymousCredentials(), transport="rest",
                                endpoint=vision.endpoint, max_attempts=1)
    with pytest.raises(ExpertError) as info:
        expert.examine(photo)
    assert info.value.__cause__ is not None


def test_upload_keeps_the_original_file_when_restyle_kept_fewer_pixels() -> None:
    data = encode(Image.new("RGB", (3000, 2000), (0, 90, 200)), "JPEG")
    photo = decode(data)
    assert photo.image.size == (1500, 1000)  # decoded at half scale
    upload = prepare_upload(photo, UploadLimits(max_bytes=len(data), max_side=4096))
    assert upload.data == data and not upload.reencoded
    assert (upload.width, upload.height) == (3000, 2000)
    smaller = prepare_upload(photo, UploadLimits(max_bytes=len(data), max_side=2000))
    assert smaller.reencoded and (smaller.width, smaller.height) == (1500, 1000)

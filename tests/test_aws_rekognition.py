"""The aws-rekognition expert: real boto3 against moto in server mode."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from botocore.stub import Stubber
from PIL import Image

from restyle import ExpertError, Observation
from restyle._input.imaging import Photo, decode, load_photo
from restyle.experts.aws_rekognition import LIMITS, AwsRekognitionExpert, parse_labels
from tests.conftest import SAMPLE_PHOTO
from tests.fakes.rekognition import (
    LABELS_V2,
    LABELS_V3,
    REGION,
    TEXT,
    FakeRekognition,
    fake_rekognition,
    throttling,
)


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRekognition]:
    with fake_rekognition(monkeypatch) as fake:
        yield fake


@pytest.fixture
def photo() -> Photo:
    return load_photo(SAMPLE_PHOTO)


def expert_for(fake: FakeRekognition, **options: object) -> AwsRekognitionExpert:
    return AwsRekognitionExpert(region=REGION, endpoint_url=fake.endpoint, **options)  # type: ignore[arg-type]


def texts(observations: tuple[Observation, ...]) -> list[str]:
    return [o.text for o in observations]


def test_model_3_answer_becomes_labels_objects_and_colours(
    moto: FakeRekognition, photo: Photo
) -> None:
    moto.script(labels=[LABELS_V3])
    opinion = expert_for(moto).examine(photo)

    assert opinion.ok
    assert texts(opinion.labels)[:4] == ["Shoe", "Sneakers", "Footwear", "Apparel and Accessories"]
    shoe = opinion.labels[0]
    assert shoe.score == pytest.approx(0.991) and shoe.raw_score == pytest.approx(99.1)
    department = next(o for o in opinion.labels if o.facet == "department")
    assert department.text == "Apparel and Accessories"
    # Colours come from the foreground (the item), "gray" spelled as the taxonomy does,
    # shades of one colour added up.
    colours = [(o.text, o.score) for o in opinion.labels if o.facet == "color"]
    assert colours == [("black", pytest.approx(0.585)), ("grey", pytest.approx(0.2))]
    (obj,) = opinion.objects
    assert obj.text == "Shoe" and obj.score == pytest.approx(0.95)
    assert obj.box is not None and (obj.box.left, obj.box.width) == (0.2, 0.6)

    operation, sent = moto.requests[0]
    assert operation == "DetectLabels"
    assert sent["Features"] == ["GENERAL_LABELS", "IMAGE_PROPERTIES"]
    assert moto.image() == SAMPLE_PHOTO.read_bytes()  # a photo within limits goes as it is


def test_model_2_answer_is_parsed_without_the_newer_fields(
    moto: FakeRekognition, photo: Photo
) -> None:
    moto.script(labels=[LABELS_V2])
    opinion = expert_for(moto, colors=False).examine(photo)

    assert opinion.ok
    assert texts(opinion.labels) == ["Shoe", "Footwear", "Clothing", "Sneaker"]
    assert all(o.facet is None for o in opinion.labels)
    assert [o.text for o in opinion.objects] == ["Shoe"]
    assert "Features" not in moto.requests[0][1]


def test_detect_text_is_optional_and_reports_lines(moto: FakeRekognition, photo: Photo) -> None:
    assert expert_for(moto).examine(photo).texts == ()
    assert [op for op, _ in moto.requests] == ["DetectLabels"]

    opinion = expert_for(moto, text=True).examine(photo)
    assert texts(opinion.texts) == ["CW2288-111"]
    assert opinion.texts[0].box is not None
    assert [op for op, _ in moto.requests][-2:] == ["DetectLabels", "DetectText"]


def test_failed_text_detection_keeps_the_labels(moto: FakeRekognition, photo: Photo) -> None:
    moto.script(text=[throttling()])
    opinion = expert_for(moto, text=True, max_attempts=1).examine(photo)
    assert opinion.ok and opinion.labels and opinion.texts == ()


def test_throttling_is_retried_then_succeeds(moto: FakeRekognition, photo: Photo) -> None:
    moto.script(labels=[throttling(), LABELS_V3])
    opinion = expert_for(moto, max_attempts=2).examine(photo)
    assert opinion.ok and opinion.labels[0].text == "Shoe"
    assert len(moto.requests) == 2


def test_throttling_that_persists_fails_with_a_clear_reason(
    moto: FakeRekognition, photo: Photo
) -> None:
    moto.script(labels=[throttling()])
    with pytest.raises(ExpertError, match=r"throttled 2 times \(ThrottlingException\): Rate"):
        expert_for(moto, max_attempts=2).examine(photo)
    assert len(moto.requests) == 2


def test_photo_over_five_megabytes_is_downscaled_not_rejected(
    moto: FakeRekognition,
) -> None:
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (1400, 1400, 3), dtype=np.uint8))
    buf = io.BytesIO()
    noise.save(buf, format="PNG")
    assert buf.tell() > LIMITS.max_bytes
    big = decode(buf.getvalue())

    opinion = expert_for(moto).examine(big)

    assert opinion.ok
    sent = moto.image()
    assert len(sent) <= 5 * 1024 * 1024
    with Image.open(io.BytesIO(sent)) as received:
        assert received.format == "JPEG"
        assert received.size[0] <= 1400 and received.size[0] / received.size[1] == 1.0


def test_malformed_labels_are_skipped_not_fatal() -> None:
    labels, objects = parse_labels({
        "Labels": [
            None, {"Name": "Bag"}, {"Confidence": 90}, {"Name": "Hat", "Confidence": "high"},
            {"Name": "Handbag", "Confidence": 250.0, "Parents": "Bag",
             "Instances": [{"BoundingBox": {"Left": 0.9, "Top": -1, "Width": 0.5,
                                            "Height": None}}, "junk"]},
        ],
    })
    assert [(o.text, o.score) for o in labels] == [("Handbag", 1.0)]
    (obj,) = objects
    assert obj.box is not None and obj.box.left == 0.9 and obj.box.width == pytest.approx(0.1)
    assert parse_labels({"Labels": "nope"}) == ((), ())


def test_ill_typed_fields_on_the_wire_are_skipped_not_fatal(
    moto: FakeRekognition, photo: Photo
) -> None:
    shoe = LABELS_V3["Labels"][0]
    moto.script(labels=[{
        **LABELS_V3,
        "Labels": [
            {**shoe, "Categories": ["Apparel and Accessories"], "Aliases": "Sneakers",
             "Parents": {"Name": "Footwear"}, "Instances": [
                 {"Confidence": "high", "BoundingBox": [0.2, 0.25, 0.6, 0.5]},
                 {"Confidence": 90.0, "BoundingBox": {"Left": "0.1", "Top": 0.1,
                                                      "Width": 0.5, "Height": 0.5}}]},
            "Bag",
            {"Name": 7, "Confidence": 80.0},
            {"Name": "Sneaker", "Confidence": 93.0, "Parents": [{"Name": "Shoe"}, "Footwear"],
             "Categories": [{"Name": ["Apparel"]}, {"Name": "Apparel and Accessories"}]},
        ],
        "ImageProperties": ["black"],
        "LabelModelVersion": 3,
    }])
    opinion = expert_for(moto).examine(photo)

    assert opinion.ok, opinion.error
    assert [(o.text, o.facet) for o in opinion.labels] == [
        ("Shoe", None), ("Sneaker", None), ("Apparel and Accessories", "department")]
    assert [(o.text, o.score, o.box is not None) for o in opinion.objects] == [
        ("Shoe", pytest.approx(0.9), True)]
    assert opinion.objects[0].box is not None and opinion.objects[0].box.left == 0.0


@pytest.mark.parametrize("answer", [["Shoe"], "Shoe", 42])
def test_an_answer_that_is_not_an_object_is_a_clear_failure(
    moto: FakeRekognition, photo: Photo, answer: object
) -> None:
    moto.script(labels=[answer])
    with pytest.raises(ExpertError) as raised:
        expert_for(moto).examine(photo)
    assert str(raised.value) == "aws-rekognition DetectLabels sent a malformed answer"


@pytest.mark.parametrize(("variables", "region"), [
    ({"AWS_REGION": "eu-central-1"}, "eu-central-1"),
    ({"AWS_DEFAULT_REGION": "us-west-2"}, "us-west-2"),
    ({"AWS_REGION": "eu-central-1", "AWS_DEFAULT_REGION": "us-west-2"}, "eu-central-1"),
])
def test_the_region_comes_from_aws_region_then_aws_default_region(
    moto: FakeRekognition, photo: Photo, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    variables: dict[str, str], region: str,
) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    expert = AwsRekognitionExpert(endpoint_url=moto.endpoint)
    assert expert.examine(photo).ok
    assert expert.client().meta.region_name == region
    assert AwsRekognitionExpert(region=REGION).client().meta.region_name == REGION


def test_stubbed_responses_match_the_service_model(photo: Photo) -> None:
    # Stubber validates the fixtures against botocore's own Rekognition model,
    # so the shapes the parser is tested on are shapes the service can send.
    expert = AwsRekognitionExpert(region=REGION, text=True)
    client = expert.client()
    with Stubber(client) as stub:
        stub.add_response("detect_labels", LABELS_V3)
        stub.add_response("detect_text", TEXT)
        stub.add_response("detect_labels", LABELS_V2)
        stub.add_response("detect_text", {"TextDetections": []})
        first = expert.examine(photo)
        second = expert.examine(photo)
    assert first.labels[0].text == second.labels[0].text == "Shoe"


def test_client_config_fits_the_deadline() -> None:
    config = AwsRekognitionExpert(timeout=20.0, max_attempts=3).client_config()
    assert config.retries == {"mode": "standard", "total_max_attempts": 3}
    worst = 3 * (config.connect_timeout + config.read_timeout) + 1 + 2
    assert worst <= 20.0
    short = AwsRekognitionExpert(timeout=3.0, max_attempts=5, text=True).client_config()
    assert short.retries["total_max_attempts"] == 1
    assert short.connect_timeout + short.read_timeout <= 1.5


def test_missing_region_and_credentials_are_explained(
    monkeypatch: pytest.MonkeyPatch, photo: Photo, tmp_path
) -> None:
    for name in ("AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",
                 "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    expert = AwsRekognitionExpert()  # constructing needs nothing
    with pytest.raises(ExpertError, match="no AWS region"):
        expert.examine(photo)
    with pytest.raises(ExpertError, match="no AWS credentials"):
        AwsRekognitionExpert(region=REGION, endpoint_url="http://127.0.0.1:9").examine(photo)

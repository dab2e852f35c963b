"""restyle analyze --item (several photos of one item) and --items (a folder per item)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.test_cli import CATALOG_IMAGES, run


@pytest.fixture
def tiny_env(monkeypatch: pytest.MonkeyPatch, tiny_model_spec: str) -> None:
    monkeypatch.setenv("RESTYLE_MODEL", tiny_model_spec)


def test_one_item_of_several_photos_with_roles_given_and_found(
    tiny_env: None, catalog_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    front, tag, label = CATALOG_IMAGES[:3]
    code, out, _ = run(capsys, "analyze", "--item", str(front), f"tag={tag}", str(label),
                       "--json", "--catalog", str(catalog_copy), "--no-plugins", "--no-log")
    assert code == 0
    analysis = json.loads(out)
    photos = analysis["photos"]
    assert [p["index"] for p in photos] == [0, 1, 2]
    assert photos[1]["role"] == "tag" and photos[1]["role_score"] is None
    assert {p["role"] for p in photos} <= {"whole", "tag", "label", "detail", "flaw"}
    assert any(p["role"] == "whole" for p in photos)
    assert {o["photo"] for o in analysis["opinions"]} <= {0, 1, 2}
    assert analysis["comps"]

    code, out, _ = run(capsys, "analyze", "--item", str(front), f"tag={tag}",
                       "--catalog", str(catalog_copy), "--no-plugins", "--no-log")
    (photos,) = [line for line in out.splitlines() if line.startswith("  photos:")]
    assert f"2 tag {tag.name}" in photos and f" {front.name}" in photos

    code, _, err = run(capsys, "analyze", "--item", str(front), str(tmp_path),
                       "--catalog", str(catalog_copy), "--no-plugins", "--no-log")
    assert code == 2 and "--item takes photo files" in err


def test_each_subfolder_is_an_item_and_each_item_one_json_line(
    tiny_env: None, catalog_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    shoot = tmp_path / "shoot"
    for number, images in enumerate((CATALOG_IMAGES[:2], CATALOG_IMAGES[2:5])):
        folder = shoot / f"item-{number}"
        folder.mkdir(parents=True)
        for image in images:
            shutil.copy(image, folder / image.name)
    shutil.copy(CATALOG_IMAGES[5], shoot / "loose.jpg")
    (shoot / "empty").mkdir()
    code, out, _ = run(capsys, "analyze", "--items", str(shoot), "--json", "--catalog",
                         str(catalog_copy), "--no-plugins", "--no-log")
    assert code == 1  # the empty item folder
    lines = [json.loads(line) for line in out.splitlines()]
    by_name = {Path(line["photo"]).name: line for line in lines}
    assert set(by_name) == {"item-0", "item-1", "loose.jpg", "empty"}
    assert len(by_name["item-0"]["analysis"]["photos"]) == 2
    assert len(by_name["item-1"]["analysis"]["photos"]) == 3
    assert len(by_name["loose.jpg"]["analysis"]["photos"]) == 1
    assert "no JPEG, PNG, WebP, HEIC/HEIF or AVIF files" in by_name["empty"]["error"]

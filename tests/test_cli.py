"""The restyle command line, end to end on the sample photo and catalog."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from restyle.cli import main
from tests.conftest import EXAMPLES, SAMPLE_LISTINGS, SAMPLE_PHOTO


@pytest.fixture
def tiny_env(monkeypatch: pytest.MonkeyPatch, tiny_model_spec: str) -> None:
    monkeypatch.setenv("RESTYLE_MODEL", tiny_model_spec)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_analyze_json_ranks_the_photos_own_entry_first(
    tiny_env: None, catalog_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = EXAMPLES / "catalog" / "images" / "ks-sneaker-green.jpg"
    code, out, _ = run(capsys, "analyze", str(photo), "--json", "--catalog", str(catalog_copy),
                       "--no-plugins")
    assert code == 0
    data = json.loads(out)
    assert data["comps"][0]["listing"]["listing_id"] == "ks-sneaker-green"
    assert data["comps"][0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    scores = [c["score"] for c in data["comps"]]
    assert scores == sorted(scores, reverse=True)
    assert data["identification"]["brand"] == "Kestrel"
    assert data["price"]["status"] == "ok"
    assert {o["expert"] for o in data["opinions"]} == {"clip", "catalog"}


def test_analyze_summary_on_the_sample_photo(
    tiny_env: None, catalog_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "analyze", str(SAMPLE_PHOTO), "--catalog", str(catalog_copy),
                       "--no-plugins")
    assert code == 0
    assert "Price:" in out
    assert "Comps (" in out
    assert "brand:" in out


def test_catalog_build_reports_and_keeps_good_rows(
    tiny_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [json.loads(line) for line in SAMPLE_LISTINGS.read_text().splitlines()][:3]
    shutil.copytree(SAMPLE_LISTINGS.parent / "images", tmp_path / "images")
    rows.append({"id": "x1", "title": "no image", "price": "3", "image": "missing.jpg"})
    rows.append({**rows[0], "id": "x2", "price": "ten dollars"})
    listings = tmp_path / "listings.jsonl"
    listings.write_text("\n".join(json.dumps(r) for r in rows) + "\nnot json\n")
    code, out, err = run(capsys, "catalog", "build", str(listings), "--dir",
                         str(tmp_path / "cat"), "--no-plugins")
    assert code == 0
    assert "3 added" in out and "3 rejected" in out
    assert "image not found" in err and "bad price" in err and "invalid JSON" in err
    rejected = (tmp_path / "cat" / "rejected.jsonl").read_text().splitlines()
    assert [json.loads(line)["row"] for line in rejected] == [4, 5, 6]


def test_plugins_lists_every_builtin(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plugins", "--no-plugins")
    assert code == 0
    for kind, name in [("encoder", "openclip"), ("expert", "clip"), ("expert", "catalog"),
                       ("synthesizer", "consensus"), ("marketplace", "catalog")]:
        assert any(line.split()[:2] == [kind, name] for line in out.splitlines()), (kind, name)


def test_user_mistakes_print_one_line_and_fail(
    tiny_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "analyze", str(tmp_path / "nope.jpg"), "--no-plugins",
                         "--catalog", str(tmp_path))
    assert code == 1
    assert err.startswith("restyle: error: photo not found")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1

    not_image = tmp_path / "notes.jpg"
    not_image.write_text("hello")
    code, _, err = run(capsys, "analyze", str(not_image), "--no-plugins")
    assert code == 1 and "not a JPEG, PNG or WebP" in err

    code, _, err = run(capsys, "analyze", str(SAMPLE_PHOTO), "--experts", "nonesuch",
                       "--no-plugins")
    assert code == 1 and "no expert named 'nonesuch'" in err and "clip" in err


def test_missing_catalog_degrades_with_a_clear_reason(
    tiny_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "analyze", str(SAMPLE_PHOTO), "--catalog",
                       str(tmp_path / "empty"), "--json", "--no-plugins")
    assert code == 0
    data = json.loads(out)
    failed = {o["expert"]: o for o in data["opinions"] if o["status"] != "ok"}
    assert "no catalog at" in failed["catalog"]["error"]
    assert any("no catalog at" in w for w in data["warnings"])
    assert data["price"]["status"] == "not_enough_data"

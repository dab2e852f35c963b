"""The restyle command line, end to end on the sample photo and catalog."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest
from PIL import Image

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


def test_a_catalog_the_user_named_must_exist(
    tiny_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    missing = tmp_path / "mistyped"
    code, out, err = run(capsys, "analyze", str(SAMPLE_PHOTO), "--catalog", str(missing),
                         "--json", "--no-plugins")
    assert (code, out) == (1, "")
    assert err == (f"restyle: error: no catalog at {missing}; build one with 'restyle catalog "
                   f"build LISTINGS.jsonl --catalog {missing}'\n")
    monkeypatch.setenv("RESTYLE_CATALOG", str(missing))
    code, _, err = run(capsys, "analyze", str(SAMPLE_PHOTO), "--no-plugins")
    assert code == 1 and err.count("no catalog at") == 1 and len(err.splitlines()) == 1
    assert not missing.exists()


def test_the_default_catalog_not_built_yet_is_said_once(
    tiny_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "analyze", str(SAMPLE_PHOTO), "--json", "--no-plugins")
    assert code == 0
    assert err.count("no catalog at") == 1 and len(err.splitlines()) == 1
    assert err.startswith("restyle: warning: no catalog at ")
    data = json.loads(out)
    assert "no catalog" not in out
    assert {o["expert"] for o in data["opinions"]} == {"clip"}
    assert data["price"]["status"] == "not_enough_data"


def test_a_damaged_catalog_is_one_line_and_exit_1(
    tiny_env: None, catalog_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (catalog_copy / "vectors.faiss").unlink()
    code, out, err = run(capsys, "analyze", str(SAMPLE_PHOTO), "--catalog", str(catalog_copy),
                         "--no-plugins")
    assert (code, out) == (1, "")
    assert err == (f"restyle: error: the vector index {catalog_copy / 'vectors.faiss'} is "
                   f"missing but the catalog has 12 listings; run 'restyle catalog repair "
                   f"--catalog {catalog_copy}' to rebuild it from the vectors stored in the "
                   "database\n")


def sample_listings(tmp_path: Path) -> Path:
    shutil.copytree(SAMPLE_LISTINGS.parent / "images", tmp_path / "images")
    listings = tmp_path / "listings.jsonl"
    listings.write_text(SAMPLE_LISTINGS.read_text() + '{"id": "x", "title": "t"}\n')
    return listings


def test_catalog_build_takes_the_catalog_from_the_environment_or_either_option(
    tiny_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    listings = sample_listings(tmp_path)
    monkeypatch.setenv("RESTYLE_CATALOG", str(tmp_path / "env"))
    code, out, _ = run(capsys, "catalog", "build", str(listings), "--no-plugins")
    assert code == 0 and out.startswith(f"catalog {tmp_path / 'env'}: 12 added")
    for option in ("--catalog", "--dir"):
        target = tmp_path / option.strip("-")
        code, out, _ = run(capsys, "catalog", "build", str(listings), option, str(target),
                           "--no-plugins")
        assert code == 0 and out.startswith(f"catalog {target}: 12 added")
        assert (target / "catalog.sqlite").is_file()


def test_catalog_build_json_prints_the_report(
    tiny_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listings = sample_listings(tmp_path)
    code, out, err = run(capsys, "catalog", "build", str(listings), "--catalog",
                         str(tmp_path / "cat"), "--json", "--no-plugins")
    assert code == 0 and err == ""
    assert json.loads(out) == {
        "catalog": str(tmp_path / "cat"), "rows": 13, "added": 12, "updated": 0, "skipped": 0,
        "rejected": 1, "rejected_file": str(tmp_path / "cat" / "rejected.jsonl"),
        "rejections": [{"row": 13, "reason": "missing image"}],
    }


def test_catalog_build_images_root(
    tiny_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(SAMPLE_LISTINGS.parent / "images", tmp_path / "store")
    (tmp_path / "exports").mkdir()
    listings = tmp_path / "exports" / "listings.jsonl"
    listings.write_text(SAMPLE_LISTINGS.read_text().replace('"images/', '"../store/'))
    code, out, err = run(capsys, "catalog", "build", str(listings), "--catalog",
                         str(tmp_path / "cat"), "--no-plugins")
    assert out.endswith("0 added, 0 updated, 0 unchanged, 12 rejected\n")
    assert f"image not found: ../store/nw-jacket-blue.jpg (images must be files inside " \
           f"{tmp_path / 'exports'}; see images_root)" in err
    code, out, _ = run(capsys, "catalog", "build", str(listings), "--catalog",
                       str(tmp_path / "cat"), "--images-root", str(tmp_path / "store"),
                       "--no-plugins")
    assert code == 0 and "12 added" in out


def test_catalog_stats_check_and_repair(
    tiny_env: None, catalog_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "catalog", "stats", "--catalog", str(catalog_copy))
    assert code == 0
    lines = out.splitlines()
    assert lines[:3] == [f"catalog {catalog_copy}", "  listings:     12", "  vectors:      12"]
    assert lines[3].startswith("  model:        local:") and lines[3].endswith("(dimension 64)")
    assert lines[4].startswith("  size on disk: ") and "KiB" in lines[4]
    assert lines[5:7] == ["  categories:", "    jacket    5"]
    code, out, _ = run(capsys, "catalog", "stats", "--catalog", str(catalog_copy), "--json")
    assert json.loads(out)["categories"]["jacket"] == 5

    code, out, err = run(capsys, "catalog", "check", "--catalog", str(catalog_copy))
    assert (code, out, err) == (0, f"catalog {catalog_copy}: ok (12 listings, 12 vectors)\n", "")

    (catalog_copy / "vectors.faiss").unlink()
    code, out, err = run(capsys, "catalog", "check", "--catalog", str(catalog_copy))
    assert (code, out) == (1, "")
    assert err == (f"restyle: problem: the vector index {catalog_copy / 'vectors.faiss'} is "
                   f"missing; run 'restyle catalog repair --catalog {catalog_copy}' to rebuild "
                   "it\n")
    code, out, _ = run(capsys, "catalog", "repair", "--catalog", str(catalog_copy))
    assert code == 0
    assert out == (f"catalog {catalog_copy}: index rebuilt from 12 stored vectors, 0 from the "
                   "old index, 0 re-embedded; 0 listings removed, 0 stray vectors dropped\n")
    code, _, _ = run(capsys, "catalog", "check", "--catalog", str(catalog_copy), "--json")
    assert code == 0


def test_catalog_commands_on_a_missing_catalog_say_so_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for action in ("stats", "check", "repair"):
        code, out, err = run(capsys, "catalog", action, "--catalog", str(tmp_path / "nope"))
        assert code == 1 and out == "", action
        assert len(err.splitlines()) == 1 and err.count("no catalog at") == 1, action


def test_catalog_build_names_a_missing_listings_file_before_loading_any_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESTYLE_MODEL", "no-such-architecture/none")
    for name, message in [("nothing.jsonl", f"listings file not found: {tmp_path}/nothing.jsonl"),
                          ("notes.txt", "listings file must be .jsonl, .csv or .parquet, got "
                                        "notes.txt")]:
        code, out, err = run(capsys, "catalog", "build", str(tmp_path / name), "--catalog",
                             str(tmp_path / "cat"), "--no-plugins")
        assert (code, out, err) == (1, "", f"restyle: error: {message}\n")
    assert not (tmp_path / "cat").exists()


@pytest.mark.parametrize(("size", "message"), [
    ((40000, 1), "is 40000x1 pixels, more elongated than the limit of 20:1"),
    ((10000, 10000), "is 10000x10000 pixels, more than the limit of 24,000,000 for a PNG"),
])
def test_a_photo_past_restyles_limits_is_one_line_and_no_warning(
    tiny_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    size: tuple[int, int], message: str,
) -> None:
    photo = tmp_path / "photo.png"
    Image.new("L", size).save(photo)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = run(capsys, "analyze", str(photo), "--no-plugins",
                           "--catalog", str(tmp_path))
    assert code == 1
    assert err.startswith("restyle: error: photo ") and message in err
    assert len(err.strip().splitlines()) == 1
    assert caught == []

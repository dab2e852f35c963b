"""The restyle command line, end to end on the sample photo and catalog."""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from restyle import Analysis, Engine
from restyle.cli import main
from restyle.cli.arguments import command_parser, ray_values_attached
from restyle.testing import load_recording
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
    # Not exactly 1: a build decodes its images down to the model's input side,
    # the photo is decoded whole; the two differ by less than JPEG noise.
    assert data["comps"][0]["similarity"] == pytest.approx(1.0, abs=1e-3)
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


def test_catalog_build_names_twenty_rejected_rows_and_counts_the_rest(
    tiny_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listings = tmp_path / "listings.jsonl"
    listings.write_text("".join(
        json.dumps({"id": f"r{i}", "title": "coat", "price": "ten", "image": "a.jpg"}) + "\n"
        for i in range(23)))
    code, out, err = run(capsys, "catalog", "build", str(listings), "--catalog",
                         str(tmp_path / "cat"), "--no-plugins")
    assert code == 1
    assert out.endswith("0 added, 0 updated, 0 skipped (stored already), 23 rejected\n")
    lines = err.splitlines()
    assert [line for line in lines if "rejected:" in line][-1].startswith("  row 20 rejected:")
    assert sum("rejected:" in line for line in lines) == 20
    assert "  ... 3 more" in lines
    assert f"  rejected rows written to {tmp_path / 'cat' / 'rejected.jsonl'}" in lines
    code, out, err = run(capsys, "catalog", "build", str(listings), "--catalog",
                         str(tmp_path / "cat"), "--no-plugins", "--json")
    assert code == 1 and json.loads(out)["rejected"] == 23


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
    assert code == 1 and "not a JPEG, PNG, WebP, HEIC/HEIF or AVIF" in err

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
    assert code == 1
    assert out.endswith("0 added, 0 updated, 0 skipped (stored already), 12 rejected\n")
    assert f"image not found: ../store/nw-jacket-blue.jpg (images must be files inside " \
           f"{tmp_path / 'exports'}; another folder is named by --images-root" in err
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
    assert lines[:3] == [f"catalog {catalog_copy}", "  listings:     12 (0 sold, 12 asking)",
                         "  vectors:      12"]
    assert lines[3].startswith("  model:        local:") and lines[3].endswith("(dimension 64)")
    assert lines[4].startswith("  size on disk: ") and "KiB" in lines[4]
    assert lines[5:7] == ["  categories:", "    jacket    5"]
    code, out, _ = run(capsys, "catalog", "stats", "--catalog", str(catalog_copy), "--json")
    assert json.loads(out)["categories"]["jacket"] == 5
    assert (json.loads(out)["sold"], json.loads(out)["asking"]) == (0, 12)

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


# -- analyze at volume -------------------------------------------------------------

CATALOG_IMAGES = sorted((EXAMPLES / "catalog" / "images").glob("*.jpg"))


def photo_folder(folder: Path, count: int) -> list[str]:
    """``count`` photos in ``folder``: the catalog's, then mirrored copies as PNG and
    WebP; their names in the order restyle takes them."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        source = CATALOG_IMAGES[i % len(CATALOG_IMAGES)]
        if i < len(CATALOG_IMAGES):
            name = source.name
            shutil.copy(source, folder / name)
        else:
            name = f"{source.stem}-mirrored.{'png' if i % 2 else 'webp'}"
            with Image.open(source) as img:
                img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(folder / name)
        names.append(name)
    return sorted(names)


@pytest.fixture
def model_loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The open_clip models loaded from now on, by model id (none are cached yet)."""
    from restyle.encoders import openclip
    from restyle.encoders.openclip import encoder as openclip_encoder

    loads: list[str] = []
    create = openclip.OpenClipEncoder._create

    def counted(self: openclip.OpenClipEncoder, spec: openclip.ModelSpec) -> object:
        loads.append(spec.model_id)
        return create(self, spec)

    monkeypatch.setattr(openclip_encoder, "_CACHE", {})
    monkeypatch.setattr(openclip.OpenClipEncoder, "_create", counted)
    return loads


def json_lines(out: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.splitlines()]


def test_a_folder_of_20_photos_is_one_model_load_and_20_json_lines(
    tiny_env: None, catalog_copy: Path, tmp_path: Path, model_loads: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "shots"
    names = photo_folder(folder, 20)
    (folder / "notes.txt").write_text("not a photo")
    (folder / "._ks-sneaker-green.jpg").write_bytes(b"\0\5\26\7 macOS metadata")
    photo_folder(folder / "older", 2)  # a subfolder: only with --recursive

    code, out, err = run(capsys, "analyze", str(folder), "--json", "--catalog",
                         str(catalog_copy), "--no-plugins")
    # No progress bar when stderr is not a terminal; the tally beside the JSON Lines.
    assert (code, err) == (0, "20 analysed (0 degraded), 0 failed\n")
    assert len(model_loads) == 1
    lines = json_lines(out)
    assert len(lines) == 20
    assert [line["photo"] for line in lines] == [str(folder / name) for name in names]
    for line in lines:
        analysis = Analysis.from_dict(line["analysis"])  # type: ignore[arg-type]
        assert analysis.model_id == model_loads[0] and analysis.comps
    green = next(line for line in lines if str(line["photo"]).endswith("/ks-sneaker-green.jpg"))
    assert green["analysis"]["comps"][0]["listing"]["listing_id"] == "ks-sneaker-green"  # type: ignore[index]

    code, out, _ = run(capsys, "analyze", str(folder), "--recursive", "--json", "--catalog",
                       str(catalog_copy), "--no-plugins")
    photos = [line["photo"] for line in json_lines(out)]
    assert code == 0 and len(photos) == 22
    assert photos[-2:] == [str(folder / "older" / name) for name in sorted(os.listdir(
        folder / "older"))]
    assert len(model_loads) == 1


def comp_ranks(summary: str) -> list[str]:
    """The ranks of the comps a summary lists under its headed columns."""
    lines = summary.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["#", "alike"])
    rows = [line.split() for line in lines[start + 1:] if line.startswith("  ")]
    return [row[1] if row[0] == "*" else row[0] for row in rows if row[0] != "also"]


def test_several_photos_give_a_summary_each_under_its_name(
    tiny_env: None, catalog_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = CATALOG_IMAGES[:2]
    code, out, err = run(capsys, "analyze", str(first), str(second), "--top", "1",
                         "--format", "summary", "--catalog", str(catalog_copy), "--no-plugins")
    assert (code, err) == (0, "")
    out, tally = out.rsplit("\n\n", 1)
    assert tally == "2 analysed (0 degraded), 0 failed\n"
    blocks = out.split("\n\n==> ")
    assert len(blocks) == 2
    assert blocks[0].startswith(f"==> {first} <==\n") and blocks[1].startswith(f"{second} <==\n")
    for block in blocks:
        assert "Price:" in block and "brand:" in block
        assert comp_ranks(block) == ["1"]


def test_a_glob_is_expanded_by_restyle_sorted_and_always_jsonl(
    tiny_env: None, catalog_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    names = photo_folder(tmp_path / "shots", 14)
    photo_folder(tmp_path / "shots" / "deeper", 1)
    code, out, _ = run(capsys, "analyze", str(tmp_path / "shots" / "*.jpg"), "--json",
                       "--catalog", str(catalog_copy), "--no-plugins")
    assert code == 0
    assert [line["photo"] for line in json_lines(out)] == [
        str(tmp_path / "shots" / name) for name in names if name.endswith(".jpg")]

    # One match is still a line of JSONL, keyed with its path: a glob's output has one shape.
    code, out, _ = run(capsys, "analyze", str(tmp_path / "shots" / "*.png"), "--json",
                       "--catalog", str(catalog_copy), "--no-plugins")
    (line,) = json_lines(out)
    assert code == 0 and str(line["photo"]).endswith("-mirrored.png") and "analysis" in line

    code, out, _ = run(capsys, "analyze", str(tmp_path / "shots" / "**" / "ac-bag-*.jpg"),
                       "--json", "--catalog", str(catalog_copy), "--no-plugins")
    assert [line["photo"] for line in json_lines(out)] == [
        str(tmp_path / "shots" / "ac-bag-beige.jpg"),
        str(tmp_path / "shots" / "deeper" / "ac-bag-beige.jpg")]


def test_a_glob_or_folder_with_no_photos_is_an_error_line_and_the_rest_go_on(
    tiny_env: None, catalog_copy: Path, tmp_path: Path, model_loads: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "empty").mkdir()
    photo_folder(tmp_path / "nested" / "deeper", 1)
    pattern = str(tmp_path / "*.heic")
    code, out, err = run(capsys, "analyze", pattern, str(tmp_path / "empty"),
                         str(tmp_path / "nested"), "--json", "--catalog", str(catalog_copy),
                         "--no-plugins")
    assert (code, model_loads) == (1, [])  # nothing to analyse: no model is loaded
    none = "no JPEG, PNG, WebP, HEIC/HEIF or AVIF files"
    assert json_lines(out) == [
        {"photo": pattern, "error": f"{none} match"},
        {"photo": str(tmp_path / "empty"), "error": f"{none} in this folder"},
        {"photo": str(tmp_path / "nested"), "error": f"{none} in this folder "
                                                     "(--recursive looks in its subfolders)"}]
    errors = [f"restyle: error: {line['photo']}: {line['error']}" for line in json_lines(out)]
    assert err.splitlines() == [*errors, "0 analysed (0 degraded), 3 failed", "failed:",
                                *[f"  {line['photo']}: {line['error']}"
                                  for line in json_lines(out)]]

    code, out, err = run(capsys, "analyze", pattern, str(SAMPLE_PHOTO), "--json",
                         "--catalog", str(catalog_copy), "--no-plugins")
    assert code == 1 and err.startswith(
        f"restyle: error: {pattern}: no JPEG, PNG, WebP, HEIC/HEIF or AVIF files match\n1 analysed")
    assert [sorted(line) for line in json_lines(out)] == [["error", "photo"],
                                                          ["analysis", "photo"]]


def test_a_corrupt_photo_in_a_folder_fails_alone_with_exit_status_1(
    tiny_env: None, catalog_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "shots"
    names = photo_folder(folder, 4)
    (folder / "broken.jpg").write_bytes(CATALOG_IMAGES[0].read_bytes()[:600])
    code, out, err = run(capsys, "analyze", str(folder), "--json", "--catalog",
                         str(catalog_copy), "--no-plugins")
    assert code == 1
    lines = json_lines(out)
    assert [line["photo"] for line in lines] == [str(folder / n) for n in sorted(
        [*names, "broken.jpg"])]
    broken = next(line for line in lines if "error" in line)
    assert broken["photo"] == str(folder / "broken.jpg")
    assert "broken.jpg" in str(broken["error"]) and "truncated" in str(broken["error"])
    assert sum("analysis" in line for line in lines) == 4
    assert err == (f"restyle: error: {folder / 'broken.jpg'}: {broken['error']}\n"
                   f"4 analysed (0 degraded), 1 failed\nfailed:\n"
                   f"  {folder / 'broken.jpg'}: {broken['error']}\n")

    (folder / "a-broken.jpg").write_bytes(b"")  # failures first: no gap before the first summary
    code, out, err = run(capsys, "analyze", str(folder), "--format", "summary", "--catalog",
                         str(catalog_copy), "--no-plugins")
    assert code == 1 and out.count("==> ") == 4
    assert out.split("\n\n4 analysed")[0].count("broken.jpg") == 0
    assert out.startswith(f"==> {folder / names[0]} <==\n")
    first, second = err.splitlines()  # the tally, with the failures again, on stdout
    assert "\n4 analysed (0 degraded), 2 failed\nfailed:\n" in out
    assert first.startswith(f"restyle: error: {folder / 'a-broken.jpg'}: ")
    assert second.startswith(f"restyle: error: {folder / 'broken.jpg'}: ")


def test_one_photo_on_stdin(
    tiny_env: None, catalog_copy: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    photo = EXAMPLES / "catalog" / "images" / "ks-sneaker-green.jpg"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(photo.read_bytes())))
    code, out, err = run(capsys, "analyze", "-", "--json", "--catalog", str(catalog_copy),
                         "--no-plugins")
    assert (code, err) == (0, "")
    data = json.loads(out)  # one photo: the Analysis itself, as before
    assert data["comps"][0]["listing"]["listing_id"] == "ks-sneaker-green"

    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(photo.read_bytes())))
    code, out, err = run(capsys, "analyze", "-", str(SAMPLE_PHOTO), "--json", "--catalog",
                         str(catalog_copy), "--no-plugins")
    assert (code, err) == (0, "2 analysed (0 degraded), 0 failed\n")
    assert [line["photo"] for line in json_lines(out)] == ["-", str(SAMPLE_PHOTO)]


def test_stdin_mistakes_are_usage_errors(
    tiny_env: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    class Terminal(io.TextIOWrapper):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdin", Terminal(io.BytesIO()))
    code, out, err = run(capsys, "analyze", "-", "--no-plugins")
    assert (code, out) == (2, "")
    assert err == ("restyle analyze: error: - reads a photo from stdin, but stdin is a terminal; "
                   "pipe one in: restyle analyze - < photo.jpg\n")
    code, _, err = run(capsys, "analyze", "-", "-", "--no-plugins")
    assert code == 2 and err == ("restyle analyze: error: - (a photo on stdin) can be given "
                                 "only once\n")


def test_record_takes_a_single_photo(
    tiny_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "analyze", str(SAMPLE_PHOTO), str(SAMPLE_PHOTO), "--record",
                         str(tmp_path / "run"), "--no-plugins")
    assert (code, out) == (2, "")
    assert err == ("restyle analyze: error: --record records the analysis of a single photo "
                   "file or --item\n")
    assert not (tmp_path / "run").exists()


def test_an_item_is_recorded_with_every_photo_and_replayed(
    tiny_env: None, catalog_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    front, tag = CATALOG_IMAGES[:2]
    code, _, _ = run(capsys, "analyze", "--item", str(front), f"tag={tag}", "--record",
                     str(tmp_path / "run"), "--catalog", str(catalog_copy), "--no-plugins",
                     "--no-log")
    assert code == 0
    names = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert names == ["analysis.json", "photo-1.jpg", "photo.jpg", "recording.json",
                     "vectors.npy"]
    recording = load_recording(tmp_path / "run")
    assert [r for r in recording.roles] == ["whole", "tag"]
    assert recording.replay(load_entrypoints=False).same


def test_top_limits_the_summary_and_the_json_and_must_not_be_negative(
    tiny_env: None, catalog_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ("analyze", str(SAMPLE_PHOTO), "--catalog", str(catalog_copy), "--no-plugins")
    code, out, _ = run(capsys, *base, "--json")
    everything = len(json.loads(out)["comps"])
    assert code == 0 and everything > 2
    code, out, _ = run(capsys, *base, "--json", "--top", "2")
    assert code == 0 and len(json.loads(out)["comps"]) == 2
    code, out, _ = run(capsys, *base, "--top", "0")
    assert code == 0 and f"Comps ({everything} found" in out and "   1. " not in out

    for bad, message in [("-3", "must be 0 or more, got -3"), ("many", "not a whole number")]:
        with pytest.raises(SystemExit) as exit_:
            main([*base, "--top", bad])
        assert exit_.value.code == 2
        assert f"argument --top: {message}" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["0", "-1", "soon", "nan", "inf"])
def test_deadline_must_be_a_positive_number_of_seconds(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["analyze", str(SAMPLE_PHOTO), "--deadline", bad])
    assert exit_.value.code == 2 and "argument --deadline: " in capsys.readouterr().err


def test_deadline_reaches_the_engine(
    tiny_env: None, catalog_copy: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from restyle.cli import common

    made: list[Engine] = []

    class Recorded(Engine):
        def __init__(self, **options: Any) -> None:
            super().__init__(**options)
            made.append(self)

    monkeypatch.setattr(common, "Engine", Recorded)
    code, _, _ = run(capsys, "analyze", str(SAMPLE_PHOTO), "--deadline", "7.5", "--catalog",
                     str(catalog_copy), "--no-plugins")
    assert code == 0 and made[0].deadline == 7.5


def test_model_option_picks_the_openclip_model(
    tiny_model_spec: str, catalog_copy: Path, model_loads: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "analyze", str(SAMPLE_PHOTO), "--model", tiny_model_spec,
                       "--json", "--catalog", str(catalog_copy), "--no-plugins")
    assert code == 0
    assert json.loads(out)["model_id"] == model_loads[0]
    assert model_loads[0].startswith("local:")

    code, out, err = run(capsys, "analyze", str(SAMPLE_PHOTO), "--model", tiny_model_spec,
                         "--encoder", "color", "--no-plugins")
    assert (code, out) == (1, "")
    assert "model= chooses the openclip encoder's model, but the encoder is 'color'" in err


def test_encoder_option_picks_a_plugins_encoder(
    tmp_path: Path, install_plugin: Callable[[Path], None], model_loads: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    project = tmp_path / "restyle-colors"
    (project / "src" / "restyle_colors").mkdir(parents=True)
    (project / "pyproject.toml").write_text(
        '[project]\nname = "restyle-colors"\nversion = "1.0"\n\n'
        '[project.entry-points.restyle]\ncolors = "restyle_colors"\n')
    (project / "src" / "restyle_colors" / "__init__.py").write_text(
        "import restyle\nfrom restyle.testing import ColorEncoder\n\n\n@restyle.hookimpl\n"
        "def register_encoders(register):\n    register(ColorEncoder())\n")
    install_plugin(project)
    code, out, err = run(capsys, "analyze", str(SAMPLE_PHOTO), "--encoder", "color",
                         "--experts", "clip", "--marketplaces", "", "--json")
    assert (code, err) == (0, "")
    assert json.loads(out)["model_id"] == "color-histogram-4"
    assert model_loads == []


def test_the_summary_shows_a_synthesizer_fallback(
    tiny_env: None, catalog_copy: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    code, out, _ = run(capsys, "analyze", str(SAMPLE_PHOTO), "--synthesizer", "gemini",
                         "--catalog", str(catalog_copy), "--no-plugins")
    assert code == 0
    (line,) = [line for line in out.splitlines() if line.startswith("  synthesizer: ")]
    assert line.startswith("  synthesizer: consensus (fallback: gemini failed: ")
    assert "GEMINI_API_KEY" in line

    code, out, _ = run(capsys, "analyze", str(SAMPLE_PHOTO), "--catalog", str(catalog_copy),
                       "--no-plugins")
    assert code == 0 and "synthesizer:" not in out  # shown only when it fell back


def test_every_option_has_help() -> None:
    def parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    yield from parsers(child)

    missing = [
        f"{parser.prog} {action.option_strings or action.dest}"
        for parser in parsers(command_parser()) for action in parser._actions
        if not action.help and not isinstance(action, argparse._SubParsersAction)
    ]
    assert not missing, missing


def test_the_progress_bar_shows_on_a_terminal_and_leaves_the_output_alone(
    tiny_env: None, catalog_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from restyle import _progress

    monkeypatch.setattr(_progress, "_stderr_is_terminal", lambda: True)
    photo_folder(tmp_path / "shots", 3)
    code, out, err = run(capsys, "analyze", str(tmp_path / "shots"), "--json", "--catalog",
                         str(catalog_copy), "--no-plugins")
    assert code == 0
    assert "Analyzing:" in err and "/3 " in err
    assert len(json_lines(out)) == 3


@pytest.mark.parametrize(("argv", "address", "photos"), [
    (["analyze", "--ray", "a.jpg", "b.jpg"], "auto", ["a.jpg", "b.jpg"]),
    (["analyze", "--ray", "local", "a.jpg"], "local", ["a.jpg"]),
    (["analyze", "--ray", "10.0.0.5:6379", "a.jpg"], "10.0.0.5:6379", ["a.jpg"]),
    (["analyze", "--ray", "ray://head:10001", "a.jpg"], "ray://head:10001", ["a.jpg"]),
    (["analyze", "a.jpg", "--ray"], "auto", ["a.jpg"]),
    (["analyze", "--ray", "--json", "a.jpg"], "auto", ["a.jpg"]),
    (["analyze", "a.jpg"], None, ["a.jpg"]),
])
def test_a_photo_after_ray_is_a_photo_not_a_cluster_address(
        argv: list[str], address: str | None, photos: list[str]) -> None:
    args = command_parser().parse_args(ray_values_attached(argv))
    assert args.ray == address
    assert args.photo == photos


# -- the last line of defence ----------------------------------------------------------


def test_an_unexpected_error_is_one_line_and_exit_1(
    tiny_env: None, catalog_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # An HTML report written where a folder is: an OSError no command turns into words.
    argv = ["backtest", "--catalog", str(catalog_copy), "--limit", "1", "--no-plugins",
            "--html", str(tmp_path)]
    code, out, err = run(capsys, *argv)
    assert code == 1 and "unexpected" not in out
    assert err.startswith("restyle: error: unexpected IsADirectoryError: ")
    assert err.endswith(" (run with -v for the traceback)\n") and err.count("\n") == 1
    assert "Traceback" not in err

    code, _, err = run(capsys, "-v", *argv)
    assert code == 1
    assert "Traceback (most recent call last):" in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("restyle: error: unexpected IsADirectoryError: ")
    assert "run with -v" not in last


def test_the_command_in_its_own_process_ends_with_the_traceback_and_one_line(
    tiny_env: None, catalog_copy: Path, tmp_path: Path
) -> None:
    argv = [sys.executable, "-m", "restyle", "-v", "backtest", "--catalog", str(catalog_copy),
            "--limit", "1", "--no-plugins", "--html", str(tmp_path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 1, done.stderr
    assert "Traceback (most recent call last):" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith(
        "restyle: error: unexpected IsADirectoryError")


def test_an_interrupted_command_exits_130(tmp_path: Path) -> None:
    # The photo on stdin never comes: the command waits until it is interrupted.
    script = ("import sys\nfrom restyle import cli\nprint('ready', flush=True)\n"
              "sys.exit(cli.main(['analyze', '-', '--no-plugins']))\n")
    reader, writer = os.pipe()
    try:
        process = subprocess.Popen([sys.executable, "-c", script], stdin=reader,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert process.stdout is not None and process.stdout.readline() == "ready\n"
            time.sleep(0.5)  # into main, reading stdin
            process.send_signal(signal.SIGINT)
            _, err = process.communicate(timeout=60)
        finally:
            process.kill()
    finally:
        os.close(reader)
        os.close(writer)
    assert process.returncode == 130, err
    assert err == "restyle: interrupted\n"


EXIT_SCRIPT = """
import atexit, sys, threading, time
from restyle._pipeline import budget as _budget
from restyle.cli import main

atexit.register(lambda: sys.stderr.write("interpreter shutdown ran\\n"))
if sys.argv[1] == "abandon":
    try:  # a component call that overruns its deadline and goes on running
        _budget.call(object(), "stuck expert", threading.Event().wait,
                     deadline=time.monotonic() + 0.2)
    except Exception as exc:
        print(f"abandoned: {type(exc).__name__}", flush=True)
    assert _budget.abandoned_calls() == 1
sys.argv = ["restyle", *sys.argv[2:]]
sys.exit(main())
"""


@pytest.mark.parametrize("abandon", [True, False])
def test_the_command_ends_its_process_with_its_status_past_an_abandoned_call(
    tmp_path: Path, abandon: bool
) -> None:
    """With a call still running, the process ends as the command returns (its
    status kept, no interpreter shutdown for the call to abort); without one,
    it exits as any program does."""
    commands: list[tuple[list[str], int]] = [
        (["plugins", "--no-plugins"], 0), (["replay", str(tmp_path / "none"), "--no-plugins"], 1)]
    for argv, status in commands:
        done = subprocess.run(
            [sys.executable, "-c", EXIT_SCRIPT, "abandon" if abandon else "-", *argv],
            capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == status, done.stderr
        assert ("abandoned: " in done.stdout) == abandon
        assert ("interpreter shutdown ran" in done.stderr) == (not abandon)
        if status:
            assert done.stderr.startswith("restyle: error: no recording in ")
        else:
            assert "encoder" in done.stdout  # the output was flushed before the end

"""``restyle catalog build`` on a reseller's own listings file: the words the
command line uses, and a build that stores nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from restyle.cli import main
from tests.conftest import SAMPLE_LISTINGS


@pytest.fixture
def tiny_env(monkeypatch: pytest.MonkeyPatch, tiny_model_spec: str) -> None:
    monkeypatch.setenv("RESTYLE_MODEL", tiny_model_spec)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def listings_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "listings"
    shutil.copytree(SAMPLE_LISTINGS.parent / "images", folder / "images")
    return folder


def test_a_build_that_rejects_every_row_exits_1_and_leaves_no_empty_catalog(
    tiny_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listings = listings_folder(tmp_path) / "listings.csv"
    listings.write_text("id,title,price,image\n"
                        "a,coat,ten,images/nw-jacket-blue.jpg\n"
                        "b,hat,5,../elsewhere/hat.jpg\n")
    catalog = tmp_path / "cat"
    code, out, err = run(capsys, "catalog", "build", str(listings), "--catalog", str(catalog),
                         "--no-plugins")
    assert code == 1
    assert out.endswith("0 added, 0 updated, 0 skipped (stored already), 2 rejected\n")
    assert ("restyle: error: no listing was stored: every row was rejected; no catalog was "
            f"made at {catalog}") in err
    # The CLI names its own option, not the Python argument.
    assert "another folder is named by --images-root" in err
    assert sorted(p.name for p in catalog.iterdir()) == ["rejected.jsonl"]
    assert len((catalog / "rejected.jsonl").read_text().splitlines()) == 2
    code, out, err = run(capsys, "catalog", "stats", "--catalog", str(catalog))
    assert code != 0  # no catalog claims to be there

    code, out, _ = run(capsys, "catalog", "build", str(listings), "--catalog", str(catalog),
                       "--no-plugins", "--json")
    assert code == 1
    report = json.loads(out)
    assert report["catalog"] is None and report["rejected"] == 2


def test_the_json_report_and_the_text_use_one_word_for_rows_stored_already(
    tiny_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = listings_folder(tmp_path)
    listings = folder / "listings.jsonl"
    listings.write_text(SAMPLE_LISTINGS.read_text())
    catalog = str(tmp_path / "cat")
    assert run(capsys, "catalog", "build", str(listings), "--catalog", catalog,
               "--no-plugins")[0] == 0
    code, out, _ = run(capsys, "catalog", "build", str(listings), "--catalog", catalog,
                       "--no-plugins")
    assert code == 0 and "0 added, 0 updated, 12 skipped (stored already)" in out
    code, out, _ = run(capsys, "catalog", "build", str(listings), "--catalog", catalog,
                       "--no-plugins", "--json")
    assert code == 0 and json.loads(out)["skipped"] == 12 and "unchanged" not in out
    # A catalog that exists already is kept, whatever the new file holds.
    (folder / "bad.jsonl").write_text('{"id": "x", "title": "t", "price": "?", "image": "a"}\n')
    code, _, err = run(capsys, "catalog", "build", str(folder / "bad.jsonl"), "--catalog",
                       catalog, "--no-plugins")
    assert code == 1 and "its one row was rejected" in err and "no catalog was made" not in err
    assert run(capsys, "catalog", "stats", "--catalog", catalog)[0] == 0

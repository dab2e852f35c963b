"""``restyle draft``: one item's photos made a readable draft, drafts as JSON
lines and as the bulk-upload CSV, offline."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.test_cli import CATALOG_IMAGES, run


@pytest.fixture
def tiny_env(monkeypatch: pytest.MonkeyPatch, tiny_model_spec: str) -> None:
    monkeypatch.setenv("RESTYLE_MODEL", tiny_model_spec)
    for name in ("EBAY_CLIENT_ID", "EBAY_CLIENT_SECRET", "EBAY_MARKETPLACE_ID"):
        monkeypatch.delenv(name, raising=False)


def test_draft_of_one_item_is_readable_and_of_photos_json_lines_and_csv(
    tiny_env: None, catalog_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    front, flaw = CATALOG_IMAGES[:2]
    code, out, _ = run(capsys, "draft", "--item", str(front), f"flaw={flaw}", "--price",
                       "quick", "--catalog", str(catalog_copy), "--no-plugins")
    assert code == 0
    assert "/80]" in out.splitlines()[0]
    assert "  price      " in out and "(quick)" in out
    assert "  condition  Used (3000): Flaws shown in photo 2" in out
    assert "to settle:" in out and "offline" in out
    table = tmp_path / "drafts.csv"
    code, out, _ = run(capsys, "draft", *map(str, CATALOG_IMAGES[:2]), str(tmp_path / "nope"),
                       "--json", "--csv", str(table), "--catalog", str(catalog_copy),
                       "--no-plugins")
    assert code == 1  # the missing photo
    lines = [json.loads(line) for line in out.splitlines()]
    assert [("draft" in line, "error" in line) for line in lines] == [
        (True, False), (True, False), (False, True)]
    assert lines[0]["draft"]["price"]["strategy"] == "market"
    rows = list(csv.DictReader(table.open(encoding="utf-8")))
    assert [row["*Title"] for row in rows] == [line["draft"]["title"] for line in lines[:2]]

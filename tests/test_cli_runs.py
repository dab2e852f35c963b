"""restyle analyze over a folder: the table, the CSV, the HTML report, the tally,
the history and 'restyle logs', the price explained, the pricing options."""

from __future__ import annotations

import csv
import io
import json
import re
import sqlite3
import threading
from html.parser import HTMLParser
from pathlib import Path

import pytest

from restyle import _history
from restyle._history import History
from tests.test_cli import CATALOG_IMAGES, photo_folder, run


@pytest.fixture
def tiny_env(monkeypatch: pytest.MonkeyPatch, tiny_model_spec: str) -> None:
    monkeypatch.setenv("RESTYLE_MODEL", tiny_model_spec)


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    """Three photos and a broken one."""
    folder = tmp_path / "shots"
    photo_folder(folder, 3)
    (folder / "broken.jpg").write_bytes(CATALOG_IMAGES[0].read_bytes()[:600])
    return folder


def test_a_folder_is_a_table_a_csv_and_a_tally_with_the_failures_again(
    tiny_env: None, catalog_copy: Path, shots: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    table = tmp_path / "run.csv"
    code, out, err = run(capsys, "analyze", str(shots), "--csv", str(table), "--catalog",
                         str(catalog_copy), "--no-plugins", "--no-log")
    assert code == 1
    lines = out.splitlines()
    assert lines[0].split() == ["photo", "brand", "product", "price", "range", "basis"]
    (broken,) = [line for line in lines[1:5] if line.endswith("broken.jpg failed")]
    assert all(re.search(r"\d+\.\d\d USD +\d", line) for line in lines[1:5] if line != broken)
    assert lines[5:8] == ["", "3 analysed (0 degraded), 1 failed", "failed:"]
    assert lines[8].startswith(f"  {shots / 'broken.jpg'}: ") and "truncated" in lines[8]
    assert err.count("restyle: error: ") == 1  # the failure as it came, on stderr

    rows = list(csv.DictReader(table.open(newline="")))
    assert [row["photo"] for row in rows] == sorted(str(p) for p in shots.iterdir())
    assert sorted(row["status"] for row in rows) == ["failed", "ok", "ok", "ok"]
    failed = next(row for row in rows if row["status"] == "failed")
    assert "truncated" in failed["problem"] and failed["price"] == ""
    bag = next(row for row in rows if row["photo"].endswith("ac-bag-beige.jpg"))
    assert bag["brand"] == "Acme Outfitters" and float(bag["price"]) > 0
    assert bag["currency"] == "USD" and bag["basis"] in ("sold", "mixed", "asking")

    code, out, _ = run(capsys, "analyze", str(shots), "--csv", "-", "--catalog",
                       str(catalog_copy), "--no-plugins", "--no-log")
    assert next(iter(csv.reader(io.StringIO(out))))[:3] == ["photo", "status", "brand"]


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.rows = 0
        self.sortable: list[str] = []
        self.scripts: list[dict[str, str | None]] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "img":
            self.images.append(found["src"] or "")
        elif tag == "tr":
            self.rows += 1
        elif tag == "th" and "data-sortable" in found:
            self.sortable.append("")
        elif tag == "script":
            self.scripts.append(found)
        elif tag == "link":
            self.links.append(str(found.get("href")))


def test_the_html_report_has_a_sortable_row_per_photo_with_thumbnails_and_no_cdn(
    tiny_env: None, catalog_copy: Path, shots: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = tmp_path / "report.html"
    code, _, err = run(capsys, "analyze", str(shots), "--html", str(report), "--catalog",
                       str(catalog_copy), "--no-plugins", "--no-log")
    assert code == 1 and f"HTML report written to {report}" in err
    page = _Page()
    text = report.read_text()
    page.feed(text)
    assert page.rows == 1 + 4  # the header and one row per photo
    assert len(page.sortable) >= 6
    assert page.scripts == [{}] and page.links == []  # inline script, nothing from elsewhere
    # Each analysed photo's thumbnail and its comps' (the catalog's files), all inline.
    assert len(page.images) >= 3 * 2
    assert all(src.startswith("data:image/jpeg;base64,") for src in page.images)
    assert max(len(src) for src in page.images) < 20_000
    assert "broken.jpg" in text and "truncated" in text and "Acme Outfitters" in text


def test_the_report_escapes_what_listings_say(tmp_path: Path) -> None:
    from restyle._display import report_html, report_row_html

    hostile = "<script>alert(1)</script>"
    page = report_html([report_row_html(hostile, hostile)], title="t", intro=hostile)
    assert hostile not in page and "&lt;script&gt;" in page


def test_every_analysis_is_logged_and_logs_lists_searches_shows_and_exports(
    tiny_env: None, catalog_copy: Path, shots: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    code, _, _ = run(capsys, "analyze", str(shots), "--json", "--catalog", str(catalog_copy),
                     "--no-plugins")
    assert code == 1
    path = _history.default_path()
    assert path.exists()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == _history.SCHEMA_VERSION
    code, out, _ = run(capsys, "logs")
    assert code == 0 and len(out.splitlines()) == 1 + 4
    assert "Acme Outfitters" in out and "failed" in out
    code, out, _ = run(capsys, "logs", "--product", "TOTE", "--json")
    (entry,) = [json.loads(line) for line in out.splitlines()]
    assert entry["brand"] == "Acme Outfitters" and entry["analysis"]["comps"]
    assert "thumbnail" in entry["analysis"]["photo"]  # a small one; never the photo's bytes
    code, out, _ = run(capsys, "logs", "list", "-q", "BROKEN")
    assert code == 0 and len(out.splitlines()) == 2 and "broken.jpg" in out
    code, out, _ = run(capsys, "logs", "show", str(entry["id"]))
    assert code == 0 and out.startswith(f"#{entry['id']} ") and "Price:" in out
    code, out, _ = run(capsys, "logs", "export")
    assert [json.loads(line)["id"] for line in out.splitlines()] == [1, 2, 3, 4]
    code, _, err = run(capsys, "logs", "show", "99")
    assert code == 1 and "no analysis 99" in err

    monkeypatch.setenv("RESTYLE_NO_LOG", "1")
    run(capsys, "analyze", str(shots), "--catalog", str(catalog_copy), "--no-plugins")
    monkeypatch.delenv("RESTYLE_NO_LOG")
    run(capsys, "analyze", str(shots), "--catalog", str(catalog_copy), "--no-plugins",
        "--no-log")
    assert len(History().entries(limit=None)) == 4


def test_the_history_is_bounded_versioned_and_safe_with_writers_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_history, "MAX_ENTRIES", 50)
    history = History(tmp_path / "h.sqlite")
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            mine = History(tmp_path / "h.sqlite")  # its own connections, as a process has
            for i in range(20):
                mine.add(f"w{n}-{i}.jpg", "could not read")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    entries = history.entries(limit=None)
    assert len(entries) == 50 and entries[0].id == 80  # the newest 50 of 80
    with sqlite3.connect(history.path) as conn:
        conn.execute("PRAGMA user_version = 99")
    with pytest.raises(Exception, match="newer restyle"):
        history.entries()


def test_a_history_that_cannot_be_written_is_one_warning(
    tiny_env: None, catalog_copy: Path, shots: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    (tmp_path / "home").write_text("a file where the folder would be")
    monkeypatch.setenv("RESTYLE_HOME", str(tmp_path / "home"))
    code, out, err = run(capsys, "analyze", str(shots), "--catalog", str(catalog_copy),
                         "--no-plugins")
    assert code == 1 and "3 analysed" in out
    assert err.count("warning: not logged to the history") == 1


def test_the_summary_heads_its_columns_marks_the_counted_comps_and_never_miscounts(
    tiny_env: None, catalog_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from restyle import Analysis
    from restyle.cli.summary import summary_text

    photo = CATALOG_IMAGES[0]
    code, out, _ = run(capsys, "analyze", str(photo), "--json", "--catalog", str(catalog_copy),
                       "--no-plugins", "--no-log")
    assert code == 0
    analysis = Analysis.from_json(out)
    assert analysis.price.ok and analysis.price.comps_used >= 3
    counted = {p.listing_key for p in analysis.price.counted}
    text = summary_text(analysis, 1)
    assert "  #  alike" in text.replace("   #", "  #") and " condition " in text
    lines = text.splitlines()
    price_line = next(line for line in lines if line.startswith("Price: "))
    shown_counted = int(analysis.comps[0].listing.key in counted)
    assert (f"from {analysis.price.comps_used} comps ({shown_counted} of them shown below"
            in price_line)
    hidden = [i for i, c in enumerate(analysis.comps, start=1)
              if i > 1 and c.listing.key in counted]
    assert f"also counted in the price, not shown: #{hidden[0]}" in text
    full = summary_text(analysis, len(analysis.comps))
    marked = [line for line in full.splitlines() if line.startswith("  * ")]
    assert len(marked) == len(counted)
    assert "(marked * below)" in full
    for raw in ("duplicate_image", "below_cutoff", "like_new"):
        assert raw not in full


def test_pricing_options_and_variables_reach_analyze_and_not_enough_data_has_no_basis(
    tiny_env: None, catalog_copy: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    photo = str(CATALOG_IMAGES[0])
    base = ["analyze", photo, "--catalog", str(catalog_copy), "--no-plugins", "--no-log"]
    code, out, _ = run(capsys, *base, "--minimum-comps", "99")
    assert code == 0 and "Price: not enough data (" in out and "99 needed" in out
    assert "basis:" not in out
    monkeypatch.setenv("RESTYLE_MINIMUM_COMPS", "98")
    code, out, _ = run(capsys, *base, "--json")
    assert json.loads(out)["price"]["minimum_comps"] == 98
    code, out, _ = run(capsys, *base, "--json", "--minimum-comps", "2")
    assert json.loads(out)["price"]["minimum_comps"] == 2  # the option wins
    monkeypatch.setenv("RESTYLE_MINIMUM_COMPS", "three")
    code, _, err = run(capsys, *base)
    assert code == 1 and "RESTYLE_MINIMUM_COMPS must be a whole number" in err
    monkeypatch.delenv("RESTYLE_MINIMUM_COMPS")
    monkeypatch.setenv("RESTYLE_HALF_LIFE_DAYS", "7")
    code, out, _ = run(capsys, *base, "--json")
    assert json.loads(out)["price"]["half_life_days"] == 7.0


def test_the_notebook_view_says_the_basis_and_marks_counted_comps(
    tiny_env: None, catalog_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from restyle import Analysis

    code, out, _ = run(capsys, "analyze", str(CATALOG_IMAGES[0]), "--json", "--catalog",
                       str(catalog_copy), "--no-plugins", "--no-log")
    assert code == 0
    analysis = Analysis.from_json(out)
    page = analysis._repr_html_()
    assert f"basis: {analysis.price.basis.value}" in page  # type: ignore[union-attr]
    assert page.count("counted in the price") == min(
        len(analysis.price.counted), 24)

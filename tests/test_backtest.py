"""Backtests: a catalog whose answers are computable by hand, a data set of sales,
the hold-out that keeps an item (and its copies) out of its own estimate."""

from __future__ import annotations

import csv
import io
import json
import shutil
import xml.etree.ElementTree as ET
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from restyle import (
    BacktestReport,
    ConfigurationError,
    Engine,
    Money,
    PriceStatus,
    Reranker,
    backtest,
)
from restyle._evaluation.backtest import (
    LABEL_CHARACTERS,
    BacktestItem,
    error_histogram,
    read_sales,
    summarise,
)
from restyle.cli import main
from restyle.testing import ColorEncoder
from tests.conftest import SAMPLE_LISTINGS

# Every red pixel lands in one colour-histogram bin and every blue one in
# another, so the ColorEncoder gives all reds one vector (similarity 1 with a
# red photo) and all blues another (similarity 0). Each is a different picture
# (a shading across it: rising, falling, a peak, half of each), so only the
# copy is the same picture as its original, in the same bytes.
REDS = {"red-10": ("red", 0, "10"), "red-12": ("red", 1, "12"),
        "red-14": ("red", 2, "14"), "red-16": ("red", 3, "16")}
BLUES = {"blue-100": ("blue", 0, "100"), "blue-110": ("blue", 1, "110"),
         "blue-120": ("blue", 2, "120")}


def picture(colour: str, shading: int) -> Image.Image:
    """64 x 64 pixels of one colour bin, shaded across by one of four patterns."""
    x = np.arange(64) / 63
    ramps = [np.tile(x, (64, 1)), np.tile(1 - x, (64, 1)),
             np.tile(1 - abs(2 * x - 1), (64, 1)),
             np.vstack([np.tile(x, (32, 1)), np.tile(1 - x, (32, 1))])]
    t = ramps[shading]
    strong, green = 205 + 45 * t, 50 * t  # within one bin of 64 levels each
    weak = np.full_like(t, 20)
    rgb = (strong, green, weak) if colour == "red" else (weak, green, strong)
    return Image.fromarray(np.stack(rgb, axis=-1).round().astype(np.uint8))


def write_listings(directory: Path, *, sold: bool | None = None) -> Path:
    images = directory / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for group, category in ((REDS, "scarf"), (BLUES, "hat")):
        for listing_id, (colour, shading, price) in group.items():
            picture(colour, shading).save(images / f"{listing_id}.png")
            rows.append({"id": listing_id, "title": f"{category} {listing_id}",
                         "category": category, "price": price, "currency": "USD",
                         "image": f"images/{listing_id}.png"})
    # The same picture as red-10, listed again: it must be held out with red-10.
    shutil.copy(images / "red-10.png", images / "red-copy.png")
    rows.append({"id": "red-copy", "title": "scarf red-copy", "category": "scarf",
                 "price": "10", "currency": "USD", "image": "images/red-copy.png"})
    if sold is not None:
        for row in rows:
            row["sold"] = sold
    path = directory / "listings.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def colour_catalog(tmp_path: Path) -> Path:
    listings = write_listings(tmp_path / "source")
    catalog = tmp_path / "catalog"
    builder = Engine(encoder=ColorEncoder(), catalog=catalog, experts=[], marketplaces=[],
                     load_entrypoints=False)
    report = builder.build_catalog(listings, progress=False)
    assert report.added == 8 and not report.rejected
    builder.catalog.close()
    return catalog


def engine_on(catalog: Path, **options: object) -> Engine:
    settings: dict[str, object] = {
        "encoder": ColorEncoder(), "catalog": catalog, "experts": ["catalog"],
        "marketplaces": ["catalog"], "load_entrypoints": False,
        "reranker": Reranker(cache=None),
    }
    settings.update(options)
    return Engine(**settings)  # type: ignore[arg-type]


# By hand, minimum 3 comps, equal weights (every red comp has similarity 1,
# every blue comp 0 and is left out): each red is priced by the other reds'
# weighted median and p25-p75; red-10 and red-copy hold each other out; a blue
# has two other blues, too few.
EXPECTED = {
    #            estimate, low, high, error, inside
    "red-10": ("14", "12", "16", 0.4, False),      # others 12 14 16
    "red-copy": ("14", "12", "16", 0.4, False),    # others 12 14 16
    "red-12": ("12", "10", "15", 0.0, True),       # others 10 10 14 16: midpoints
    "red-14": ("11", "10", "14", 3 / 14, True),    # others 10 10 12 16
    "red-16": ("11", "10", "13", 5 / 16, False),   # others 10 10 12 14
}


def check_hand_computed(report: BacktestReport) -> None:
    items = {i.listing_id: i for i in report.items}
    assert set(items) == {*REDS, *BLUES, "red-copy"}
    for listing_id, (estimate, low, high, error, inside) in EXPECTED.items():
        item = items[listing_id]
        assert (item.estimate, item.low, item.high) == (Decimal(estimate), Decimal(low),
                                                        Decimal(high)), listing_id
        assert item.error == pytest.approx(error) and item.inside is inside, listing_id
        assert item.status is PriceStatus.OK and item.basis == "asking"
    for listing_id in BLUES:
        assert items[listing_id].status is PriceStatus.NOT_ENOUGH_DATA
        assert items[listing_id].comps_used == 2 and items[listing_id].error is None
    assert set(items["red-10"].held_out) == {"catalog:red-10", "catalog:red-copy"}
    assert set(items["red-12"].held_out) == {"catalog:red-12"}
    assert report.count == 8 and report.priced == 5 and report.not_enough_data == 3
    assert report.failed == 0 and report.other_currency == 0
    assert report.median_error == pytest.approx(5 / 16)  # of 0, 3/14, 5/16, 0.4, 0.4
    assert report.coverage == pytest.approx(2 / 5) and report.nominal_coverage == 0.5
    groups = {(g.by, g.label): g for g in report.groups}
    scarves = groups[("category", "scarf")]
    assert (scarves.items, scarves.priced) == (5, 5)
    assert scarves.median_error == pytest.approx(5 / 16)
    assert (groups[("category", "hat")].items, groups[("category", "hat")].priced) == (3, 0)
    assert groups[("comps used", "0-2")].items == 3  # the blues
    assert groups[("comps used", "3-5")].items == 5  # the reds: 3 or 4 comps
    assert groups[("comps used", "3-5")].coverage == pytest.approx(0.4)
    assert sum(g.items for g in report.groups if g.by == "confidence") == 8


def test_leave_one_out_over_the_catalog_gives_the_hand_computed_answer(
    colour_catalog: Path,
) -> None:
    report = backtest(engine_on(colour_catalog), progress=False)
    check_hand_computed(report)
    assert report.source.startswith("leave-one-out over the catalog")
    assert BacktestReport.from_dict(json.loads(json.dumps(report.to_dict()))) == report


@pytest.mark.parametrize("form", ["jsonl", "csv", "parquet"])
def test_a_data_set_of_sales_gives_the_same_answer(
    colour_catalog: Path, tmp_path: Path, form: str
) -> None:
    source = write_listings(tmp_path / "sales", sold=True)
    rows = [json.loads(line) for line in source.read_text().splitlines()]
    rows.append({**rows[0], "id": "not-sold", "sold": False})
    rows.append({**rows[0], "id": "no-price", "price": ""})
    if form == "jsonl":
        dataset = source
        dataset.write_text("".join(json.dumps(r) + "\n" for r in rows) + "not json\n")
    elif form == "csv":
        dataset = source.with_suffix(".csv")
        with dataset.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({**r, "sold": str(r["sold"]).lower()} for r in rows)
    else:
        pa = pytest.importorskip("pyarrow")
        import pyarrow.parquet as pq

        dataset = source.with_suffix(".parquet")
        pq.write_table(pa.Table.from_pylist([{**r, "sold": str(r["sold"])} for r in rows]),
                       dataset)
    report = backtest(engine_on(colour_catalog), dataset, progress=False)
    check_hand_computed(report)
    assert any("not-sold" not in r and "not marked sold" in r for r in report.rejected)
    assert any("missing price" in r for r in report.rejected)
    assert len(report.rejected) == (3 if form == "jsonl" else 2)
    assert report.source == str(dataset)


def test_the_held_out_item_is_out_of_the_search_and_of_the_experts_sight(
    colour_catalog: Path,
) -> None:
    engine = engine_on(colour_catalog)
    photo = colour_catalog.parent / "source" / "images" / "red-10.png"
    seen = engine.analyze(photo)
    assert {"catalog:red-10", "catalog:red-copy"} <= {c.listing.key for c in seen.comps}
    held = engine.analyze(photo, exclude=["catalog:red-10", "catalog:red-copy"])
    keys = {c.listing.key for c in held.comps}
    assert keys == {"catalog:red-12", "catalog:red-14", "catalog:red-16",
                    "catalog:blue-100", "catalog:blue-110", "catalog:blue-120"}
    named = {o.text for o in held.opinions[0].entities}
    assert "scarf red-10" not in named and "scarf red-copy" not in named
    assert "scarf red-12" in named
    # Nothing was rebuilt or removed: the next analysis sees everything again.
    assert {c.listing.key for c in engine.analyze(photo).comps} == {
        c.listing.key for c in seen.comps}
    with pytest.raises(ConfigurationError, match=r"not a string|exclude must be .*got str"):
        engine.analyze(photo, exclude="catalog:red-10")


def test_a_recompressed_copy_of_the_photo_in_the_catalog_is_held_out_too(
    tmp_path: Path,
) -> None:
    listings = write_listings(tmp_path / "source")
    images = listings.parent / "images"
    # red-10 again, listed by someone else: the same picture as a JPEG of
    # quality 70, other bytes and another hash.
    Image.open(images / "red-10.png").save(images / "red-10-q70.jpg", quality=70)
    assert (images / "red-10-q70.jpg").read_bytes() != (images / "red-10.png").read_bytes()
    with listings.open("a") as fh:
        fh.write(json.dumps({"id": "red-10-q70", "title": "scarf red-10-q70",
                             "category": "scarf", "price": "10", "currency": "USD",
                             "image": "images/red-10-q70.jpg"}) + "\n")
    catalog = tmp_path / "catalog"
    builder = Engine(encoder=ColorEncoder(), catalog=catalog, experts=[], marketplaces=[],
                     load_entrypoints=False)
    assert builder.build_catalog(listings, progress=False).added == 9
    builder.catalog.close()
    engine = engine_on(catalog)
    # Its vector alone cannot tell it from the other reds: the picture can.
    photo = engine.analyze(images / "red-10.png")
    scores = {c.listing.listing_id: c.similarity for c in photo.comps}
    assert scores["red-10-q70"] == pytest.approx(scores["red-12"], abs=0.01)
    report = backtest(engine, progress=False)
    items = {i.listing_id: i for i in report.items}
    red = items["red-10"]
    # Priced by the other reds only, as without the copy: 12 14 16.
    assert (red.estimate, red.low, red.high) == (Decimal("14"), Decimal("12"), Decimal("16"))
    assert red.comps_used == 3
    assert set(red.held_out) == {"catalog:red-10", "catalog:red-copy", "catalog:red-10-q70"}
    assert red.near_duplicates == ("red-10-q70",)
    # And the other way round; the other reds are different pictures, kept.
    assert items["red-10-q70"].near_duplicates == ("red-10", "red-copy")
    assert items["red-12"].near_duplicates == () and items["red-12"].comps_used == 5
    assert report.near_duplicates == 4  # red-10, red-copy and red-10-q70 each other's
    assert ("  near-duplicates   4 held out (vector cosine >= 0.90, dHash within 10/64 bits, "
            "colours within 4/255)") in report.table()
    assert ("the listings with the same image bytes, and its near-duplicates in the catalog, "
            "the same picture recompressed or resized (vector cosine &gt;= 0.90, dHash within "
            "10/64 bits, colours within 4/255): 4 near-duplicates held out") in report.html()


def test_the_same_picture_in_other_bytes_is_one_a_recoloured_drawing_is_not() -> None:
    from restyle._input.imaging import load_photo
    from restyle._store.holdout import fingerprint, same_picture

    images = SAMPLE_LISTINGS.parent / "images"
    blue, other_blue, black = (load_photo(images / f"{name}.jpg").image for name in (
        "nw-jacket-blue", "ac-jacket-blue", "nw-jacket-black"))
    for original in (blue, other_blue, black):
        data = io.BytesIO()
        original.save(data, format="JPEG", quality=70)
        copy = load_photo(data.getvalue()).image
        half = copy.resize((copy.width // 2, copy.height // 2))
        assert same_picture(fingerprint(original), fingerprint(copy))
        assert same_picture(fingerprint(original), fingerprint(half))
    # One drawing in three colours: the shapes agree, the colours do not.
    assert not same_picture(fingerprint(blue), fingerprint(other_blue))
    assert not same_picture(fingerprint(blue), fingerprint(black))


def test_reports_as_table_json_and_html(colour_catalog: Path) -> None:
    report = backtest(engine_on(colour_catalog), progress=False)
    table = report.table()
    assert table.splitlines()[0].startswith("Backtest: 8 items (leave-one-out")
    assert "  median error      31.2%" in table
    assert "  coverage          40.0% inside p25-p75 (nominal 50%)" in table
    assert "  category    scarf              5      5        31.2%      40%" in table
    page = report.html()
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") == 3
    for svg in page.split("<svg")[1:]:
        ET.fromstring("<svg" + svg.split("</svg>")[0] + "</svg>")  # well-formed
    assert "Coverage by category" in page and "Coverage by comps used" in page
    histogram = dict(error_histogram(report))
    assert histogram["0-10%"] == 1 and histogram["20-30%"] == 1 and histogram["40-50%"] == 2


def test_the_html_page_fits_long_labels_and_paths_and_names_currencies(tmp_path: Path) -> None:
    long_category = "women's vintage embroidered denim trucker jackets (oversized)"
    path = "/srv/data/" + "a-very-deep-folder-name/" * 12 + "sale-0192.jpg"
    usd = Money(amount="61.00", currency="USD")
    items = [
        BacktestItem(listing_id="priced", title="t", category=long_category, realised=usd,
                     status=PriceStatus.OK, currency="USD", estimate=Decimal("55.00"),
                     low=Decimal("50.00"), high=Decimal("66.00"), comps_used=4, error=0.1,
                     inside=True),
        BacktestItem(listing_id="euros", title="t", category="hat", realised=usd,
                     status=PriceStatus.OK, currency="EUR", estimate=Decimal("48.00"),
                     low=Decimal("40.00"), high=Decimal("52.00"), comps_used=4),
        BacktestItem(listing_id="failed", title="t", category="hat", realised=usd,
                     failure=f"photo: photo not found: {path}"),
        BacktestItem(listing_id="short", title="t", category="hat", realised=usd,
                     status=PriceStatus.NOT_ENOUGH_DATA, comps_used=1),
    ]
    report = summarise(items, source="sales.jsonl")
    assert report.other_currency == 1
    page = report.html()
    # The summary counts what was priced in another currency.
    assert "other currency 1 (25%)" in page
    # Estimates and ranges say their currency.
    assert "<td>55.00 USD</td><td>50.00-66.00 USD</td>" in page
    assert "<td>48.00 EUR</td><td>40.00-52.00 EUR</td>" in page
    # A long label is cut to fit left of the bars, and whole in its tooltip.
    chart = next(part for part in page.split("<svg")[1:] if "Coverage by category" in part)
    svg = "{http://www.w3.org/2000/svg}"
    texts = ET.fromstring("<svg" + chart.split("</svg>")[0] + "</svg>").findall(f"{svg}text")
    label = next(t for t in texts if "".join(t.itertext()).startswith(long_category))
    assert label.get("text-anchor") == "end"
    title = label.find(f"{svg}title")
    assert title is not None and title.text == long_category
    shown = "".join(label.itertext())[len(long_category):]
    assert shown.endswith("…") and len(shown) == LABEL_CHARACTERS
    assert len(shown) * 7 <= float(label.get("x") or 0)  # 12 px text: inside the chart
    # The failure (a long absolute path) wraps in its cell instead of widening the table.
    assert f'<td class="wrap">photo: photo not found: {path}</td>' in page
    style = page.split("<style>")[1].split("</style>")[0]
    assert ".wrap{overflow-wrap:anywhere;word-break:break-word}" in style
    assert "table{border-collapse:collapse;max-width:100%}" in style


def test_unusable_data_sets_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="not found"):
        read_sales(tmp_path / "missing.jsonl")
    other = tmp_path / "sales.txt"
    other.write_text("x")
    with pytest.raises(ConfigurationError, match=r"\.jsonl, \.csv or \.parquet"):
        read_sales(other)


def test_an_unreadable_photo_fails_that_item_only(colour_catalog: Path, tmp_path: Path) -> None:
    dataset = write_listings(tmp_path / "sales", sold=True)
    (tmp_path / "sales" / "images" / "blue-120.png").write_bytes(b"not an image")
    report = backtest(engine_on(colour_catalog), dataset, progress=False)
    failed = [i for i in report.items if i.failure]
    assert [i.listing_id for i in failed] == ["blue-120"]
    assert "photo" in (failed[0].failure or "") and report.failed == 1
    assert report.priced == 5


def test_the_command_line_prints_writes_html_and_json(
    colour_catalog: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The command line takes its encoder from the environment; give it the colour one.
    monkeypatch.setattr("restyle.cli.evaluate.make_engine", lambda args, **kw: engine_on(
        colour_catalog, **{k: v for k, v in kw.items() if v is not None}))
    html_file = tmp_path / "report.html"
    assert main(["backtest", "--html", str(html_file), "--no-plugins"]) == 0
    out, err = capsys.readouterr()
    assert "median error      31.2%" in out and f"HTML report written to {html_file}" in err
    assert html_file.read_text().startswith("<!DOCTYPE html>")
    assert main(["backtest", "--json", "--limit", "2", "--minimum-comps", "4"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["count"] == 2 and data["items"][0]["listing_id"] == "red-10"
    # red-10 has 3 comps, fewer than 4; red-12 has 4.
    assert [i["status"] for i in data["items"]] == ["not_enough_data", "ok"]
    assert main(["backtest", "--limit", "0"]) == 1
    assert "--limit" in capsys.readouterr().err


def test_a_data_set_is_checked_as_a_catalog_build_checks_listings(tmp_path: Path) -> None:
    outside = tmp_path / "outside.png"
    Image.new("RGB", (8, 8), (1, 2, 3)).save(outside)
    folder = tmp_path / "sales"
    folder.mkdir()
    dataset = folder / "sales.jsonl"
    dataset.write_text(json.dumps({"id": "a", "title": "t", "price": "5", "sold": True,
                                   "image": "../outside.png"}) + "\n")
    sales, rejected = read_sales(dataset)
    assert sales == [] and len(rejected) == 1 and "image not found" in rejected[0]
    sales, rejected = read_sales(dataset, images_root=tmp_path)
    assert [s.listing.listing_id for s in sales] == ["a"] and rejected == []
    assert sales[0].image == str(outside.resolve()) and sales[0].listing.sold is True


@pytest.mark.parametrize("form", ["jsonl", "csv"])
def test_a_sale_may_give_several_photos_of_its_item(
    colour_catalog: Path, tmp_path: Path, form: str
) -> None:
    from restyle.testing import ScriptedExpert

    source = write_listings(tmp_path / "sales", sold=True)
    rows = [json.loads(line) for line in source.read_text().splitlines()]
    for row in rows:
        row["photos"] = [f"tag={row['image']}", row["image"]]  # the same file: any picture will do
    (tmp_path / "outside.png").write_bytes((source.parent / rows[0]["image"]).read_bytes())
    rows[1]["photos"] = ["../outside.png"]
    if form == "jsonl":
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
        dataset = source
    else:
        dataset = source.with_suffix(".csv")
        with dataset.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows({**r, "sold": "true", "photos": "|".join(r["photos"])}
                             for r in rows)
    looker = ScriptedExpert("looker")
    report = backtest(engine_on(colour_catalog, experts=[looker]), dataset, progress=False)
    assert [r for r in report.rejected if "photos" in r] == [
        f"row {2 if form == 'jsonl' else 3}: photos: image not found: ../outside.png "
        "(images must be files inside "
        f"{source.parent}; another folder is named by --images-root, images_root= in Python)"]
    analysed = len(report.items)
    assert analysed == len(rows) - 1 and not [i for i in report.items if i.failure]
    assert looker.calls == 3 * analysed  # every photo of every item examined

"""The local catalog on bad data: bounded streaming ingestion, confined image
paths, image URLs, integrity on open, check, repair and stats."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import tracemalloc
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from restyle import (
    Catalog,
    CatalogError,
    Engine,
    Fetcher,
    ListingLimits,
    Query,
)
from restyle._ingestion.listings import read_listings
from restyle.testing import FakeServer, Reply
from tests.conftest import SAMPLE_LISTINGS
from tests.fakes.components import ColorEncoder
from tests.test_index import age, kill, stalled_save

SAMPLE_ROWS = [json.loads(line) for line in SAMPLE_LISTINGS.read_text().splitlines()]
GOOD = {"id": "good", "title": "Northwind jacket", "price": "58.00",
        "image": "images/nw-jacket-blue.jpg"}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A listings folder with the sample images in ``images/``."""
    root = tmp_path / "listings"
    shutil.copytree(SAMPLE_LISTINGS.parent / "images", root / "images")
    return root


def write_jsonl(folder: Path, rows: list[Any], name: str = "listings.jsonl") -> Path:
    path = folder / name
    with path.open("wb") as fh:
        for row in rows:
            fh.write(row if isinstance(row, bytes) else json.dumps(row).encode())
            fh.write(b"\n")
    return path


def build(folder: Path, source: Path, **kwargs: Any):  # type: ignore[no-untyped-def]
    encoder = kwargs.pop("encoder", ColorEncoder())
    with Catalog.open(folder.parent / "cat", encoder, create=True) as catalog:
        report = catalog.build(source, encoder, progress=False, **kwargs)
    with sqlite3.connect(folder.parent / "cat" / "catalog.sqlite") as db:
        listings = {row[0]: row for row in db.execute(
            "SELECT listing_id, title, price, image_path FROM items")}
    return report, listings


def reasons(report) -> dict[int, str]:  # type: ignore[no-untyped-def]
    return {r.row: r.reason for r in report.rejected}


def strict_json_lines(path: Path) -> list[dict[str, Any]]:
    def refuse(name: str) -> None:
        raise AssertionError(f"{name} is not JSON")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


# -- prices --------------------------------------------------------------------


def test_prices_outside_the_sane_range_are_rejected_with_the_reason(folder: Path) -> None:
    rows = [
        {**GOOD, "id": "huge", "price": "1e30"},
        {**GOOD, "id": "zero", "price": "0"},
        {**GOOD, "id": "negative", "price": "-3"},
        {**GOOD, "id": "nan", "price": "NaN"},
        {**GOOD, "id": "words", "price": "ten dollars"},
        {**GOOD, "id": "bool", "price": True},
        {**GOOD, "id": "yen", "price": "5000000000", "currency": "JPY"},
        {**GOOD, "id": "dollars", "price": "5000000000", "currency": "USD"},
        {**GOOD, "id": "exp", "price": "1e3"},
        {**GOOD, "id": "cur", "currency": "dollars"},
    ]
    report, stored = build(folder, write_jsonl(folder, rows))
    assert reasons(report) == {
        1: "bad price '1e30': above the USD maximum of 1,000,000,000",
        2: "bad price '0': below the minimum of 0.01",
        3: "bad price '-3': below the minimum of 0.01",
        4: "bad price 'NaN': not a finite number",
        5: "bad price 'ten dollars': not a number",
        6: "bad price True: not a number",
        8: "bad price '5000000000': above the USD maximum of 1,000,000,000",
        10: "bad currency 'DOLLARS': not a 3-letter ISO 4217 code",
    }
    assert stored["yen"][2] == "5000000000" and stored["exp"][2] == "1000"


def test_prices_as_spreadsheets_export_them_are_read_by_the_locale_rule(folder: Path) -> None:
    accepted = {  # price cell, currency column -> stored price, currency
        ("$89.99", None): ("89.99", "USD"),
        ("1,200.00", None): ("1200.00", "USD"),
        ("1,200", None): ("1200", "USD"),  # a comma before three digits: thousands
        ("12,345,678.5", None): ("12345678.5", "USD"),
        ("€12,50", None): ("12.50", "EUR"),  # a comma before the cents, no dot
        ("12,5 €", "eur"): ("12.5", "EUR"),
        ("USD 1,050.25", None): ("1050.25", "USD"),
        ("89.99 GBP", "GBP"): ("89.99", "GBP"),
        ("£7", None): ("7", "GBP"),
        ("C$15", None): ("15", "CAD"),
        ("$15", "AUD"): ("15", "AUD"),  # $ is any dollar's sign
        ("¥4,800", "CNY"): ("4800", "CNY"),
        ("¥4,800", None): ("4800", "JPY"),
        ("58.00", "SEK"): ("58.00", "SEK"),
    }
    refused = {
        ("1.200,00", None): "bad price '1.200,00': ambiguous separators; write it with a dot "
                            "before the cents and commas only between groups of three digits "
                            "(1,200.00 or 1200.00; 12,50 for 12.50 is read too)",
        ("1,200,5", None): "bad price '1,200,5': ambiguous separators",
        ("12,3456", None): "bad price '12,3456': ambiguous separators",
        ("€12", "USD"): "bad price '€12': its currency mark is not the currency column's USD",
        ("$5 USD", None): "bad price '$5 USD': two currency marks ('$' and 'USD')",
        ("#5", None): "bad price '#5': not a number ('#' is not a currency symbol or code "
                      "restyle knows)",
        ("-$5", None): "bad price '-$5': below the minimum of 0.01",
        ("12 000", None): "bad price '12 000': not a number",
    }
    cases = [*accepted, *refused]
    rows = [{**GOOD, "id": f"p{i}", "price": price,
             **({"currency": currency} if currency else {})}
            for i, (price, currency) in enumerate(cases)]
    report, _ = build(folder, write_jsonl(folder, rows))
    found = reasons(report)
    assert {number - 1 for number in found} == set(range(len(accepted), len(cases)))
    for i, case in enumerate(cases[len(accepted):], start=len(accepted) + 1):
        assert found[i].startswith(refused[case]), (case, found[i])
    with sqlite3.connect(folder.parent / "cat" / "catalog.sqlite") as db:
        kept = {row[0]: (row[1], row[2]) for row in db.execute(
            "SELECT listing_id, price, currency FROM items")}
    assert kept == {f"p{i}": value for i, value in enumerate(accepted.values())}


def test_json_numbers_that_are_not_finite_are_rejected_and_written_as_strict_json(
    folder: Path,
) -> None:
    source = write_jsonl(folder, [
        b'{"id": "inf", "title": "t", "image": "images/ls-tee-red.jpg", "price": Infinity}',
        b'{"id": "big", "title": "t", "image": "images/ls-tee-red.jpg", "price": 1e999}',
        b'{"id": "nan", "title": "t", "image": "images/ls-tee-red.jpg", "price": NaN, '
        b'"extra": [NaN, -Infinity]}',
        json.dumps(GOOD).encode(),
    ])
    report, stored = build(folder, source)
    assert set(stored) == {"good"}
    assert reasons(report) == {1: "bad price inf: not a finite number",
                               2: "bad price inf: not a finite number",
                               3: "bad price nan: not a finite number"}
    lines = strict_json_lines(folder.parent / "cat" / "rejected.jsonl")
    assert [line["data"]["price"] for line in lines] == ["inf", "inf", "nan"]
    assert lines[2]["data"]["extra"] == ["nan", "-inf"]


def test_a_catalog_never_holds_a_price_the_estimate_cannot_compute_with(
    folder: Path, tiny_encoder: Any
) -> None:
    rows = [{**row, "id": f"{row['id']}-{i}"} for i, row in enumerate(SAMPLE_ROWS)]
    rows += [{**SAMPLE_ROWS[0], "id": "absurd", "price": "1e30"}]
    source = write_jsonl(folder, rows)
    engine = Engine(encoder=tiny_encoder, catalog=folder.parent / "cat", load_entrypoints=False)
    report = engine.build_catalog(source, progress=False)
    assert report.added == len(SAMPLE_ROWS) and report.rejected_count == 1
    analysis = engine.analyze(folder / "images" / "nw-jacket-blue.jpg")  # no InvalidOperation
    assert analysis.price.ok


def test_limits_must_leave_room_for_the_price_arithmetic() -> None:
    with pytest.raises(ValueError, match="max_price"):
        ListingLimits(max_price=Decimal("1e30"))
    with pytest.raises(ValueError, match="title"):
        ListingLimits(title=0)


# -- image paths ------------------------------------------------------------------


def test_image_paths_are_confined_to_the_listings_folder(folder: Path) -> None:
    outside = folder.parent / "outside"
    outside.mkdir()
    shutil.copy(folder / "images" / "ls-tee-red.jpg", outside / "x.jpg")
    (folder / "images" / "link.jpg").symlink_to(outside / "x.jpg")
    rows = [
        {**GOOD, "id": "up", "image": "../outside/x.jpg"},
        {**GOOD, "id": "up-missing", "image": "../outside/nothing.jpg"},
        {**GOOD, "id": "absolute", "image": str(outside / "x.jpg")},
        {**GOOD, "id": "absolute-missing", "image": str(outside / "nothing.jpg")},
        {**GOOD, "id": "link", "image": "images/link.jpg"},
        {**GOOD, "id": "missing", "image": "images/nothing.jpg"},
        {**GOOD, "id": "etc", "image": "/etc/passwd"},
        {**GOOD, "id": "dir", "image": "images"},
        {**GOOD, "id": "file-url", "image": "file:///etc/passwd"},
        {**GOOD, "id": "inside-absolute", "image": str(folder / "images" / "ls-tee-red.jpg")},
        GOOD,
    ]
    report, stored = build(folder, write_jsonl(folder, rows))
    assert set(stored) == {"good", "inside-absolute"}
    found = reasons(report)
    hint = (f"(images must be files inside {folder}; another folder is named by "
            "--images-root, images_root= in Python)")
    for number, row in enumerate(rows[:8], start=1):
        assert found[number] == f"image not found: {row['image']} {hint}", row["id"]
    assert found[9] == "bad image: must be a file path or an http(s) URL, not a 'file' URL"
    # Nothing tells an outside file that exists from one that does not.
    assert found[1].replace("x.jpg", "?") == found[2].replace("nothing.jpg", "?")
    assert str(outside.resolve() / "x.jpg") not in "".join(found.values()).replace(
        str(outside / "x.jpg") + " ", "")


def test_images_root_opts_in_to_another_folder(folder: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    store.mkdir()
    shutil.copy(folder / "images" / "ls-tee-red.jpg", store / "red.jpg")
    rows = [{**GOOD, "id": "stored", "image": str(store / "red.jpg")},
            {**GOOD, "id": "relative", "image": "../store/red.jpg"},
            {**GOOD, "id": "listing-folder", "image": "images/ls-tee-red.jpg"}]
    report, stored = build(folder, write_jsonl(folder, rows), images_root=store)
    assert set(stored) == {"stored", "relative"}
    assert reasons(report)[3].startswith("image not found: images/ls-tee-red.jpg (images must "
                                         f"be files inside {store};")
    with pytest.raises(CatalogError, match=r"images root .* is not a directory"):
        build(folder, write_jsonl(folder, rows), images_root=tmp_path / "nowhere")


def test_a_fifo_inside_the_folder_is_refused_without_blocking(folder: Path) -> None:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs here")
    os.mkfifo(folder / "images" / "pipe.jpg")
    report, stored = build(folder, write_jsonl(folder, [
        {**GOOD, "id": "pipe", "image": "images/pipe.jpg"}, GOOD]))
    assert set(stored) == {"good"}
    assert reasons(report)[1].startswith("image not found: images/pipe.jpg")


# -- image URLs --------------------------------------------------------------------


def test_listings_may_name_image_urls_fetched_through_the_guarded_fetcher(folder: Path) -> None:
    red = (folder / "images" / "ls-tee-red.jpg").read_bytes()
    routes = {"/red.jpg": Reply(body=red),
              "/html.jpg": Reply(body=b"<html>", content_type="image/jpeg")}
    with FakeServer(routes=routes) as server:
        rows = [
            {**GOOD, "id": "url", "image": server.url("/red.jpg?sig=s3cr3t")},
            {**GOOD, "id": "gone", "image": server.url("/gone.jpg?sig=s3cr3t")},
            {**GOOD, "id": "html", "image": server.url("/html.jpg")},
            GOOD,
        ]
        source = write_jsonl(folder, rows)
        fetcher = Fetcher(trusted_networks=["127.0.0.1/32"])
        report, stored = build(folder, source, fetcher=fetcher)
        assert set(stored) == {"url", "good"}
        assert stored["url"][3] == server.url("/red.jpg?sig=s3cr3t")
        found = reasons(report)
        assert found[2].startswith("image could not be fetched: ") and "404" in found[2]
        assert "s3cr3t" not in found[2]
        assert "is not a JPEG, PNG or WebP image" in found[3]
        requests = len(server.requests)
        again, _ = build(folder, source, fetcher=fetcher)
        assert again.skipped == 2 and again.added == 0
        # A stored URL is not fetched again; only the failures are retried.
        assert sorted(r.path for r in server.requests[requests:]) == ["/gone.jpg?sig=s3cr3t",
                                                                   "/html.jpg"]
        # The default fetcher refuses loopback and private addresses.
        with Catalog.open(folder.parent / "other", ColorEncoder(), create=True) as catalog:
            report = catalog.build(source, ColorEncoder(), progress=False)
        assert report.added == 1
        assert "loopback" in reasons(report)[1]


def test_image_urls_resolve_to_themselves_in_search_results(folder: Path) -> None:
    red = (folder / "images" / "ls-tee-red.jpg").read_bytes()
    with FakeServer(routes={"/red.jpg": Reply(body=red)}) as server:
        source = write_jsonl(folder, [{**GOOD, "image": server.url("/red.jpg")}])
        encoder = ColorEncoder()
        with Catalog.open(folder.parent / "cat", encoder, create=True) as catalog:
            catalog.build(source, encoder, progress=False,
                          fetcher=Fetcher(trusted_networks=["127.0.0.1/32"]))
            (listing,) = catalog.search_text(Query(text="jacket"))
    assert listing.image_url == server.url("/red.jpg")


# -- sizes, bytes and characters --------------------------------------------------


def test_oversized_fields_and_rows_are_rejected_and_the_rest_kept(folder: Path) -> None:
    limits = ListingLimits(title=50, brand=10, row_bytes=4096)
    rows = [
        {**GOOD, "id": "long-title", "title": "x" * 51},
        {**GOOD, "id": "long-brand", "brand": "b" * 11},
        {**GOOD, "id": "long-row", "description": "d" * 5000},
        {**GOOD, "id": "i" * 201},
        {**GOOD, "id": "long-url", "url": "https://example.com/" + "u" * 3000},
        {**GOOD, "id": "ftp-url", "url": "ftp://user:s3cr3t@example.com/"},
        GOOD,
    ]
    report, stored = build(folder, write_jsonl(folder, rows), limits=limits)
    assert set(stored) == {"good"}
    assert reasons(report) == {
        1: "title is 51 characters, over the limit of 50",
        2: "brand is 11 characters, over the limit of 10",
        3: "row is longer than the limit of 4096 bytes",
        4: "id is 201 characters, over the limit of 200",
        5: "url is 3020 characters, over the limit of 2048",
        6: "bad url: must be an http(s) URL, not a 'ftp' URL",
    }


def test_a_huge_row_is_skipped_without_being_read_into_memory(folder: Path) -> None:
    source = folder / "listings.jsonl"
    with source.open("wb") as fh:
        fh.write(json.dumps({**GOOD, "id": "first"}).encode() + b"\n")
        fh.write(b'{"id": "huge", "title": "')
        for _ in range(40):
            fh.write(b"x" * (1 << 20))  # a 40 MB title
        fh.write(b'", "price": "5", "image": "images/ls-tee-red.jpg"}\n')
        fh.write(json.dumps(GOOD).encode() + b"\n")
    build(folder, write_jsonl(folder, [GOOD], "warm-up.jsonl"))  # imports are not the build
    tracemalloc.start()
    try:
        report, stored = build(folder, source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert set(stored) == {"first", "good"}
    assert reasons(report) == {2: "row is longer than the limit of 262144 bytes"}
    assert peak < 8 * (1 << 20), f"peak {peak / (1 << 20):.1f} MiB"
    line = strict_json_lines(folder.parent / "cat" / "rejected.jsonl")[0]
    assert line == {"row": 2, "reason": "row is longer than the limit of 262144 bytes",
                    "data": {}}


def test_one_bad_byte_rejects_only_its_row(folder: Path) -> None:
    good = json.dumps(GOOD).encode()
    bad = json.dumps({**GOOD, "id": "bad", "title": "caf?"}).encode().replace(b"?", b"\xe9")
    report, stored = build(folder, write_jsonl(folder, [bad, good]))
    assert set(stored) == {"good"}
    offset = bad.index(b"\xe9")
    assert reasons(report) == {1: f"row is not UTF-8 text (byte 0xe9 at offset {offset})"}
    line = strict_json_lines(folder.parent / "cat" / "rejected.jsonl")[0]
    assert line["data"]["_line"].startswith('{"id": "bad"')


def test_control_characters_are_stripped_from_text_and_refused_in_ids_and_paths(
    folder: Path,
) -> None:
    rows = [
        {**GOOD, "id": "ctl", "title": "Nice\x00 jacket\x1b[0m\u202e\tsize M\r\n",
         "brand": "North\x00wind"},
        {**GOOD, "id": "nul\x00id"},
        {**GOOD, "id": "nul-path", "image": "images/nw-jacket-blue.jpg\x00.png"},
        {**GOOD, "id": "surrogate", "title": "bad \ud800 half"},
        {**GOOD, "id": "object", "title": {"en": "jacket"}},
    ]
    report, stored = build(folder, write_jsonl(folder, rows))
    assert stored["ctl"][1] == "Nice jacket[0m size M"
    assert stored["surrogate"][1] == "bad  half"
    assert reasons(report) == {2: "id contains control characters",
                               3: "image contains control characters",
                               5: "title must be text or a number, not dict"}


# -- CSV -------------------------------------------------------------------------


def write_csv(folder: Path, rows: list[dict[str, str]], extra: bytes = b"") -> Path:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["id", "title", "price", "image"],
                            extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    path = folder / "listings.csv"
    path.write_bytes(buffer.getvalue().encode() + extra)
    return path


def test_a_csv_field_over_the_csv_module_limit_rejects_only_its_row(folder: Path) -> None:
    rows = [{**GOOD, "id": "wide", "title": "t" * 200_000},  # over csv's own 131,072
            {**GOOD, "id": "wider", "title": "t" * 300_000},
            GOOD]
    report, stored = build(folder, write_csv(folder, rows))
    assert set(stored) == {"good"}
    assert reasons(report) == {2: "title is 200000 characters, over the limit of 1000",
                               3: "row is longer than the limit of 262144 bytes"}


def test_a_csv_quoted_field_that_never_ends_is_rejected_not_a_traceback(folder: Path) -> None:
    line = b'runaway,"never closed,5,images/ls-tee-red.jpg\n' + (b"x" * 60_000 + b"\n") * 6
    path = write_csv(folder, [GOOD], extra=line)
    report, stored = build(folder, path)
    assert set(stored) == {"good"}
    # What follows the runaway field is read as rows again (and rejected as such).
    assert reasons(report)[3] == "malformed CSV: field larger than field limit (263168)"


def test_an_unclosed_csv_quote_rejects_its_line_as_malformed_and_every_row_is_counted(
    folder: Path,
) -> None:
    good = ",".join(GOOD[key] for key in ("id", "title", "price", "image"))
    path = folder / "listings.csv"
    path.write_text(
        "id,title,price,image\n"
        f"{good}\n"
        'stray,"Shirt blue,30,images/ls-tee-red.jpg\n'  # the quote never closes
        'after,Coat,"70",images/ls-tee-red.jpg\n'  # ... but this line's quotes would
        'multi,"two\nlines",9,images/ls-tee-red.jpg\n'  # a real line break in a field
        'last,Hat,10,"images/ls-tee-red.jpg\n')  # the file ends inside a quote
    report, stored = build(folder, path)
    assert set(stored) == {"good", "after", "multi"}
    assert stored["multi"][1] == "two lines"
    assert reasons(report) == {
        3: "malformed CSV: a quoted field on line 3 is never closed (it would have "
           "swallowed line 4)",
        7: "malformed CSV: a quoted field on line 7 is never closed",
    }
    assert report.rows == 5
    assert report.rejected[0].data == {"_line": 'stray,"Shirt blue,30,images/ls-tee-red.jpg'}


def test_a_quote_that_swallows_a_line_not_utf8_loses_no_row_after_it(folder: Path) -> None:
    """A record whose quote closes on the next line with too few fields, then a
    lone quote that swallows a line of bad bytes and the rows after it: each
    bad line is rejected on its own, and the good rows after are kept."""
    good = ",".join(GOOD[key] for key in ("id", "title", "price", "image"))
    path = folder / "listings.csv"
    path.write_bytes(b'id,title,price,image\n"random-\n"\n\x80\n' + good.encode() + b"\n")
    report, stored = build(folder, path)
    assert set(stored) == {"good"}
    assert reasons(report) == {
        2: "malformed CSV: a quoted field on line 2 is never closed (it would have "
           "swallowed line 3)",
        3: "malformed CSV: a quoted field on line 3 is never closed (it would have "
           "swallowed lines 4-5)",
        4: "row is not UTF-8 text (byte 0x80 at offset 0)",
    }


def test_csv_bad_bytes_and_nuls_reject_or_clean_only_their_row(folder: Path) -> None:
    path = write_csv(folder, [{**GOOD, "id": "nul", "title": "a\x00b"}, GOOD],
                     extra=b"latin,caf\xe9,5,images/ls-tee-red.jpg\n" + b"after,ok,6,"
                           b"images/ls-tee-red.jpg\n")
    report, stored = build(folder, path)
    assert set(stored) == {"nul", "good", "after"} and stored["nul"][1] == "ab"
    assert reasons(report) == {4: "row is not UTF-8 text (byte 0xe9 at offset 9)"}


def test_a_csv_header_that_cannot_be_read_is_a_clear_error(folder: Path) -> None:
    path = folder / "listings.csv"
    path.write_bytes(b"id,ti\xfftle,price,image\n")
    with pytest.raises(CatalogError, match=r"the header row cannot be read .*not UTF-8"):
        build(folder, path)


# -- Parquet ------------------------------------------------------------------------


def test_parquet_is_read_by_record_batches(folder: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [{**GOOD, "id": f"p{i}", "description": "d" * 1000} for i in range(600)]
    rows[10]["price"] = "1e30"
    rows[20]["title"] = "t" * 2000
    table = pa.Table.from_pylist(rows)
    path = folder / "listings.parquet"
    pq.write_table(table, path, row_group_size=100)
    numbers = [r.number for r in read_listings(path)]
    assert numbers == list(range(1, 601))
    report, stored = build(folder, path)
    assert len(stored) == 598
    assert reasons(report) == {11: "bad price '1e30': above the USD maximum of 1,000,000,000",
                               21: "title is 2000 characters, over the limit of 1000"}


def test_a_damaged_parquet_file_keeps_what_was_read(folder: Path) -> None:
    pytest.importorskip("pyarrow")
    path = folder / "listings.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(CatalogError, match="cannot be read as Parquet"):
        build(folder, path)


def test_parquet_without_pyarrow_says_what_to_install(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    path = folder / "listings.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(CatalogError, match=r"needs pyarrow: pip install 'restyle\[parquet\]'"):
        build(folder, path)


# -- the build ---------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [32, 1])
def test_a_listing_twice_in_a_file_is_judged_against_the_row_before_it(
    folder: Path, batch_size: int,
) -> None:
    # Rows are judged as if stored one at a time, in one batch or across batches
    # (the write loop of an in-process build and of a Ray build alike): the same
    # image again is skipped with its other columns updated, the last row winning.
    rows = [GOOD, {**GOOD, "title": "second"}, {**GOOD, "title": "third"}]
    report, stored = build(folder, write_jsonl(folder, rows), batch_size=batch_size)
    assert (report.added, report.updated, report.skipped) == (1, 0, 2)
    assert stored["good"][1] == "third"


def test_a_listing_twice_with_another_image_is_updated_to_the_last(folder: Path) -> None:
    other = {**GOOD, "title": "second", "image": "images/nw-jacket-black.jpg"}
    report, stored = build(folder, write_jsonl(folder, [GOOD, other]))
    assert (report.added, report.updated, report.skipped) == (1, 1, 0)
    assert stored["good"][1:] == ("second", "58.00", str(folder / "images/nw-jacket-black.jpg"))


def test_a_clean_build_removes_the_previous_rejected_file(folder: Path) -> None:
    report, _ = build(folder, write_jsonl(folder, [GOOD, {"id": "x"}]))
    assert report.rejected_file is not None and report.rejected_file.is_file()
    report, _ = build(folder, write_jsonl(folder, [GOOD]))
    assert report.rejected_file is None
    assert not (folder.parent / "cat" / "rejected.jsonl").exists()


def test_the_report_keeps_the_first_rejections_and_counts_them_all(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("restyle._store.build.REPORTED_REJECTIONS", 5)
    report, _ = build(folder, write_jsonl(folder, [b"nope"] * 12 + [json.dumps(GOOD).encode()]))
    assert report.rejected_count == 12 and len(report.rejected) == 5 and report.added == 1
    assert report.rows == 13
    assert len((folder.parent / "cat" / "rejected.jsonl").read_text().splitlines()) == 12


def test_an_unknown_format_or_missing_file_is_a_clear_error(folder: Path) -> None:
    with pytest.raises(CatalogError, match=r"must be \.jsonl, \.csv or \.parquet, got l\.txt"):
        build(folder, folder / "l.txt")
    with pytest.raises(CatalogError, match="listings file not found"):
        build(folder, folder / "nothing.jsonl")


# -- integrity on open ---------------------------------------------------------------


@pytest.fixture
def built(folder: Path) -> Path:
    rows = [{**row, "id": f"{row['id']}-{i}"} for i in range(20) for row in SAMPLE_ROWS]
    report, _ = build(folder, write_jsonl(folder, rows))
    assert report.added == 240
    return folder.parent / "cat"


def snapshot(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() + str(p.stat().st_mtime_ns)
            for p in sorted(directory.iterdir())}


def test_an_empty_database_file_is_an_error_and_stays_empty(tmp_path: Path) -> None:
    directory = tmp_path / "cat"
    directory.mkdir()
    (directory / "catalog.sqlite").write_bytes(b"")
    for create in (False, True):
        with pytest.raises(CatalogError, match=r"catalog database .* is empty \(0 bytes\): it "
                                               r"was truncated or never written; restore it"):
            Catalog.open(directory, ColorEncoder(), create=create)
    assert (directory / "catalog.sqlite").stat().st_size == 0
    assert sorted(p.name for p in directory.iterdir()) == ["catalog.sqlite"]


def test_analyze_reports_an_empty_database_and_writes_nothing(
    tmp_path: Path, tiny_encoder: Any
) -> None:
    directory = tmp_path / "cat"
    directory.mkdir()
    (directory / "catalog.sqlite").write_bytes(b"")
    engine = Engine(encoder=tiny_encoder, catalog=directory, load_entrypoints=False)
    analysis = engine.analyze(SAMPLE_LISTINGS.parent / "images" / "ls-tee-red.jpg")
    assert any("is empty (0 bytes)" in w for w in analysis.warnings)
    assert (directory / "catalog.sqlite").stat().st_size == 0
    assert sorted(p.name for p in directory.iterdir()) == ["catalog.sqlite"]


def test_a_missing_index_with_rows_is_an_error_naming_repair(built: Path) -> None:
    (built / "vectors.faiss").unlink()
    with pytest.raises(CatalogError) as info:
        Catalog.open(built, ColorEncoder())
    assert str(info.value) == (
        f"the vector index {built / 'vectors.faiss'} is missing but the catalog has 240 "
        f"listings; run 'restyle catalog repair --catalog {built}' to rebuild it from the "
        "vectors stored in the database"
    )


def test_a_stale_or_unreadable_index_is_an_error_naming_repair(built: Path, tmp_path: Path) -> None:
    index = built / "vectors.faiss"
    data = index.read_bytes()
    index.write_bytes(data[: len(data) // 2])
    with pytest.raises(CatalogError, match=r"cannot be read.*restyle catalog repair"):
        Catalog.open(built, ColorEncoder())
    index.write_bytes(data)
    with Catalog.open(built, ColorEncoder(), create=True) as catalog:
        catalog.index.remove([1, 2, 3])
        catalog.index.save(index)
    with pytest.raises(CatalogError, match="holds 237 vectors for 240 listings: it is stale or "
                                           "damaged; run 'restyle catalog repair"):
        Catalog.open(built, ColorEncoder())


def test_a_truncated_or_foreign_database_is_an_error(built: Path, tmp_path: Path) -> None:
    db = built / "catalog.sqlite"
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])
    with pytest.raises(CatalogError, match=r"is truncated \(\d+ of \d+ bytes\)"):
        Catalog.open(built, ColorEncoder())
    db.write_bytes(b"hello " * 100)
    with pytest.raises(CatalogError, match="is not a SQLite database"):
        Catalog.open(built, ColorEncoder())
    other = tmp_path / "other"
    other.mkdir()
    with sqlite3.connect(other / "catalog.sqlite") as conn:
        conn.execute("CREATE TABLE notes (body TEXT)")
    conn.close()
    for create in (False, True):
        with pytest.raises(CatalogError, match="is not a restyle catalog"):
            Catalog.open(other, ColorEncoder(), create=create)


def test_a_catalog_from_a_newer_restyle_is_refused(built: Path) -> None:
    with sqlite3.connect(built / "catalog.sqlite") as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(CatalogError, match=r"schema version 99, newer than this restyle reads "
                                           r"\(2\); upgrade restyle"):
        Catalog.open(built, ColorEncoder())


def damage_page(path: Path, table: str = "items") -> None:
    """Overwrite a page in the middle of ``table`` with garbage."""
    with sqlite3.connect(path) as conn:
        (root,) = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?",
                               (table,)).fetchone()
        (page_size,) = conn.execute("PRAGMA page_size").fetchone()
        (pages,) = conn.execute("PRAGMA page_count").fetchone()
    conn.close()
    data = bytearray(path.read_bytes())
    page = max(root + 1, pages // 2)
    data[(page - 1) * page_size: page * page_size] = b"\x5a" * page_size
    path.write_bytes(bytes(data))


def test_a_damaged_page_is_a_catalog_error_not_a_database_error(built: Path) -> None:
    damage_page(built / "catalog.sqlite")
    damaged = r"catalog database .* is damaged .*restyle catalog check"
    with pytest.raises(CatalogError, match=damaged), Catalog.open(built, ColorEncoder()) as c:
        c.search_text(Query(text="jacket"))
        c.vectors_for([f"nw-jacket-blue-{i}" for i in range(20)])
    check = Catalog.check(built)
    assert not check.ok and "is damaged" in check.problems[0]
    with pytest.raises(CatalogError, match="repair rebuilds the vector index, not the database"):
        Catalog.repair(built, ColorEncoder())


def test_searching_never_writes_into_the_catalog(built: Path, folder: Path) -> None:
    before = snapshot(built)
    with Catalog.open(built, ColorEncoder()) as catalog:
        assert catalog.readonly
        catalog.search_text(Query(text="jacket"))
        catalog.search_vector(np.eye(64, dtype=np.float32)[0])
    engine = Engine(encoder=ColorEncoder(), catalog=built, experts=["catalog"],
                    marketplaces=["catalog"], load_entrypoints=False)
    analysis = engine.analyze(folder / "images" / "ls-bag-pink.jpg")
    assert analysis.comps[0].listing.listing_id.startswith("ls-bag-pink")
    engine.catalog.close()
    Catalog.stats(built)
    Catalog.check(built)
    assert snapshot(built) == before


def test_a_build_killed_mid_transaction_still_opens_read_only(built: Path) -> None:
    script = f"""
import os, sqlite3
db = sqlite3.connect({str(built / 'catalog.sqlite')!r})
db.execute("PRAGMA cache_size=1")
for i in range(3000):
    db.execute("INSERT INTO items (listing_id, title, condition, image_path, image_sha256) "
               "VALUES (?, 't', 'used', '/x.jpg', 'x')", (f"ghost-{{i}}",))
os._exit(0)  # killed: the journal stays behind
"""
    subprocess.run([sys.executable, "-c", script], check=True)
    assert (built / "catalog.sqlite-journal").exists()
    with Catalog.open(built, ColorEncoder()) as catalog:
        assert len(catalog) == 240


def test_a_catalog_opened_to_search_maps_its_index_and_keeps_the_file_it_opened(
    built: Path,
) -> None:
    """Opened to search, the flat index is mapped from its file, not read:
    the same answers, no change through it (faiss would abort the process),
    and a writer's save (a new file put in place) leaves its snapshot whole;
    the catalog reopened for writing reads the index as saved then."""
    query = ColorEncoder().encode_images([Image.new("RGB", (8, 8), (30, 60, 200))])[0]
    with Catalog.open(built, ColorEncoder(), readonly=False) as writer:
        assert not writer.index.mapped()
        expected = writer.index.search(query[None], 5)
    with Catalog.open(built, ColorEncoder()) as reader:
        index = reader.index
        assert index.mapped()
        np.testing.assert_array_equal(index.search(query[None], 5)[1], expected[1])
        with pytest.raises(CatalogError, match="mapped from its file"):
            index.remove([int(expected[1][0][0])])
        with pytest.raises(CatalogError, match="mapped from its file"):
            index.upsert([10**9], query)
        with Catalog.open(built, ColorEncoder(), readonly=False) as writer:
            assert writer.remove(["nw-jacket-blue-0"]) == 1
        assert len(index) == 240
        np.testing.assert_array_equal(index.search(query[None], 5)[1], expected[1])
        assert reader.remove(["nw-jacket-blue-1"]) == 1  # reopened for writing
        assert not reader.index.mapped() and len(reader.index) == 238


def test_removing_then_dying_before_the_index_is_saved_leaves_only_stray_vectors(
    built: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from restyle._indexes.flat import VectorIndex

    def dies(self: Any, path: Any) -> None:
        raise KeyboardInterrupt

    with Catalog.open(built, ColorEncoder()) as catalog:
        monkeypatch.setattr(VectorIndex, "save", dies)
        with pytest.raises(KeyboardInterrupt):
            catalog.remove(["nw-jacket-blue-0"])
    monkeypatch.undo()
    with Catalog.open(built, ColorEncoder()) as catalog:
        assert len(catalog) == 239 and len(catalog.index) == 240
    check = Catalog.check(built)
    assert check.ok and check.notes == (
        "1 vectors in the index belong to no listing (left by an interrupted build or "
        "removal); harmless, and repair drops them",)


# -- check, repair, stats ----------------------------------------------------------------


def test_check_finds_nothing_wrong_in_a_sound_catalog(built: Path) -> None:
    check = Catalog.check(built)
    assert check.ok and (check.rows, check.vectors) == (240, 240)
    assert check.model_id == "color-histogram-4" and check.notes == ()


def test_repair_rebuilds_the_index_from_the_vectors_in_the_database(built: Path) -> None:
    with Catalog.open(built, ColorEncoder()) as catalog:
        before = catalog.search_vector(catalog.vectors_for(["ls-bag-pink-3"])["ls-bag-pink-3"],
                                       limit=5)
    (built / "vectors.faiss").unlink()
    check = Catalog.check(built)
    assert check.problems == (f"the vector index {built / 'vectors.faiss'} is missing; run "
                              f"'restyle catalog repair --catalog {built}' to rebuild it",)
    encoder = ColorEncoder()
    report = Catalog.repair(built, encoder)
    assert (report.from_database, report.from_old_index, report.reembedded) == (240, 0, 0)
    assert encoder.images_encoded == 0
    with Catalog.open(built, encoder) as catalog:
        after = catalog.search_vector(catalog.vectors_for(["ls-bag-pink-3"])["ls-bag-pink-3"],
                                      limit=5)
    assert [(x.listing_id, round(s, 5)) for x, s in after] == [
        (x.listing_id, round(s, 5)) for x, s in before]
    assert Catalog.check(built).ok


def test_repair_re_embeds_listings_with_no_vector_and_removes_those_it_cannot(
    built: Path, folder: Path
) -> None:
    with sqlite3.connect(built / "catalog.sqlite") as conn:
        conn.execute("UPDATE items SET vector = NULL WHERE listing_id LIKE 'nw-%'")
        conn.execute("UPDATE items SET vector = x'00' WHERE listing_id = 'ls-bag-pink-0'")
    conn.close()
    (built / "vectors.faiss").unlink()
    (folder / "images" / "nw-mug-green.jpg").unlink()
    assert "1 listings have a damaged vector" in Catalog.check(built).problems[0]
    with pytest.raises(CatalogError, match="have no usable vector and must be re-embedded: "
                                           "repair with the catalog's model, color-histogram-4"):
        Catalog.repair(built)
    with pytest.raises(CatalogError, match="not color-histogram-2"):
        Catalog.repair(built, ColorEncoder(bins=2))
    encoder = ColorEncoder()
    report = Catalog.repair(built, encoder)
    nw = sum(1 for row in SAMPLE_ROWS if row["id"].startswith("nw-")) * 20
    assert report.reembedded == nw + 1 - 20 and report.from_database == 240 - nw - 1
    assert sorted(i for i, _ in report.removed) == sorted(f"nw-mug-green-{i}" for i in range(20))
    assert report.removed[0][1] == "image not found: " + str(
        (folder / "images" / "nw-mug-green.jpg").resolve())
    check = Catalog.check(built)
    assert check.ok and check.rows == 220


def test_a_catalog_from_before_vectors_were_stored_still_opens_and_repairs(built: Path) -> None:
    with sqlite3.connect(built / "catalog.sqlite") as conn:
        conn.execute("ALTER TABLE items DROP COLUMN vector")
        conn.execute("DELETE FROM meta WHERE key = 'schema_version'")
    conn.close()
    with Catalog.open(built, ColorEncoder()) as catalog:
        assert len(catalog) == 240 and catalog.search_text(Query(text="jacket"))
    assert "schema version 1" in Catalog.check(built).notes[0]
    report = Catalog.repair(built, ColorEncoder())
    assert (report.from_database, report.from_old_index) == (0, 240)
    assert Catalog.check(built).notes == ()


def test_a_repair_killed_while_saving_is_reported_as_such_and_its_temporary_removed(
    built: Path, tmp_path: Path
) -> None:
    # A catalog from before vectors were stored: repair upgrades it, takes the
    # vectors from the old index and is killed (SIGKILL) while saving the new one.
    with sqlite3.connect(built / "catalog.sqlite") as conn:
        conn.execute("ALTER TABLE items DROP COLUMN vector")
        conn.execute("DELETE FROM meta WHERE key = 'schema_version'")
    conn.close()
    child, temporary = stalled_save(tmp_path, """
        from restyle import Catalog
        Catalog.repair(sys.argv[3])
    """, "vectors.faiss", str(built))
    kill(child)
    assert temporary.parent == built and temporary.name.startswith(".vectors.faiss.")
    repair = f"run 'restyle catalog repair --catalog {built}'"
    check = Catalog.check(built)
    assert not check.ok and len(check.problems) == 1
    assert check.problems[0].startswith("a repair started at ")
    assert check.problems[0].endswith(
        "was stopped before it finished (killed, or the machine went down): the catalog is "
        f"as it was before that repair, which did not happen; {repair} again to finish it")
    assert check.notes == ("240 listings have no vector stored in the database yet: the "
                           "repair that was stopped had not stored them",)
    # Found only once it is older than a writer could be between creating and locking it.
    age(temporary)
    notes = Catalog.check(built).notes
    assert notes[1] == (f"1 temporary files left by a save that was stopped midway "
                        f"({temporary.name}); harmless, and repair or the next build removes "
                        "them")
    with Catalog.open(built, ColorEncoder()) as catalog:  # to search: nothing is written
        assert len(catalog) == 240 and catalog.search_text(Query(text="jacket"))
    assert temporary.exists()
    report = Catalog.repair(built)
    assert report.removed_temporaries == (temporary.name,) and not temporary.exists()
    assert (report.from_database, report.from_old_index) == (0, 240)
    check = Catalog.check(built)
    assert check.ok and check.notes == ()
    assert [p.name for p in built.iterdir() if p.name.startswith(".")] == []


def test_a_repair_fails_with_its_reason_and_check_does_not_call_it_stopped(built: Path) -> None:
    (built / "vectors.faiss").unlink()
    with sqlite3.connect(built / "catalog.sqlite") as conn:
        conn.execute("UPDATE items SET vector = NULL WHERE listing_id LIKE 'nw-%'")
    conn.close()
    with pytest.raises(CatalogError, match="must be re-embedded"):
        Catalog.repair(built)
    check = Catalog.check(built)
    assert not any("stopped" in problem for problem in check.problems)
    assert check.problems[0].startswith(f"the vector index {built / 'vectors.faiss'} is missing")


def test_a_live_writer_in_another_process_keeps_its_temporary_a_dead_ones_goes(
    built: Path, tmp_path: Path
) -> None:
    # Another process removes a listing and is still saving the index (stopped
    # between writing its temporary and renaming it) when a repair runs here.
    child, temporary = stalled_save(tmp_path, """
        from restyle import Catalog
        from tests.fakes.components import ColorEncoder
        with Catalog.open(sys.argv[3], ColorEncoder(), readonly=False) as catalog:
            catalog.remove(["nw-jacket-blue-0"])
    """, "vectors.faiss", str(built))
    try:
        age(temporary)  # however old it looks: its writer holds it
        report = Catalog.repair(built)
        assert report.removed_temporaries == () and temporary.exists()
        with Catalog.open(built, ColorEncoder(), readonly=False) as catalog:
            assert len(catalog) == 239
        assert temporary.exists()
        assert not any("temporary" in note for note in Catalog.check(built).notes)
    finally:
        kill(child)
    assert "1 temporary files" in Catalog.check(built).notes[0]
    # Dead now: opening for write (as a build does) removes it.
    with Catalog.open(built, ColorEncoder(), readonly=False) as catalog:
        assert len(catalog) == 239
    assert not temporary.exists() and Catalog.check(built).ok
    assert Catalog.check(built).notes == ()


def test_stats_reads_rows_vectors_model_size_and_categories(built: Path) -> None:
    stats = Catalog.stats(built)
    assert (stats.rows, stats.vectors, stats.model_id, stats.dim) == (240, 240,
                                                                      "color-histogram-4", 64)
    assert stats.schema_version == 2
    assert stats.bytes_on_disk == sum(p.stat().st_size for p in built.iterdir())
    expected: dict[str, int] = {}
    for row in SAMPLE_ROWS:
        expected[row["category"]] = expected.get(row["category"], 0) + 20
    assert stats.categories == expected
    assert list(stats.categories.values()) == sorted(stats.categories.values(), reverse=True)


def test_stats_and_check_on_a_missing_catalog(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="no catalog at"):
        Catalog.stats(tmp_path / "nothing")
    assert Catalog.check(tmp_path / "nothing").problems[0].startswith("no catalog at")


def test_image_hashes_reads_every_listing_read_only(built: Path, tmp_path: Path) -> None:
    from restyle._store.catalog import image_hashes

    with sqlite3.connect(built / "catalog.sqlite") as db:
        expected = dict(db.execute("SELECT listing_id, image_sha256 FROM items").fetchall())
    before = (built / "catalog.sqlite").stat().st_mtime_ns
    assert image_hashes(built) == expected and len(expected) == 240
    assert (built / "catalog.sqlite").stat().st_mtime_ns == before
    assert image_hashes(tmp_path / "nothing") == {}
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "catalog.sqlite").write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)
    with pytest.raises(CatalogError):
        image_hashes(tmp_path / "bad")


def test_images_are_decoded_small_whatever_their_size(folder: Path) -> None:
    big = Image.new("RGB", (4000, 3000), (200, 30, 30))
    big.save(folder / "images" / "big.png")
    seen: list[tuple[int, int]] = []
    encoder = ColorEncoder()
    real = encoder.encode_images

    def spy(images):  # type: ignore[no-untyped-def]
        seen.extend(img.size for img in images)
        return real(images)

    encoder.encode_images = spy  # type: ignore[method-assign]
    build(folder, write_jsonl(folder, [{**GOOD, "image": "images/big.png"}]), encoder=encoder)
    assert seen == [(667, 500)]


def test_paths_the_system_refuses_read_as_missing(folder: Path) -> None:
    rows = [{**GOOD, "id": "long", "image": "images/" + "n" * 300 + ".jpg"},
            {**GOOD, "id": "home", "image": "~nobody-such-user/x.jpg"}, GOOD]
    report, stored = build(folder, write_jsonl(folder, rows))
    assert set(stored) == {"good"}
    assert all(r.startswith("image not found: ") for r in reasons(report).values())


# -- whatever the file holds ------------------------------------------------------------

GOOD_ROWS = [{"id": f"good-{i}", "title": f"Good thing {i}", "price": f"{i + 1}.50",
              "image": "img.png"} for i in range(3)]
_PNG = io.BytesIO()
Image.new("RGB", (8, 8), (200, 30, 30)).save(_PNG, format="PNG")

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=40),
                    st.text(max_size=1500))
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                           max_leaves=8)
columns = st.sampled_from(["id", "title", "price", "image", "currency", "brand", "sold",
                           "condition", "url", "category"])
random_objects = st.dictionaries(st.one_of(columns, st.text(max_size=10)), json_values,
                                 max_size=8)
garbage_lines = st.binary(max_size=400).map(lambda b: b.replace(b"\n", b" "))


def good_ids_kept(name: str, content: bytes) -> tuple[set[str], Any]:
    """Build a catalog from ``content`` in a fresh folder: the ids kept, the report."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "img.png").write_bytes(_PNG.getvalue())
        (folder / name).write_bytes(content)
        encoder = ColorEncoder()
        with Catalog.open(folder / "cat", encoder, create=True) as catalog:
            report = catalog.build(folder / name, encoder, progress=False, batch_size=4)
        with sqlite3.connect(folder / "cat" / "catalog.sqlite") as db:
            ids = {row[0] for row in db.execute("SELECT listing_id FROM items")}
        if report.rejected_file is not None:
            strict_json_lines(report.rejected_file)
        assert report.rejected_count == len(report.rejected)
    return ids, report


@settings(max_examples=30, deadline=None)
@given(st.lists(st.one_of(garbage_lines, random_objects), max_size=8), st.randoms())
def test_random_json_lines_never_crash_a_build_nor_lose_a_good_row(
    noise: list[Any], rnd: Any
) -> None:
    lines = [json.dumps(row).encode() for row in GOOD_ROWS]
    for item in noise:
        if isinstance(item, dict):
            if "id" in item:
                item["id"] = f"random-{item['id']!r}"
            item = json.dumps(item).encode()
        lines.insert(rnd.randint(0, len(lines)), item)
    ids, _ = good_ids_kept("l.jsonl", b"\n".join(lines) + b"\n")
    assert {row["id"] for row in GOOD_ROWS} <= ids
    assert all(i.startswith("random-") for i in ids - {row["id"] for row in GOOD_ROWS})


@settings(max_examples=30, deadline=None)
@given(st.lists(st.one_of(
    st.lists(st.text(max_size=300), max_size=6),
    garbage_lines.map(lambda b: b.replace(b'"', b"").replace(b"\r", b"")),
), max_size=8), st.randoms())
def test_random_csv_never_crashes_a_build_nor_loses_a_good_row(noise: list[Any],
                                                               rnd: Any) -> None:
    def csv_line(fields: list[str]) -> bytes:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(fields)
        return buffer.getvalue().encode("utf-8", "surrogatepass")

    lines = [csv_line([row["id"], row["title"], row["price"], row["image"]])
             for row in GOOD_ROWS]
    for item in noise:
        if isinstance(item, list):
            item = csv_line([f"random-{item[0]}" if item else "random", *item[1:]])
        else:
            item += b"\n"
        lines.insert(rnd.randint(0, len(lines)), item)
    ids, _ = good_ids_kept("l.csv", b"id,title,price,image\n" + b"".join(lines))
    assert {row["id"] for row in GOOD_ROWS} <= ids


@settings(max_examples=30, deadline=None)
@given(st.binary(max_size=3000), st.sampled_from(["l.jsonl", "l.csv"]))
def test_random_bytes_never_crash_a_build(content: bytes, name: str) -> None:
    try:
        good_ids_kept(name, content)
    except CatalogError as exc:
        # Only a CSV whose header cannot be read is refused as a whole.
        assert name == "l.csv" and "header row" in str(exc)


def test_a_catalog_that_cannot_be_opened_or_created_says_why(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(CatalogError, match="cannot create the catalog directory"):
        Catalog.open(tmp_path / "file" / "cat", ColorEncoder(), create=True)
    (tmp_path / "cat" / "catalog.sqlite").mkdir(parents=True)
    with pytest.raises(CatalogError, match=r"catalog database .* is not a file"):
        Catalog.open(tmp_path / "cat", ColorEncoder())

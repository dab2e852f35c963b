"""A build that takes a catalog past the flat index's limit trains its sharded
index once, for the size it ends with, on rows drawn across its whole input:
the rows drawn from a listings file, the row count estimated for a file too
large to count, and a build whose input is sorted in two halves."""

from __future__ import annotations

import csv
import io
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from restyle import Catalog
from restyle._indexes import chooser
from restyle._indexes import sharded as _shards
from restyle._indexes.sharded import ShardedIndex
from restyle._ingestion import reading
from restyle._ingestion.listings import draw_rows, estimate_rows, read_listings
from restyle.testing import ColorEncoder


def jsonl(path: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"id": f"L{i}", "title": f"item {i:04d}", "price": "10"})
                            + "\n" for i in range(n)))
    return path


def drawn_ids(path: Path) -> list[int]:
    return [int(row.data["id"][1:]) for row in read_listings(path)]


# -- drawing rows ----------------------------------------------------------------------


def test_rows_are_drawn_evenly_across_a_file_or_its_part_past_a_fraction(
    tmp_path: Path,
) -> None:
    source = jsonl(tmp_path / "listings.jsonl", 1000)
    target = tmp_path / "drawn.jsonl"
    assert draw_rows(source, target, 10) == 10
    ids = drawn_ids(target)
    assert ids == sorted(ids) and ids[0] < 10 and ids[-1] >= 890
    assert all(80 <= b - a <= 120 for a, b in itertools.pairwise(ids))  # evenly

    assert draw_rows(source, target, 10, after=0.5) == 10
    ids = drawn_ids(target)
    assert 490 <= ids[0] <= 510 and ids[-1] >= 940

    # More draws than rows: each row once, none twice.
    written = draw_rows(source, target, 5000, after=0.75)
    ids = drawn_ids(target)
    assert len(ids) == written and 745 <= ids[0] <= 755 and ids == list(range(ids[0], 1000))
    assert draw_rows(source, target, 0) == 0 and drawn_ids(target) == []


def test_a_csv_keeps_its_header_and_a_parquet_file_is_drawn_by_row(tmp_path: Path) -> None:
    source = tmp_path / "listings.csv"
    with source.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "title", "price"])
        writer.writerows([f"L{i}", f"item, {i}", "10"] for i in range(300))
    target = tmp_path / "drawn.csv"
    assert draw_rows(source, target, 3) == 3
    assert target.read_text().splitlines()[0] == "id,title,price"
    ids = drawn_ids(target)
    assert len(ids) == 3 and ids[0] < 5 and 90 <= ids[1] - ids[0] <= 110
    assert all(row.error is None for row in read_listings(target))

    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    parquet = tmp_path / "listings.parquet"
    pq.write_table(pa.table({"id": [f"L{i}" for i in range(1000)],
                             "title": [f"item {i}" for i in range(1000)],
                             "description": ["long text"] * 1000}),
                   parquet, row_group_size=64)
    assert draw_rows(parquet, tmp_path / "p.jsonl", 4, after=0.5) == 4
    assert drawn_ids(tmp_path / "p.jsonl") == [500, 625, 750, 875]
    assert "description" not in (tmp_path / "p.jsonl").read_text()  # only restyle's columns


def test_a_file_too_large_to_count_has_its_rows_estimated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = jsonl(tmp_path / "listings.jsonl", 20_000)
    assert estimate_rows(source) == 20_000  # counted
    monkeypatch.setattr(reading, "COUNTED_BYTES", 1000)
    assert reading.count_rows(source) is None
    estimate = estimate_rows(source)
    assert estimate is not None and abs(estimate - 20_000) < 200
    assert estimate_rows(tmp_path / "missing.jsonl") is None


# -- a build that trains once -------------------------------------------------------------


def tinted_png(seed: int, blue: bool) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 60, (16, 16, 3))
    pixels[..., 2 if blue else 0] += 180
    buf = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def sorted_listings(folder: Path, n: int) -> Path:
    """Red items first, then blue ones: a file sorted by what the items look like."""
    (folder / "images").mkdir(parents=True)
    with (folder / "listings.jsonl").open("w") as fh:
        for i in range(n):
            (folder / "images" / f"{i}.png").write_bytes(tinted_png(i, blue=i >= n // 2))
            fh.write(json.dumps({"id": f"L{i}", "title": f"item {i}", "price": "10",
                                 "image": f"images/{i}.png"}) + "\n")
    return folder / "listings.jsonl"


def test_a_build_past_the_limit_trains_once_on_rows_drawn_across_its_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The input is sorted: red items, then blue. The index becomes sharded at
    the first checkpoint past 256 vectors (the least it takes), when only red
    items are stored; it is trained once, for the 600 the build ends with, on
    a sample half blue, as the input is."""
    monkeypatch.setattr(_shards, "SHARDED_ABOVE", 100)
    monkeypatch.setattr(_shards, "SHARDED_AT_LEAST", 0)
    monkeypatch.setattr(_shards, "SHARD_IDS", 64)
    assert chooser.sharded_above() == 256
    trainings: list[tuple[np.ndarray, int]] = []
    train = ShardedIndex.train.__func__  # type: ignore[attr-defined]

    def spied(cls: Any, sample: np.ndarray, *, size: int, **kwargs: Any) -> ShardedIndex:
        trainings.append((sample.copy(), size))
        return train(cls, sample, size=size, **kwargs)  # type: ignore[no-any-return]

    monkeypatch.setattr(ShardedIndex, "train", classmethod(spied))
    source = sorted_listings(tmp_path / "listings", 600)
    encoder = ColorEncoder(bins=3)
    blue, red = encoder.encode_images([Image.new("RGB", (4, 4), c)
                                       for c in ((30, 30, 210), (210, 30, 30))])
    with Catalog.open(tmp_path / "catalog", encoder, create=True) as catalog:
        report = catalog.build(source, encoder, progress=False, checkpoint_every=260)
        assert report.added == 600
        index = catalog.index
        assert isinstance(index, ShardedIndex) and index.trained_size == 600
    assert [size for _, size in trainings] == [600]  # once, for the size it ends with
    sample = trainings[0][0]
    share = float(np.mean(sample @ blue > sample @ red))
    assert len(sample) == 600 and 0.4 <= share <= 0.6  # half blue, as the input is
    assert not list((tmp_path / "catalog").glob(".drawn.*"))  # the drawn rows are gone

    with Catalog.open(tmp_path / "catalog", encoder) as catalog:
        for listing_id in ("L10", "L590"):  # found, or one of the same colours exactly
            vector = catalog.vectors_for([listing_id])[listing_id]
            assert catalog.search_vector(vector, limit=1)[0][1] == pytest.approx(1.0, abs=1e-5)


def test_a_build_that_stays_under_the_limit_draws_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    drawn: list[Any] = []
    monkeypatch.setattr("restyle._store.planning.draw_rows",
                        lambda *a, **k: drawn.append(a) or 0)
    source = sorted_listings(tmp_path / "listings", 40)
    encoder = ColorEncoder(bins=3)
    with Catalog.open(tmp_path / "catalog", encoder, create=True) as catalog:
        assert catalog.build(source, encoder, progress=False).added == 40
        assert catalog.index.kind == "flat"
    assert drawn == []


def test_the_plan_and_the_progress_bar_share_one_count_of_the_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from restyle._store import catalog as store

    monkeypatch.setattr(_shards, "SHARDED_ABOVE", 100)
    monkeypatch.setattr(_shards, "SHARDED_AT_LEAST", 0)
    monkeypatch.setattr(_shards, "SHARD_IDS", 64)
    counts: list[Path] = []
    count_rows = reading.count_rows

    def counting(path: Path) -> int | None:
        counts.append(path)
        return count_rows(path)

    for module in (store, reading):  # the bar's count and the plan's estimate
        monkeypatch.setattr(module, "count_rows", counting)
    source = sorted_listings(tmp_path / "listings", 300)
    encoder = ColorEncoder(bins=3)
    with Catalog.open(tmp_path / "catalog", encoder, create=True) as catalog:
        catalog.build(source, encoder, progress=True, checkpoint_every=260)
        assert isinstance(catalog.index, ShardedIndex) and catalog.index.trained_size == 300
    assert counts == [source]


def test_a_file_too_small_to_pass_the_limit_is_told_by_its_size(tmp_path: Path) -> None:
    """The most rows a listings file can hold that a build stores, from its
    size alone: the shortest row that can be stored is 8 bytes."""
    source = tmp_path / "listings.csv"
    source.write_text("a,b,1,c\n" * 10 + "a,b,1,c")  # the last line without its newline
    assert reading.most_rows(source) == 11
    assert len(list(read_listings(source))) == 10  # the first line is the header
    assert reading.most_rows(tmp_path / "listings.parquet") is None

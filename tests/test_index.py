"""VectorIndex (exact and approximate), its atomic persistence, and the catalog around it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from restyle import Catalog, CatalogError, Query
from restyle._indexes.flat import (
    STALE_TEMPORARY_SECONDS,
    VectorIndex,
    remove_stale_temporaries,
    stale_temporaries,
    temporary_pattern,
)
from tests.conftest import ROOT, SAMPLE_LISTINGS
from tests.fakes.components import ColorEncoder


def clustered(n: int, dim: int, *, clusters: int = 40, seed: int = 0) -> np.ndarray:
    """Unit vectors in clusters, like embeddings of a catalog with many look-alikes."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 0.7 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def near(x: np.ndarray, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q = x + 0.4 * rng.standard_normal(x.shape).astype(np.float32) / np.sqrt(x.shape[1])
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


def exact_top(queries: np.ndarray, data: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    return ids[np.argsort(-(queries @ data.T), axis=1, kind="stable")[:, :k]]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth,
                                                                          strict=True)]))


def test_small_collections_search_exactly() -> None:
    data = clustered(500, 32)
    ids = np.arange(500) * 7 + 3
    index = VectorIndex(32)
    index.upsert(ids, data)
    queries = near(data[:20])
    scores, found = index.search(queries, 10)
    assert index.kind == "flat"
    assert (found == exact_top(queries, data, ids, 10)).all()
    assert np.allclose(scores[:, 0], (queries @ data.T).max(axis=1), atol=1e-5)
    _, single = index.search(queries[0], 10)
    assert (single[0] == found[0]).all()


def test_above_the_threshold_it_turns_approximate_and_keeps_recall() -> None:
    data = clustered(6000, 48)
    ids = np.arange(6000) * 2 + 11
    index = VectorIndex(48, approximate_above=3000)
    index.upsert(ids[:2500], data[:2500])
    assert index.kind == "flat"
    index.upsert(ids[2500:], data[2500:])
    assert index.kind == "ivf" and len(index) == 6000
    queries = near(data[rng_rows(300)], seed=5)
    _, found = index.search(queries, 10)
    assert recall(found, exact_top(queries, data, ids, 10)) >= 0.95
    assert index.nprobe is not None and index.nprobe < 64  # far from a full scan


def test_data_an_ivf_cannot_search_faster_stays_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(2)
    data = rng.standard_normal((6000, 128)).astype(np.float32)  # no structure at all
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    index = VectorIndex(128, approximate_above=3000)
    plans = []
    real_plan = index._plan
    monkeypatch.setattr(index, "_plan", lambda *a: (plans.append(len(index)), real_plan(*a)))
    index.upsert(np.arange(2500), data[:2500])
    index.upsert(np.arange(2500, 6000), data[2500:])
    assert index.kind == "flat" and index.scan_fraction == 1.0 and plans == [2500]
    queries = near(data[:20])
    _, found = index.search(queries, 10)
    assert (found == exact_top(queries, data, np.arange(6000), 10)).all()
    # The choice stands until the collection has grown four times over.
    index.upsert(np.arange(6000, 6100), near(data[:100], seed=4))
    assert plans == [2500]


def test_upsert_never_copies_the_whole_array() -> None:
    import tracemalloc

    data = clustered(100_000, 64, clusters=300, seed=6)
    for approximate_above in (200_000, 1000):  # stays exact; becomes an IVF
        index = VectorIndex(64, approximate_above=approximate_above)
        tracemalloc.start()
        index.upsert(np.arange(100_000), data)
        _, peak = tracemalloc.get_traced_memory()  # numpy's arrays, not faiss's own storage
        tracemalloc.stop()
        assert index.kind == ("flat" if approximate_above > 100_000 else "ivf")
        # A sample (a quarter at most) to train and judge the lists, never a copy of it all.
        assert peak < 0.4 * data.nbytes


def rng_rows(n: int) -> np.ndarray:
    return np.random.default_rng(9).choice(6000, size=n, replace=False)


@pytest.mark.parametrize("approximate_above", [10_000, 1000])
def test_add_remove_update_without_rebuild(approximate_above: int) -> None:
    data = clustered(3000, 32, seed=3)
    ids = np.arange(3000) + 100
    index = VectorIndex(32, approximate_above=approximate_above)
    index.upsert(ids, data)
    kind = index.kind
    assert index.remove([100, 101, 99_999]) == 2
    assert len(index) == 2998 and index.reconstruct(100) is None
    _, found = index.search(data[:2], 5)
    assert 100 not in found and 101 not in found
    moved = data[2000]
    index.upsert([102], moved[None, :])
    assert len(index) == 2998
    assert np.allclose(index.reconstruct(102), moved)
    _, found = index.search(moved, 1)
    assert found[0, 0] in (102, 2100)  # the same vector is stored under both ids
    index.upsert([5], data[0][None, :])
    assert len(index) == 2999 and index.kind == kind
    with pytest.raises(ValueError, match="unique"):
        index.upsert([7, 7], data[:2])
    with pytest.raises(ValueError, match="shape"):
        index.upsert([7], np.zeros((1, 8), np.float32))


@pytest.mark.parametrize("approximate_above", [10_000, 1000])
def test_save_and_load_keep_results(tmp_path: Path, approximate_above: int) -> None:
    data = clustered(2000, 32, seed=4)
    index = VectorIndex(32, approximate_above=approximate_above)
    index.upsert(np.arange(2000), data)
    index.save(tmp_path / "v.faiss")
    loaded = VectorIndex.load(tmp_path / "v.faiss", dim=32)
    assert loaded.kind == index.kind and loaded.nprobe == index.nprobe
    queries = near(data[:30])
    assert (loaded.search(queries, 10)[1] == index.search(queries, 10)[1]).all()
    loaded.remove([0])
    loaded.upsert([0], data[1][None, :])
    assert np.allclose(loaded.reconstruct(0), data[1])
    with pytest.raises(CatalogError, match="dimension 32, expected 64"):
        VectorIndex.load(tmp_path / "v.faiss", dim=64)


@pytest.mark.parametrize("crash", [OSError("disk full"), KeyboardInterrupt()])
def test_a_crash_mid_save_leaves_the_previous_index_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, crash: BaseException
) -> None:
    import faiss

    target = tmp_path / "v.faiss"
    index = VectorIndex(16)
    data = clustered(100, 16)
    index.upsert(np.arange(100), data)
    index.save(target)
    before = target.read_bytes()
    index.upsert(np.arange(100, 200), clustered(100, 16, seed=8))

    def half_written(idx: object, path: str) -> None:
        Path(path).write_bytes(b"IxMp" + b"\0" * 50)  # a torn, partial file
        raise crash

    monkeypatch.setattr(faiss, "write_index", half_written)
    with pytest.raises(type(crash)):
        index.save(target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["v.faiss"]
    assert len(VectorIndex.load(target, dim=16)) == 100


# A child process whose saves of a file named like argv[2] stop between writing
# the temporary and renaming it: it writes the temporary's path to argv[1] and
# sleeps until killed. Everything after the first line of code is the caller's.
STALLED_SAVES = """
import os, sys, time
from pathlib import Path
_replace, _ready, _name = os.replace, Path(sys.argv[1]), sys.argv[2]
def _stalled(src, dst, *args, **kwargs):
    if Path(dst).name == _name:
        _ready.write_text(str(src))
        time.sleep(600)
    return _replace(src, dst, *args, **kwargs)
os.replace = _stalled
"""


def stalled_save(tmp_path: Path, code: str, name: str, *args: str) -> tuple[
        subprocess.Popen[bytes], Path]:
    """Start ``code`` in a child whose save of ``name`` stalls before its rename;
    the child and the temporary it wrote, once written."""
    ready = tmp_path / f"saving-{time.monotonic_ns()}"
    log = tmp_path / f"{ready.name}.log"
    with log.open("wb") as out:
        child = subprocess.Popen(
            [sys.executable, "-c", STALLED_SAVES + textwrap.dedent(code), str(ready), name,
             *args], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not ready.exists() or not ready.read_text():
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            raise AssertionError(f"the child never reached the rename: {log.read_text()}")
        time.sleep(0.05)
    return child, Path(ready.read_text())


def kill(child: subprocess.Popen[bytes]) -> None:
    child.kill()  # SIGKILL: no handler, no finally, no cleanup runs
    assert child.wait(timeout=30) == -9


def age(*paths: Path, seconds: float = 2 * STALE_TEMPORARY_SECONDS) -> None:
    """Make files look as if written ``seconds`` ago (a crash a while back)."""
    then = time.time() - seconds
    for path in paths:
        os.utime(path, (then, then))


def test_a_save_killed_mid_write_leaves_a_temporary_that_only_goes_once_its_writer_is_dead(
    tmp_path: Path,
) -> None:
    target = tmp_path / "v.faiss"
    index = VectorIndex(16)
    index.upsert(np.arange(100), clustered(100, 16))
    index.save(target)
    before = target.read_bytes()
    child, temporary = stalled_save(tmp_path, """
        import numpy as np
        from restyle._indexes.flat import VectorIndex
        index = VectorIndex(16)
        x = np.random.default_rng(0).standard_normal((5000, 16)).astype(np.float32)
        index.upsert(np.arange(5000), x / np.linalg.norm(x, axis=1, keepdims=True))
        index.save(sys.argv[3])
    """, target.name, str(target))
    try:
        assert temporary.parent == tmp_path
        assert re.fullmatch(r"\.v\.faiss\.[a-z0-9_]{8}", temporary.name)
        assert temporary.stat().st_size > 5000 * 16 * 4  # written, not yet renamed
        patterns = [temporary_pattern(re.escape(target.name))]
        # Names that only look like a temporary of v.faiss are never touched.
        lookalikes = [tmp_path / name for name in (
            ".v.faiss.backup", ".v.faiss.ABCDEFGH", "v.faiss.abcdefgh", ".w.faiss.abcdefgh",
            ".v.faiss.abcdefgh.old", ".vXfaiss.abcdefgh")]
        for path in lookalikes:
            path.write_bytes(b"someone else's")
        age(*lookalikes)
        # However old it looks, the live writer's temporary stays.
        age(temporary)
        assert stale_temporaries(tmp_path, patterns) == []
        assert remove_stale_temporaries(tmp_path, patterns) == []
        assert temporary.exists()
    finally:
        kill(child)
    assert target.read_bytes() == before  # the rename never happened
    # Its writer is dead, but a file written just now is left alone: it could be
    # a new writer's, between creating the file and locking it.
    os.utime(temporary)
    assert remove_stale_temporaries(tmp_path, patterns) == [] and temporary.exists()
    age(temporary)
    assert stale_temporaries(tmp_path, patterns) == [temporary] and temporary.exists()
    assert remove_stale_temporaries(tmp_path, patterns) == [temporary]
    assert not temporary.exists() and all(path.exists() for path in lookalikes)
    assert len(VectorIndex.load(target, dim=16)) == 100


def test_a_damaged_index_file_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "v.faiss").write_bytes(b"garbage")
    with pytest.raises(CatalogError, match="cannot be read"):
        VectorIndex.load(tmp_path / "v.faiss", dim=16)


# -- the catalog ----------------------------------------------------------------


def listings_file(tmp_path: Path, extra: list[dict[str, object]] = ()) -> Path:  # type: ignore[assignment]
    """The sample listings, with their images beside them in ``tmp_path``."""
    rows = [json.loads(line) for line in SAMPLE_LISTINGS.read_text().splitlines()]
    if not (tmp_path / "images").exists():
        shutil.copytree(SAMPLE_LISTINGS.parent / "images", tmp_path / "images")
    path = tmp_path / "listings.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [*rows, *extra]) + "\n")
    return path


def test_catalog_build_is_resumable_and_reports_rejected_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = [{"id": "gone", "title": "t", "price": "5", "image": "missing.jpg"},
           {"id": "cheap", "title": "t", "price": "-3", "image": "images/ls-tee-red.jpg"}]
    source = listings_file(tmp_path, bad)
    encoder = ColorEncoder()
    with Catalog.open(tmp_path / "cat", encoder, create=True) as catalog:
        report = catalog.build(source, encoder, batch_size=5, progress=True)
        assert (report.added, report.skipped, len(report.rejected)) == (12, 0, 2)
        assert "Building catalog" in capsys.readouterr().err
        lines = (tmp_path / "cat" / "rejected.jsonl").read_text().splitlines()
        reasons = [json.loads(line)["reason"] for line in lines]
        assert "image not found" in reasons[0] and "bad price" in reasons[1]
        encoded = encoder.images_encoded
    with Catalog.open(tmp_path / "cat", encoder) as catalog:
        report = catalog.build(source, encoder, progress=False)
        assert (report.added, report.skipped) == (0, 12)
        assert encoder.images_encoded == encoded  # nothing embedded twice
        assert len(catalog) == 12 and len(catalog.index) == 12


def test_a_build_hands_the_encoder_its_batches_as_one_stream(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = listings_file(tmp_path)
    encoder = ColorEncoder()
    streams: list[list[int]] = []
    real = encoder.encode_image_batches

    def recording(batches):  # type: ignore[no-untyped-def]
        sizes: list[int] = []
        streams.append(sizes)
        for batch in batches:
            sizes.append(len(batch))
            yield from real([batch])

    monkeypatch.setattr(encoder, "encode_image_batches", recording)
    with Catalog.open(tmp_path / "cat", encoder, create=True) as catalog:
        report = catalog.build(source, encoder, batch_size=5, progress=False)
        assert report.added == 12 and streams == [[5, 5, 2]]
        assert catalog.search_vector(catalog.vectors_for(["ls-tee-red"])["ls-tee-red"],
                                     limit=1)[0][0].listing_id == "ls-tee-red"


def test_catalog_resumes_after_an_interrupted_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = listings_file(tmp_path)
    encoder = ColorEncoder()
    calls = {"n": 0}
    real = encoder.encode_images

    def dies_on_third_batch(images):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(images)

    with Catalog.open(tmp_path / "cat", encoder, create=True) as catalog:
        monkeypatch.setattr(encoder, "encode_images", dies_on_third_batch)
        with pytest.raises(KeyboardInterrupt):
            catalog.build(source, encoder, batch_size=4, checkpoint_every=4, progress=False)
        # What was not checkpointed is forgotten in memory too, not just on disk.
        assert len(catalog.index) == 8 and len(catalog) == 8
    monkeypatch.setattr(encoder, "encode_images", real)
    with Catalog.open(tmp_path / "cat", encoder) as catalog:
        report = catalog.build(source, encoder, progress=False)
        assert (report.added, report.skipped) == (4, 8)
        assert len(catalog.index) == 12


def test_catalog_build_re_embeds_rows_whose_vector_is_missing(tmp_path: Path) -> None:
    source = listings_file(tmp_path)
    encoder = ColorEncoder()
    with Catalog.open(tmp_path / "cat", encoder, create=True) as catalog:
        catalog.build(source, encoder, progress=False)
        (item_id,) = catalog._db.execute(
            "SELECT id FROM items WHERE listing_id = 'nw-jacket-blue'"
        ).fetchone()
        catalog.index.remove([item_id])  # as after a crash between index save and commit
        report = catalog.build(source, encoder, progress=False)
        assert (report.updated, report.skipped) == (1, 11)
        assert "nw-jacket-blue" in catalog.vectors_for(["nw-jacket-blue"])


def test_catalog_remove_and_update_without_rebuild(tmp_path: Path) -> None:
    source = listings_file(tmp_path)
    encoder = ColorEncoder()
    with Catalog.open(tmp_path / "cat", encoder, create=True) as catalog:
        catalog.build(source, encoder, progress=False)
        vector = catalog.vectors_for(["nw-jacket-blue"])["nw-jacket-blue"]
        assert catalog.remove(["nw-jacket-blue", "no-such-id"]) == 1
        assert catalog.vectors_for(["nw-jacket-blue"]) == {}
        found = [listing.listing_id for listing, _ in catalog.search_vector(vector, limit=12)]
        assert "nw-jacket-blue" not in found and len(found) == 11
    with Catalog.open(tmp_path / "cat", encoder) as catalog:
        assert len(catalog) == 11 and len(catalog.index) == 11


def test_searches_repeated_with_one_vector_ask_the_index_once_until_it_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = listings_file(tmp_path)
    encoder = ColorEncoder()
    with Catalog.open(tmp_path / "cat", encoder, create=True) as catalog:
        catalog.build(source, encoder, progress=False)
        vector = catalog.vectors_for(["nw-jacket-blue"])["nw-jacket-blue"]
        searches = []
        real = catalog.index.search

        def counting(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            searches.append(k)
            return real(queries, k)

        monkeypatch.setattr(catalog.index, "search", counting)
        nearest = catalog.search_vector(vector, limit=3)
        jackets = catalog.search_vector(vector, Query(text="", category="jacket"), limit=12)
        again = catalog.search_vector(vector, limit=3)
        assert len(searches) == 1 and again == nearest
        assert {listing.category for listing, _ in jackets} == {"jacket"}
        # Each answer is what a search of its own would give.
        fresh = Catalog.open(tmp_path / "cat", encoder)
        assert fresh.search_vector(vector, Query(text="", category="jacket"), limit=12) == jackets
        fresh.close()
        # A change (here a listing's new price) is seen at once.
        rows = [json.loads(line) for line in source.read_text().splitlines()]
        for row in rows:
            if row["id"] == nearest[0][0].listing_id:
                row["price"] = "1.50"
        source.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        catalog.build(source, encoder, progress=False)
        repriced = catalog.search_vector(vector, limit=3)
        assert str(repriced[0][0].price.amount) == "1.50" and len(searches) == 2
        catalog.remove([nearest[0][0].listing_id])
        assert nearest[0][0].listing_id not in [
            listing.listing_id for listing, _ in catalog.search_vector(vector, limit=12)]


def test_opening_with_another_encoder_is_a_clear_error(tmp_path: Path) -> None:
    encoder = ColorEncoder(bins=4)
    with Catalog.open(tmp_path / "cat", encoder, create=True) as catalog:
        catalog.build(listings_file(tmp_path), encoder, progress=False)
    with pytest.raises(CatalogError, match="built with model color-histogram-4") as info:
        Catalog.open(tmp_path / "cat", ColorEncoder(bins=2))
    assert "dimension 64" in str(info.value) and "color-histogram-2" in str(info.value)
    shutil.rmtree(tmp_path / "cat")

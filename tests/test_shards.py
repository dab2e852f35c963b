"""The sharded IVF-PQ index of catalogs past memory, alone and behind a catalog."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from restyle import Catalog, VectorIndex
from restyle._indexes import chooser
from restyle._indexes import sharded as _shards
from restyle._indexes.chooser import grow_index, index_present, load_index, save_index
from restyle._indexes.sharded import MANIFEST, ShardedIndex, shards_path
from restyle.testing import ColorEncoder


@pytest.fixture(autouse=True)
def small_shards(monkeypatch: pytest.MonkeyPatch) -> None:
    """Shards of 64 ids and encoding 50 vectors at a time, so small tests see many of both."""
    monkeypatch.setattr(_shards, "SHARD_IDS", 64)
    monkeypatch.setattr(_shards, "FLUSH_AT", 50)
    monkeypatch.setattr(_shards, "ENCODE_CHUNK", 20)
    monkeypatch.setattr(_shards, "SHARDED_AT_LEAST", 0)


def clustered(n: int, dim: int = 24, seed: int = 0) -> np.ndarray:
    """Unit vectors around a few dozen centres in a low-rank subspace."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, 8)))[0].T.astype(np.float32)
    centres = rng.standard_normal((40, 8)).astype(np.float32)
    z = centres[rng.integers(0, len(centres), n)] + 0.4 * rng.standard_normal((n, 8))
    x = (z @ basis + 0.05 * rng.standard_normal((n, dim))).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class Table:
    """Exact vectors by id, as the catalog database gives them."""

    def __init__(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.rows = dict(zip(ids.tolist(), vectors, strict=True))
        self.dim = vectors.shape[1]

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        out = np.full((len(ids), self.dim), np.nan, np.float32)
        for row, item_id in enumerate(ids.tolist()):
            if item_id in self.rows:
                out[row] = self.rows[item_id]
        return out


def sharded(vectors: np.ndarray, ids: np.ndarray, table: Table | None) -> ShardedIndex:
    flat = VectorIndex(vectors.shape[1], approximate_above=10**9)
    flat.upsert(ids, vectors)
    chunks = [(ids[i : i + 300], vectors[i : i + 300]) for i in range(0, len(ids), 300)]
    rng = np.random.default_rng(1)
    index = grow_index(flat, vectors=lambda: chunks, exact=table, above=100,
                       sample=lambda n: vectors[rng.choice(len(vectors), n, replace=False)])
    assert isinstance(index, ShardedIndex)
    return index


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]))


def test_a_sharded_index_finds_the_exact_neighbours_after_re_ranking() -> None:
    vectors = clustered(2000)
    ids = np.arange(1, 2001, dtype=np.int64)
    table = Table(ids, vectors)
    index = sharded(vectors, ids, table)
    assert len(index) == 2000 and len(index.segments()) == 32 and index.code_size <= 56
    queries = chooser.probes_near(vectors, 100, seed=3)
    flat = VectorIndex(24, approximate_above=10**9)
    flat.upsert(ids, vectors)
    _, truth = flat.search(queries, 10)
    scores, found = index.search(queries, 10)
    assert recall(found, truth) >= 0.95
    # Re-ranked scores are exact inner products.
    assert np.allclose(scores[:, 0], np.einsum("ij,ij->i", queries, table(found[:, 0])),
                       atol=1e-5)
    index.exact = None  # codes alone: approximate, yet a stored vector finds itself
    _, found = index.search(vectors[:50], 10)
    assert np.mean([i in row for i, row in zip(ids[:50], found, strict=True)]) >= 0.9


def test_updates_removals_and_saves_keep_a_loadable_index(tmp_path: Path) -> None:
    vectors = clustered(600)
    ids = np.arange(1, 601, dtype=np.int64)
    table = Table(ids, vectors)
    index = sharded(vectors, ids, table)
    path = tmp_path / "vectors.faiss"
    save_index(index, path)
    assert not path.exists() and (shards_path(path) / MANIFEST).is_file()
    loaded = load_index(path, dim=24, exact=table)
    assert isinstance(loaded, ShardedIndex) and loaded.mapped()  # mapped, not read
    assert len(loaded) == 600 and 5 in loaded and 0 not in loaded and 601 not in loaded
    np.testing.assert_array_equal(np.sort(loaded.ids()), ids)

    # Replacing and adding (pending until encoded), removing.
    moved = clustered(3, seed=9)
    loaded.upsert([5, 700, 701], moved)
    table.rows.update({5: moved[0], 700: moved[1], 701: moved[2]})
    assert len(loaded) == 602 and 700 in loaded and loaded._pending
    assert loaded.remove([6, 701, 9999]) == 2 and len(loaded) == 600 and 6 not in loaded
    _, found = loaded.search(moved[:2], 1)
    assert found[:, 0].tolist() == [5, 700]
    assert not loaded._pending
    np.testing.assert_allclose(loaded.reconstruct(700), moved[1])
    assert loaded.reconstruct(6) is None

    before = sorted(p.name for p in shards_path(path).iterdir())
    save_index(loaded, path)
    after = sorted(p.name for p in shards_path(path).iterdir())
    # Only the shards changed were written again, under a new generation.
    changed = {name.split(".g")[0] for name in set(after) - set(before)}
    assert changed == {"shard-00000", "shard-00010"}
    assert json.loads((shards_path(path) / MANIFEST).read_text())["generation"] == 2
    again = load_index(path, dim=24, exact=table)
    assert len(again) == 600 and 700 in again and 6 not in again
    _, found = again.search(moved[:2], 1)
    assert found[:, 0].tolist() == [5, 700]

    # Back to a flat index: the shards go, after the flat file is in place.
    flat = VectorIndex(24)
    flat.upsert(ids[:10], vectors[:10])
    save_index(flat, path)
    assert path.is_file() and not shards_path(path).exists() and index_present(path)
    assert isinstance(load_index(path, dim=24), VectorIndex)


def test_a_save_removes_the_temporaries_stopped_saves_left_and_nothing_else(
    tmp_path: Path,
) -> None:
    import os
    import time

    vectors = clustered(600)
    ids = np.arange(1, 601, dtype=np.int64)
    index = sharded(vectors, ids, Table(ids, vectors))
    path = tmp_path / "vectors.faiss"
    save_index(index, path)
    folder = shards_path(path)
    # What a save killed between writing and renaming leaves, beside the
    # index and in its shards folder; and files that only look like it.
    left = [tmp_path / ".vectors.faiss.k3_9xq0a", folder / ".manifest.json.0ab1cd2e",
            folder / ".trained.faiss.zz9_8y7x", folder / ".shard-00003.g7.faiss.a1b2c3d4"]
    kept = [tmp_path / ".vectors.faiss.notmine", tmp_path / ".catalog.sqlite.a1b2c3d4",
            folder / ".shard-00003.faiss.a1b2c3d4", folder / "notes.txt"]
    then = time.time() - 3600
    for leftover in [*left, *kept]:
        leftover.write_bytes(b"\0" * 100)
        os.utime(leftover, (then, then))
    fresh = folder / ".manifest.json.fresh123"  # a writer's, between creating and locking
    fresh.write_bytes(b"")
    assert sorted(chooser.stale_index_temporaries(path)) == sorted(left)
    index.upsert([5], clustered(1, seed=3))
    save_index(index, path)
    assert not any(p.exists() for p in left)
    assert all(p.exists() for p in [*kept, fresh])
    assert len(load_index(path, dim=24)) == 600


# -- behind a catalog --------------------------------------------------------------


def noise_jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    tint = rng.uniform(0.2, 1.0, 3)
    pixels = (rng.integers(0, 256, (24, 24, 3)) * tint).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def listings(folder: Path, n: int) -> Path:
    (folder / "images").mkdir(parents=True)
    with (folder / "listings.jsonl").open("w") as fh:
        for i in range(n):
            (folder / "images" / f"{i}.png").write_bytes(noise_jpeg(i))
            fh.write(json.dumps({"id": f"L{i}", "title": f"item {i}", "price": "10",
                                 "image": f"images/{i}.png"}) + "\n")
    return folder / "listings.jsonl"


@pytest.fixture
def shard_above(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(_shards, "SHARDED_ABOVE", 100)
    yield


ENCODER = ColorEncoder(bins=3)  # 27 dimensions: quick to train


def stored_vector(catalog: Catalog, listing_id: str) -> np.ndarray:
    return catalog.vectors_for([listing_id])[listing_id]


def test_a_catalog_past_the_threshold_gets_a_sharded_index(
    tmp_path: Path, shard_above: None,
) -> None:
    source = listings(tmp_path / "listings", 300)
    directory = tmp_path / "catalog"
    with Catalog.open(directory, ENCODER, create=True) as catalog:
        report = catalog.build(source, ENCODER, progress=False, checkpoint_every=120)
        assert report.added == 300
        assert catalog.index.kind == "ivfpq"
    assert not (directory / "vectors.faiss").exists()
    assert (directory / "vectors.shards" / MANIFEST).is_file()

    with Catalog.open(directory, ENCODER) as catalog:  # read-only: shards mapped
        assert isinstance(catalog.index, ShardedIndex) and catalog.index.mapped()
        for listing_id in ("L0", "L150", "L299"):
            found = catalog.search_vector(stored_vector(catalog, listing_id), limit=3)
            assert found[0][0].listing_id == listing_id
            assert found[0][1] == pytest.approx(1.0, abs=1e-5)
    check = Catalog.check(directory)
    assert check.ok, check.problems
    assert check.vectors == 300
    assert Catalog.stats(directory).vectors == 300

    with Catalog.open(directory, ENCODER, create=True) as catalog:
        again = catalog.build(source, ENCODER, progress=False)
        assert again.skipped == 300 and again.added == 0
        assert catalog.remove(["L150"]) == 1
        vector = ENCODER.encode_images([Image.open(tmp_path / "listings/images/150.png")])[0]
        assert all(listing.listing_id != "L150"
                   for listing, _ in catalog.search_vector(vector, limit=5))

    (directory / "vectors.shards" / MANIFEST).unlink()
    assert not Catalog.check(directory).ok
    repaired = Catalog.repair(directory)
    assert repaired.from_database == 299
    assert Catalog.check(directory).ok
    with Catalog.open(directory, ENCODER) as catalog:
        assert catalog.index.kind == "ivfpq" and len(catalog.index) == 299


def test_an_interrupted_build_keeps_the_sharded_index_of_its_last_checkpoint(
    tmp_path: Path, shard_above: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from restyle._store import catalog as store

    source = listings(tmp_path / "listings", 400)
    directory = tmp_path / "catalog"

    class Failing(ColorEncoder):
        calls = 0

        def encode_images(self, images: Any) -> np.ndarray:
            Failing.calls += 1
            if Failing.calls > 22:
                raise RuntimeError("out of memory")
            return super().encode_images(images)

    def planned(*args: Any, **kwargs: Any) -> Any:
        plan = plan_training(*args, **kwargs)
        Failing.calls = 0  # the build's own batches are counted, not the drawn rows'
        return plan

    plan_training = store.plan_training
    monkeypatch.setattr(store, "plan_training", planned)
    failing = Failing(bins=3)
    with Catalog.open(directory, failing, create=True) as catalog, pytest.raises(RuntimeError):
        catalog.build(source, failing, progress=False, batch_size=16, checkpoint_every=100)
    with Catalog.open(directory, ENCODER, create=True) as catalog:
        assert catalog.index.kind == "ivfpq" and len(catalog) == len(catalog.index)
        resumed = catalog.build(source, ENCODER, progress=False)
        assert 256 < resumed.skipped < 400 and resumed.skipped + resumed.added == 400
    assert Catalog.check(directory).ok


# -- growing ---------------------------------------------------------------------


def exact_truth(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray) -> np.ndarray:
    flat = VectorIndex(vectors.shape[1], approximate_above=10**9)
    flat.upsert(ids, vectors)
    return flat.search(queries, 10)[1]


def test_an_index_grown_tenfold_keeps_its_recall(monkeypatch: pytest.MonkeyPatch) -> None:
    """Trained at 3,000 vectors, grown by checkpoints to 30,000: tuned again as
    it doubles, trained again past eight times its training, recall@10 >= 0.95
    at every checkpoint."""
    monkeypatch.setattr(_shards, "SHARD_IDS", 8192)
    everything = clustered(30_000, seed=5)
    ids = np.arange(1, 30_001, dtype=np.int64)
    table = Table(ids, everything)
    rng = np.random.default_rng(2)
    index: Any = VectorIndex(24, approximate_above=10**9)
    trained_for = []
    for stop in (3_000, 6_000, 12_000, 24_000, 30_000):
        start = len(index)
        index.upsert(ids[start:stop], everything[start:stop])
        held = everything[:stop]
        index = grow_index(
            index, vectors=lambda held=held: [(ids[: len(held)], held)], exact=table,
            above=100, sample=lambda n, held=held: held[rng.choice(len(held), n, replace=False)])
        assert isinstance(index, ShardedIndex)
        trained_for.append(index.trained_size)
        queries = chooser.probes_near(held, 100, seed=stop)
        assert recall(index.search(queries, 10)[1], exact_truth(held, ids[:stop], queries)) >= 0.95
    assert trained_for[0] == 3_000 and trained_for[-1] > 24_000  # trained again once
    assert index.tuned_size >= 24_000


def test_the_chooser_keeps_flat_search_where_it_is_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_shards, "SHARDED_AT_LEAST", 20_000)
    vectors = clustered(3_000)
    flat = VectorIndex(24)
    flat.upsert(np.arange(3_000), vectors)
    grown = grow_index(flat, vectors=lambda: [(np.arange(3_000), vectors)], exact=None,
                       above=100, sample=lambda n: vectors[:n])
    assert grown is flat


def skewed(n: int, dim: int = 24, seed: int = 0) -> np.ndarray:
    """Half the vectors in one tight cluster, the rest spread: a catalog where
    half the items look alike."""
    rng = np.random.default_rng(seed)
    dense = rng.standard_normal(dim) + 0.02 * rng.standard_normal((n // 2, dim))
    x = np.vstack([dense, clustered(n - n // 2, dim, seed)]).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_dense_clusters_get_lists_of_their_own() -> None:
    from restyle._indexes.training import SPLIT_ABOVE, _kmeans, split_dense_lists

    x = skewed(8_000)
    # Lists drawn from the spread half, and one for the whole dense half: what a
    # k-means whose start missed the dense cluster leaves.
    centroids = np.vstack([_kmeans(x[4_000:], 31), x[:1].copy()])
    split = split_dense_lists(x, centroids, limit=64)
    assert 32 < len(split) <= 64
    search = VectorIndex(24, approximate_above=10**9)
    search.upsert(np.arange(len(split)), split)
    counts = np.bincount(search.search(x, 1)[1][:, 0], minlength=len(split))
    before = VectorIndex(24, approximate_above=10**9)
    before.upsert(np.arange(32), centroids)
    counts_before = np.bincount(before.search(x, 1)[1][:, 0], minlength=32)
    assert counts.max() < counts_before.max()
    assert counts_before.max() > SPLIT_ABOVE * len(x) / 32


def test_tuning_that_falls_short_says_so(caplog: pytest.LogCaptureFixture,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A target no nprobe and no re-ranking can reach: a warning names the recall reached."""
    vectors = clustered(2_000)
    ids = np.arange(1, 2_001, dtype=np.int64)
    index = sharded(vectors, ids, None)  # codes alone: re-ranking cannot help
    queries = chooser.probes_near(vectors, 100, seed=4)
    truth = exact_truth(vectors, ids, queries)
    with caplog.at_level("WARNING", logger="restyle.catalog"):
        index.tune(queries, truth, target=1.01)
    assert index.nprobe == index.nlist and index.short_of_target is not None
    assert any(f"recall@10 {index.short_of_target:.3f}, short of its target 1.01" in
               r.getMessage() for r in caplog.records)


def test_checkpoints_append_segments_and_save_unencoded_ids(tmp_path: Path) -> None:
    """A save writes the codes added since the last one as a new segment and
    leaves the files written before untouched; vectors not yet encoded are
    saved as ids and read back from the exact vectors."""
    vectors = clustered(1_410)
    ids = np.arange(1, 1_411, dtype=np.int64)
    table = Table(ids, vectors)
    index = sharded(vectors[:600], ids[:600], table)
    path = tmp_path / "vectors.faiss"
    save_index(index, path)
    folder = shards_path(path)
    # Shards 0 to 8 are full (64 ids each); 9 onwards take the new ids.
    first = {p.name: p.stat().st_ino for p in folder.glob("shard-0000[0-8]*")}
    for start in range(600, 1_400, 40):  # checkpoints of 40 listings
        index.upsert(ids[start : start + 40], vectors[start : start + 40])
        save_index(index, path)
    assert {p.name: p.stat().st_ino for p in folder.glob("shard-*")
            if p.name in first} == first  # never written again
    assert max(index.segments().values()) <= 3
    index.upsert(ids[1_400:], vectors[1_400:])  # ten, under FLUSH_AT: not encoded
    save_index(index, path)
    assert json.loads((folder / MANIFEST).read_text())["pending"] == "pending.npy"
    np.testing.assert_array_equal(np.load(folder / "pending.npy"), ids[1_400:])
    again = load_index(path, dim=24, exact=table)
    assert len(again) == 1_410 and 1_410 in again
    np.testing.assert_array_equal(np.sort(again.ids()), ids)
    assert len(load_index(path, dim=24)) == 1_410  # without the vectors: counted


def test_the_plan_for_ten_to_the_eight_quotes_the_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/scale.md's plan: each constant it names, and its training schedule,
    are what the code has and does."""
    import re

    monkeypatch.undo()  # the real sizes, not this module's small ones

    from restyle.cli.arguments import command_parser
    from tests.conftest import ROOT

    plan = (ROOT / "docs" / "scale.md").read_text().split("## A costed plan for 10^8")[1]
    quoted = dict(re.findall(r"^\| [^|]+ \| ([\d,]+)[^|]* \| `([^`]+)` \|$", plan, re.M))
    quoted = {name: int(value.replace(",", "")) for value, name in quoted.items()}
    build = command_parser().parse_args(["catalog", "build", "listings.jsonl"])
    code = {name: getattr(_shards, name) for name in quoted if hasattr(_shards, name)}
    code["nlist_for(10**8)"] = _shards.nlist_for(10**8)
    code["--checkpoint-every"] = build.checkpoint_every
    assert quoted == code and len(quoted) >= 10

    rows = re.findall(r"^\| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \|$", plan, re.M)
    schedule = [tuple(int(v.replace(",", "")) for v in row) for row in rows]
    assert schedule == chooser.training_schedule(
        10**8, checkpoint_every=build.checkpoint_every)


def test_the_command_line_sets_the_checkpoint_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_model_spec: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from restyle._store import catalog as store
    from restyle.cli import main
    from tests.conftest import SAMPLE_LISTINGS

    code = main(["catalog", "build", str(SAMPLE_LISTINGS), "--catalog", str(tmp_path / "a"),
                 "--checkpoint-every", "0", "--no-plugins", "--model", tiny_model_spec])
    assert code != 0 and "--checkpoint-every must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    seen: list[int] = []
    real = store.Catalog.build

    def build(self: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["checkpoint_every"])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(store.Catalog, "build", build)
    code = main(["catalog", "build", str(SAMPLE_LISTINGS), "--catalog", str(tmp_path / "b"),
                 "--checkpoint-every", "5", "--no-plugins", "--model", tiny_model_spec])
    assert code == 0, capsys.readouterr().err
    assert seen == [5]


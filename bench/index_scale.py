"""The sharded IVF-PQ index at catalog scale: bytes per vector, recall@10, latency, against flat.

Data resembling CLIP image embeddings, which are clustered and of low
intrinsic dimension: d=512 unit vectors whose directions live mostly in a
96-dimensional subspace with a decaying spectrum, drawn around uneven
clusters (a catalog holds many near-identical items), plus a little
full-rank noise. Queries are drawn fresh from the same distribution (held
out, not stored). Recall@10 is measured against exact (flat) search, before
and after the exact re-ranking of the best 10*k candidates with the stored
vectors, which the index reads from SQLite as a catalog does (``--exact
memory`` reads them from an array instead). faiss and the flat baseline run
on ``--threads`` threads (1 by default: on a shared machine more threads can
be slower, and the speed-up should not depend on it).

    PYTHONPATH=src python bench/index_scale.py [--sizes 100000,1000000] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from restyle._indexes import sharded as _shards
from restyle._indexes.chooser import NearestIds, probes_near
from restyle._indexes.sharded import ShardedIndex, nlist_for

DIM = 512
RANK = 96


class Distribution:
    """Clustered, low-rank unit vectors (see the module docstring)."""

    def __init__(self, n: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.basis = np.linalg.qr(rng.standard_normal((DIM, RANK)))[0].T.astype(np.float32)
        self.spectrum = (1.0 / np.sqrt(1 + np.arange(RANK))).astype(np.float32)
        self.centres = rng.standard_normal((max(100, n // 300), RANK)).astype(np.float32)
        self.centres *= self.spectrum
        weights = rng.pareto(1.5, len(self.centres)) + 1  # uneven cluster sizes
        self.weights = weights / weights.sum()

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        out = np.empty((n, DIM), dtype=np.float32)
        for start in range(0, n, 100_000):
            m = min(100_000, n - start)
            picks = rng.choice(len(self.centres), size=m, p=self.weights)
            z = self.centres[picks] + 0.6 * rng.standard_normal((m, RANK)).astype(
                np.float32) * self.spectrum
            x = z @ self.basis + 0.03 * rng.standard_normal((m, DIM)).astype(np.float32)
            out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out


def sqlite_vectors(path: Path, vectors: np.ndarray) -> sqlite3.Connection:
    """The vectors as a catalog stores them: a BLOB per row, keyed by an integer id."""
    db = sqlite3.connect(path, check_same_thread=False)
    db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, vector BLOB)")
    with db:
        db.executemany("INSERT INTO items VALUES (?, ?)",
                       ((i + 1, vectors[i].tobytes()) for i in range(len(vectors))))
    return db


def exact_from_sqlite(db: sqlite3.Connection) -> _shards.ExactVectors:
    def exact(ids: np.ndarray) -> np.ndarray:
        out = np.full((len(ids), DIM), np.nan, np.float32)
        where = {int(i): row for row, i in enumerate(ids)}
        keys = list(where)
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            for item_id, blob in db.execute(
                    f"SELECT id, vector FROM items WHERE id IN ({marks})", chunk):
                out[where[item_id]] = np.frombuffer(blob, dtype=np.float32)
        return out
    return exact


def timed(fn, repeat: int = 1) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / 10
                          for f, t in zip(found, truth, strict=True)]))


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.name.startswith("shard-"))


def run(n: int, args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    rng = np.random.default_rng(1)
    dist = Distribution(n)
    start = time.perf_counter()
    data = dist.draw(n, rng)
    queries = dist.draw(args.queries, np.random.default_rng(2))
    ids = np.arange(1, n + 1, dtype=np.int64)
    made = time.perf_counter() - start

    flat = faiss.IndexFlatIP(DIM)
    flat.add(data)
    _, truth_rows = flat.search(queries, 10)
    truth = ids[truth_rows]
    singles = [q[None, :] for q in queries[: args.latency_queries]]
    start = time.perf_counter()
    for q in singles[:10]:
        flat.search(q, 10)
    flat_one = (time.perf_counter() - start) / 10

    if args.exact == "sqlite":
        db = sqlite_vectors(tmp / f"vectors-{n}.sqlite", data)
        exact = exact_from_sqlite(db)
    else:
        def exact(wanted: np.ndarray) -> np.ndarray:
            return data[wanted - 1]

    # As grow_index does it, with the catalog's sample, chunks and tuning probes.
    nlist = nlist_for(n)
    sample = data[rng.choice(n, size=min(n, _shards.TRAIN_MAX, _shards.TRAIN_PER_LIST * nlist),
                             replace=False)]
    start = time.perf_counter()
    index = ShardedIndex.train(sample, size=n, exact=exact)
    train = time.perf_counter() - start
    nearest = NearestIds(probes_near(sample))
    start = time.perf_counter()
    for i in range(0, n, 100_000):
        index.upsert(ids[i : i + 100_000], data[i : i + 100_000])
    index.flush()
    add = time.perf_counter() - start
    for i in range(0, n, 100_000):
        nearest.add(ids[i : i + 100_000], data[i : i + 100_000])
    start = time.perf_counter()
    nprobe = index.tune(nearest.probes, nearest.ids)
    tune = time.perf_counter() - start
    del flat  # the flat baseline's memory, before the index is measured
    if args.exact == "sqlite":
        del data  # from here the index reads vectors only from SQLite

    index.save(tmp / f"vectors-{n}.faiss")
    on_disk = folder_bytes(_shards.shards_path(tmp / f"vectors-{n}.faiss")) / n
    mapped = ShardedIndex.load(tmp / f"vectors-{n}.faiss", dim=DIM, exact=exact)
    _, refined = mapped.search(queries, 10)
    one = timed(lambda: [mapped.search(q, 10) for q in singles]) / len(singles)
    batch = timed(lambda: mapped.search(queries[:100], 10))
    mapped.exact = None
    _, coarse = mapped.search(queries, 10)
    codes_only = timed(lambda: [mapped.search(q, 10) for q in singles]) / len(singles)
    return {
        "n": n, "nlist": nlist, "nprobe": nprobe, "code": index.code_size,
        "bytes": index.bytes_per_vector(), "disk": on_disk, "made": made, "train": train,
        "add": add, "tune": tune, "recall_codes": recall(coarse, truth),
        "recall": recall(refined, truth), "flat_ms": flat_one * 1e3, "one_ms": one * 1e3,
        "codes_ms": codes_only * 1e3, "batch_ms": batch * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--exact", choices=["sqlite", "memory"], default="sqlite")
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)
    print(f"d={DIM}, rank {RANK}, faiss threads {args.threads}, exact vectors from "
          f"{args.exact}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            row = run(n, args, Path(tmp))
            rows.append(row)
            print(f"  n={n:,}: train {row['train']:.1f} s, add {row['add']:.1f} s, tune "
                  f"{row['tune']:.1f} s (load average {os.getloadavg()[0]:.2f})", flush=True)
    print()
    print("| n | index | bytes/vector (codes + ids; on disk) | recall@10 codes / re-ranked "
          "| 1 query flat | 1 query sharded (codes only) | speed-up | 100 queries |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['n']:,} | OPQ+IVF{r['nlist']},PQ{r['code']} nprobe {r['nprobe']} "
              f"| {r['bytes']:.0f} ({r['disk']:.1f}) | {r['recall_codes']:.3f} / "
              f"**{r['recall']:.3f}** | {r['flat_ms']:.2f} ms | {r['one_ms']:.2f} ms "
              f"({r['codes_ms']:.2f} ms) | **{r['flat_ms'] / r['one_ms']:.1f}x** "
              f"| {r['batch_ms']:.1f} ms |")
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

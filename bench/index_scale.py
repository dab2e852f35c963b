"""The sharded IVF-PQ index at catalog scale: bytes per vector, recall@10, latency, against flat.

Data resembling CLIP image embeddings, which are clustered and of low
intrinsic dimension: d=512 unit vectors whose directions live mostly in a
96-dimensional subspace with a decaying spectrum, drawn around uneven
clusters (a catalog holds many near-identical items), plus a little
full-rank noise; ``skewed`` data puts half the vectors in one cluster (a
catalog where half the items look alike). Queries are drawn fresh from the
same distribution (held out, not stored). The sharded index is measured at
every size, and each row says which index the chooser keeps there: by
default (sharded past ``SHARDED_ABOVE``) and with the lowest threshold it
takes (never sharded under ``SHARDED_AT_LEAST``). A checkpoint's index
work is measured on the saved index: 2,000 new vectors added and saved (a
new segment, their ids not yet encoded), and the encoding of ``FLUSH_AT``
vectors once that many wait. Recall@10 is measured against exact (flat) search, before
and after the exact re-ranking of the best 10*k candidates with the stored
vectors, which the index reads from SQLite as a catalog does (``--exact
memory`` reads them from an array instead). faiss and the flat baseline run
on ``--threads`` threads (1 by default: on a shared machine more threads can
be slower, and the speed-up should not depend on it).

    PYTHONPATH=src python bench/index_scale.py [--sizes 3000,300000,1000000]
        [--data clustered,skewed] [--threads 1]
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
from restyle._indexes.chooser import NearestIds, probes_near, training_size
from restyle._indexes.sharded import SHARDED_AT_LEAST, ShardedIndex

DIM = 512
RANK = 96


class Distribution:
    """Clustered, low-rank unit vectors (see the module docstring)."""

    def __init__(self, n: int, seed: int = 0, *, skewed: bool = False) -> None:
        rng = np.random.default_rng(seed)
        self.skewed = skewed
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
            if self.skewed:  # half of them in the first cluster
                picks[rng.random(m) < 0.5] = 0
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


def run(n: int, kind: str, args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    rng = np.random.default_rng(1)
    dist = Distribution(n, skewed=kind == "skewed")
    data = dist.draw(n, rng)
    queries = dist.draw(args.queries, np.random.default_rng(2))
    ids = np.arange(1, n + 1, dtype=np.int64)
    flat = faiss.IndexFlatIP(DIM)
    flat.add(data)
    _, truth_rows = flat.search(queries, 10)
    truth = ids[truth_rows]
    singles = [q[None, :] for q in queries[: args.latency_queries]]
    start = time.perf_counter()
    for q in singles[:50]:
        flat.search(q, 10)
    flat_one = (time.perf_counter() - start) / 50

    if args.exact == "sqlite":
        db = sqlite_vectors(tmp / f"vectors-{kind}-{n}.sqlite", data)
        exact = exact_from_sqlite(db)
    else:
        def exact(wanted: np.ndarray) -> np.ndarray:
            return data[wanted - 1]

    # As grow_index does it, with the catalog's sample, chunks and tuning probes.
    sample = data[rng.choice(n, size=training_size(n), replace=False)]
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

    path = tmp / f"vectors-{kind}-{n}.faiss"
    index.save(path)
    on_disk = folder_bytes(_shards.shards_path(path)) / n
    mapped = ShardedIndex.load(path, dim=DIM, exact=exact)
    _, refined = mapped.search(queries, 10)
    one = timed(lambda: [mapped.search(q, 10) for q in singles]) / len(singles)
    batch = timed(lambda: mapped.search(queries[:100], 10))
    checkpoint, flush = checkpoint_cost(mapped, dist, path, n)
    mapped.exact = None
    _, coarse = mapped.search(queries, 10)
    codes_only = timed(lambda: [mapped.search(q, 10) for q in singles]) / len(singles)
    return {
        "n": n, "kind": kind, "nlist": index.nlist, "nprobe": nprobe, "refine": index.refine,
        "short": index.short_of_target, "code": index.code_size,
        "bytes": index.bytes_per_vector(), "disk": on_disk, "train": train, "add": add,
        "tune": tune, "recall_codes": recall(coarse, truth), "recall": recall(refined, truth),
        "flat_ms": flat_one * 1e3, "one_ms": one * 1e3, "codes_ms": codes_only * 1e3,
        "batch_ms": batch * 1e3, "checkpoint_ms": checkpoint * 1e3, "flush_s": flush,
        # What the chooser keeps: by default, and with the lowest threshold it takes.
        "chooser": (f"{'sharded' if n > _shards.SHARDED_ABOVE else 'flat'} / "
                    f"{'sharded' if n >= SHARDED_AT_LEAST else 'flat'}"),
    }


def checkpoint_cost(index: ShardedIndex, dist: Distribution, path: Path,
                    n: int) -> tuple[float, float]:
    """A checkpoint's index work: 2,000 new vectors added and saved, averaged
    over ten; then the encoding of FLUSH_AT waiting vectors, per vector."""
    rng = np.random.default_rng(3)
    extra = dist.draw(_shards.FLUSH_AT, rng)
    new_ids = np.arange(n + 1, n + 1 + len(extra), dtype=np.int64)
    table = {int(i): v for i, v in zip(new_ids, extra, strict=True)}
    stored = index.exact
    assert stored is not None

    def exact(wanted: np.ndarray) -> np.ndarray:
        out = stored(wanted)
        for row, item in enumerate(wanted.tolist()):
            if item in table:
                out[row] = table[item]
        return out

    index.exact = exact
    start = time.perf_counter()
    for i in range(0, 20_000, 2_000):
        index.upsert(new_ids[i : i + 2_000], extra[i : i + 2_000])
        index.save(path)
    checkpoint = (time.perf_counter() - start) / 10
    start = time.perf_counter()
    index.upsert(new_ids[20_000:], extra[20_000:])  # FLUSH_AT waiting: encoded now
    flush = time.perf_counter() - start
    index.exact = stored
    return checkpoint, flush


HEADER = ("| data | n | chooser (default / lowest threshold) | index "
          "| bytes/vector (codes + ids; on disk) | recall@10 codes / re-ranked "
          "| 1 query flat | 1 query sharded (codes only) | sharded vs flat | 100 queries |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")


def table_row(r: dict[str, object]) -> str:
    short = "" if r["short"] is None else f", short of target ({r['short']:.3f})"
    return (f"| {r['kind']} | {r['n']:,} | {r['chooser']} | OPQ+IVF{r['nlist']},PQ{r['code']} "
            f"nprobe {r['nprobe']}, {r['refine']} per result{short} "
            f"| {r['bytes']:.0f} ({r['disk']:.1f}) | {r['recall_codes']:.3f} / "
            f"**{r['recall']:.3f}** | {r['flat_ms']:.2f} ms | {r['one_ms']:.2f} ms "
            f"({r['codes_ms']:.2f} ms) | **{float(r['flat_ms']) / float(r['one_ms']):.2f}x** "  # type: ignore[arg-type]
            f"| {r['batch_ms']:.1f} ms |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="3000,300000,1000000")
    parser.add_argument("--data", default="clustered,skewed")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--latency-queries", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--exact", choices=["sqlite", "memory"], default="sqlite")
    args = parser.parse_args()
    faiss.omp_set_num_threads(args.threads)
    print(f"d={DIM}, rank {RANK}, faiss threads {args.threads}, exact vectors from "
          f"{args.exact}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        for kind in args.data.split(","):
            for n in (int(s) for s in args.sizes.split(",")):
                row = run(n, kind, args, Path(tmp))
                rows.append(row)
                print(f"  {kind} n={n:,}: train {row['train']:.1f} s, add {row['add']:.1f} s, "
                      f"tune {row['tune']:.1f} s, a checkpoint of 2,000 {row['checkpoint_ms']:.0f}"
                      f" ms, encoding {_shards.FLUSH_AT:,} waiting {row['flush_s']:.1f} s "
                      f"(load average {os.getloadavg()[0]:.2f})\n  {table_row(row)}", flush=True)
    print()
    print(HEADER)
    for r in rows:
        print(table_row(r))
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

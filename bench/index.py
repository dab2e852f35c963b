"""Flat (exact) against restyle's approximate VectorIndex: build time, query latency, recall@10.

Synthetic data resembling image embeddings: unit vectors in d=512 drawn
around a few thousand cluster centres of uneven size (a catalog holds many
near-identical items), queries drawn fresh from the same distribution (held
out, not stored vectors). Recall@10 is measured against the exact answer.

    PYTHONPATH=src python bench/index.py [--sizes 100000,1000000] [--dim 512]
"""

from __future__ import annotations

import argparse
import time

import faiss
import numpy as np

from restyle._index import VectorIndex


def embeddings(n: int, dim: int, *, centres: np.ndarray, rng: np.random.Generator,
               spread: float = 0.9) -> np.ndarray:
    weights = rng.pareto(1.5, len(centres)) + 1  # uneven cluster sizes
    picks = rng.choice(len(centres), size=n, p=weights / weights.sum())
    out = np.empty((n, dim), dtype=np.float32)
    step = 100_000
    for start in range(0, n, step):
        rows = picks[start : start + step]
        noise = rng.standard_normal((len(rows), dim)).astype(np.float32) / np.sqrt(dim)
        x = centres[rows] + spread * noise
        out[start : start + len(rows)] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def timed(fn, repeat: int = 1) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def recall_at_10(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]))


def run(n: int, dim: int, rng: np.random.Generator) -> None:
    centres = rng.standard_normal((max(100, n // 300), dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    data = embeddings(n, dim, centres=centres, rng=rng)
    queries = embeddings(100, dim, centres=centres, rng=rng)
    ids = np.arange(n, dtype=np.int64)

    flat = VectorIndex(dim, approximate_above=n + 1)
    start = time.perf_counter()
    flat.upsert(ids, data)
    flat_build = time.perf_counter() - start
    approx = VectorIndex(dim, approximate_above=0)
    start = time.perf_counter()
    approx.upsert(ids, data)
    approx_build = time.perf_counter() - start
    del data  # the indexes hold their own copies; keep the peak memory down
    assert flat.kind == "flat" and approx.kind == "ivf"

    _, truth = flat.search(queries, 10)
    _, found = approx.search(queries, 10)
    singles = [q[None, :] for q in queries[:50]]
    flat_one = timed(lambda: [flat.search(q, 10) for q in singles[:10]]) / 10
    approx_one = timed(lambda: [approx.search(q, 10) for q in singles]) / len(singles)
    flat_batch = timed(lambda: flat.search(queries, 10), repeat=2)
    approx_batch = timed(lambda: approx.search(queries, 10), repeat=5)
    nlist = approx._index.nlist
    print(f"n={n:,} d={dim}: IVF nlist={nlist} nprobe={approx.nprobe}")
    print(f"  build      flat {flat_build:8.2f} s   approximate {approx_build:8.2f} s")
    print(f"  1 query    flat {flat_one * 1e3:8.2f} ms  approximate {approx_one * 1e3:8.2f} ms"
          f"   speed-up {flat_one / approx_one:6.1f}x")
    print(f"  100 queries flat {flat_batch * 1e3:7.1f} ms  approximate {approx_batch * 1e3:8.2f} ms"
          f"   speed-up {flat_batch / approx_batch:6.1f}x")
    print(f"  recall@10  approximate {recall_at_10(found, truth):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    VectorIndex(1)  # applies restyle's faiss settings
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, "
          f"BLAS threshold {faiss.cvar.distance_compute_blas_threshold}")
    for size in (int(s) for s in args.sizes.split(",")):
        run(size, args.dim, np.random.default_rng(size))


if __name__ == "__main__":
    main()

"""Exact (flat) search against restyle's VectorIndex: which kind it chooses,
query time at several batch sizes, recall@10, build time and peak memory.

Three kinds of synthetic unit vectors in d=512, held-out queries from the same
distribution, recall@10 against exact search:

- clustered: around n/300 centres of uneven (Pareto) size, like a catalog
  with many look-alikes (what image embeddings of listings resemble);
- low-rank: Gaussian in a random 64-dimensional subspace, plus a little noise;
- isotropic: uniform on the sphere, where no index can beat a full scan.

The baseline is faiss's exact ``IndexFlatIP`` (BLAS for batches of 16 or
more). restyle's VectorIndex is built with its defaults, so it decides itself
between exact search and an IVF. Query times alternate the two, best of the
rounds, single queries over 50 of them; the CPU time (both faiss threads)
moves less with the machine's load than the wall clock. Peak memory is measured in a child process:
the resident memory an ``upsert`` of all the vectors adds at its peak, over
the size of the vectors handed to it.

    PYTHONPATH=src:. python bench/index.py [--sizes 100000,1000000]
        [--kinds clustered,low-rank,isotropic] [--batches 1,16,100,1000] [--rounds 3]
        [--skip-memory]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from restyle._indexes.flat import VectorIndex


def unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


class Source:
    """Draws data and held-out queries from one distribution."""

    def __init__(self, kind: str, n: int, dim: int, rng: np.random.Generator) -> None:
        self.kind, self.dim, self.rng = kind, dim, rng
        if kind == "clustered":
            self.centres = unit(rng.standard_normal((max(100, n // 300), dim)).astype(np.float32))
            weights = rng.pareto(1.5, len(self.centres)) + 1  # uneven cluster sizes
            self.weights = weights / weights.sum()
        elif kind == "low-rank":
            self.basis = np.linalg.qr(rng.standard_normal((dim, 64)))[0].T.astype(np.float32)

    def draw(self, n: int) -> np.ndarray:
        out = np.empty((n, self.dim), dtype=np.float32)
        rng, dim = self.rng, self.dim
        for start in range(0, n, 100_000):
            m = min(100_000, n - start)
            noise = rng.standard_normal((m, dim), dtype=np.float32)
            if self.kind == "clustered":
                rows = rng.choice(len(self.centres), size=m, p=self.weights)
                x = self.centres[rows] + 0.9 * noise / np.sqrt(dim)
            elif self.kind == "low-rank":
                x = rng.standard_normal((m, 64), dtype=np.float32) @ self.basis / 8
                x += 0.05 * noise / np.sqrt(dim)
            else:
                x = noise
            out[start : start + m] = unit(x)
        return out


def timed(fn: Callable[[], object], repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def recall_at_10(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)]))


def per_query(index: Any, queries: np.ndarray,
              batch: int) -> tuple[float, float]:
    """Wall-clock and CPU seconds per query, queries sent ``batch`` at a time."""
    chunks = [q[None, :] for q in queries[:50]] if batch == 1 else [queries[:batch]]
    wall, cpu = time.perf_counter(), time.process_time()
    for chunk in chunks:
        index.search(chunk, 10)
    count = sum(len(c) for c in chunks)
    return (time.perf_counter() - wall) / count, (time.process_time() - cpu) / count


def run(kind: str, n: int, dim: int, batches: list[int], rounds: int) -> None:
    import faiss
    source = Source(kind, n, dim, np.random.default_rng(n))
    data = source.draw(n)
    queries = source.draw(max([*batches, 100]))
    ids = np.arange(n, dtype=np.int64)
    flat = faiss.IndexFlatIP(dim)
    start = time.perf_counter()
    flat.add(data)
    flat_build = time.perf_counter() - start
    ours = VectorIndex(dim)
    start, cpu = time.perf_counter(), time.process_time()
    ours.upsert(ids, data)
    our_build, our_cpu = time.perf_counter() - start, time.process_time() - cpu
    del data
    _, truth = flat.search(queries[:100], 10)
    _, found = ours.search(queries[:100], 10)
    tried = ours._ivf_fraction
    shape = (f"IVF nlist {ours.nlist} nprobe {ours.nprobe}" if ours.kind == "ivf"
             else "exact search" + ("" if tried is None else
                                    f" (an IVF would have scanned {tried:.1%} of the vectors)"))
    fraction = ours.scan_fraction
    print(f"{kind} n={n:,}: restyle chose {shape}"
          + (f", scanning {fraction:.2%} of the vectors" if ours.kind == "ivf" and fraction
             else "")
          + f"; recall@10 {recall_at_10(found, truth):.3f}; build: flat {flat_build:.2f} s, "
          f"restyle {our_build:.1f} s ({our_cpu:.1f} CPU s); "
          f"load average {os.getloadavg()[0]:.2f}")
    for batch in batches:
        base, mine = [], []
        for _ in range(rounds):  # alternated, best of each
            base.append(per_query(flat, queries, batch))
            mine.append(per_query(ours, queries, batch))
        (b_wall, b_cpu), (m_wall, m_cpu) = min(base), min(mine)
        print(f"  batch {batch:5d}: flat {b_wall * 1e3:8.3f} ms/query, restyle "
              f"{m_wall * 1e3:8.3f} ms/query, speed-up {b_wall / m_wall:6.1f}x wall clock, "
              f"{b_cpu / m_cpu:6.1f}x CPU time")


_CHILD = r"""
import sys, numpy as np
sys.path.insert(0, sys.argv[3])
from bench.index import Source
from restyle._indexes.flat import VectorIndex

def kib(field):
    status = open("/proc/self/status").read()
    return int(status.split(field + ":")[1].split()[0])

n, kind = int(sys.argv[1]), sys.argv[2]
data = Source(kind, n, 512, np.random.default_rng(n)).draw(n)
index = VectorIndex(512)
before = kib("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # reset the peak to the present
index.upsert(np.arange(n, dtype=np.int64), data)
peak, after = kib("VmHWM"), kib("VmRSS")
print(f"{index.kind} {data.nbytes / 1024} {before} {peak} {after}")
"""


def memory(n: int, kind: str) -> None:
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(root) / "src"), root]))
    out = subprocess.run([sys.executable, "-c", _CHILD, str(n), kind, root], env=env,
                         capture_output=True, text=True, check=True).stdout.split()
    chosen, data, before, peak, after = out[0], *map(float, out[1:])
    print(f"upsert of {n:,} {kind} vectors ({data / 1024:.0f} MiB) into an empty index, "
          f"which became {chosen}: peak {(peak - before) / data:.2f}x the data, "
          f"{(after - before) / data:.2f}x once done (load average {os.getloadavg()[0]:.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--kinds", default="clustered,low-rank,isotropic")
    parser.add_argument("--batches", default="1,16,100,1000")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    import faiss  # after restyle, as an application using restyle loads it

    VectorIndex(1)  # applies restyle's faiss settings to the baseline too
    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, "
          f"{os.cpu_count()} CPUs, BLAS threshold {faiss.cvar.distance_compute_blas_threshold}")
    batches = [int(b) for b in args.batches.split(",")]
    for size in (int(s) for s in args.sizes.split(",")):
        for kind in args.kinds.split(","):
            run(kind, size, args.dim, batches, args.rounds)
        if not args.skip_memory:
            memory(size, "clustered")


if __name__ == "__main__":
    main()

"""A warm analyze over a 10,000-listing catalog against the work it cannot avoid.

The catalog is filled directly (rows and vectors through the Catalog's own
storage, no images encoded): listings with brands, categories, conditions,
prices and titles, their vectors in clusters, and for each bench photo a few
dozen look-alikes around its embedding (mostly one brand, one category), so
the catalog expert names a brand and the relaxed queries find filtered comps
as they would in a real catalog.

Baseline, the unavoidable work of one analysis, done directly: decode the
photo, encode it once, search the catalog once (30 listings, no filter),
estimate a price from those comps, and make the thumbnail. restyle: the
embedded default pipeline (clip and catalog experts, consensus, the catalog
marketplace, re-ranking with the catalog's vectors, the price), one
``Engine.analyze`` per photo. Both run interleaved, best of the rounds; the
second part repeats it all while a competing process keeps one CPU busy
with numpy matrix products. The CPU time (all threads of this process) is
printed beside the wall-clock time.

    PYTHONPATH=src:. python bench/analyze.py [--listings 10000] [--rounds 5] [--photos 6]
        [--load-threads 1] [--skip-loaded]
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.encode import photos as synthetic_photos
from restyle import Catalog, Comp, Engine, Reranker, estimate_price, load_photo
from restyle._ingestion.listings import DecodedListing, ListingRow
from restyle._store.catalog import BuildReport
from restyle._taxonomy import CATEGORIES
from restyle._types import Condition
from restyle.encoders.openclip import OpenClipEncoder

BRANDS = [f"{a} {b}" for a in ("Northwind", "Acme", "Harbor", "Juniper", "Kestrel", "Linden",
                                "Mosaic", "Orchard", "Pioneer", "Quarry", "Redwood", "Summit")
          for b in ("Outfitters", "Supply", "Studio", "Goods", "Works")]
CONDITIONS = [Condition.NEW, Condition.LIKE_NEW, Condition.USED, Condition.USED,
              Condition.USED, Condition.FOR_PARTS]
COLOURS = ["black", "blue", "brown", "grey", "green", "red", "white", "navy"]
MAX_COMPS = 30

_SPIN = """
import os, numpy as np
a = np.random.default_rng(0).standard_normal((400, 400))
while True:
    a = a @ a
    a /= np.abs(a).max()
"""


def jpeg(img: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)  # type: ignore[attr-defined]
    return buf.getvalue()


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def fill_catalog(catalog: Catalog, anchors: np.ndarray, n: int, folder: Path) -> None:
    """``n`` listings: look-alikes of each anchor vector, the rest in clusters."""
    rng = np.random.default_rng(7)
    dim = anchors.shape[1]
    # Each row names its own image file; analyses use the stored vectors and never
    # read them, so the files are not written.
    per_anchor = 40
    centres = unit(rng.standard_normal((max(1, n // 50), dim)))
    rows: list[DecodedListing] = []
    vectors = np.empty((n, dim), np.float32)
    for i in range(n):
        anchor = i // per_anchor if i < per_anchor * len(anchors) else None
        if anchor is not None:
            # Look-alikes are often the same kind of thing, less often the same
            # brand: the most specific queries find a few, and relaxing finds more.
            brand = BRANDS[anchor] if rng.random() < 0.2 else BRANDS[rng.integers(len(BRANDS))]
            category = (CATEGORIES[anchor % len(CATEGORIES)] if rng.random() < 0.6
                        else CATEGORIES[rng.integers(len(CATEGORIES))])
            vectors[i] = unit(anchors[anchor] + 0.35 * rng.standard_normal(dim) / np.sqrt(dim))
        else:
            brand = BRANDS[rng.integers(len(BRANDS))]
            category = CATEGORIES[rng.integers(len(CATEGORIES))]
            centre = centres[rng.integers(len(centres))]
            vectors[i] = unit(centre + 0.8 * rng.standard_normal(dim) / np.sqrt(dim))
        colour = COLOURS[rng.integers(len(COLOURS))]
        row = ListingRow(
            number=i, listing_id=f"item-{i:06d}",
            title=f"{brand} {colour} {category}, size {rng.choice(['S', 'M', 'L', 'XL'])}",
            brand=brand, category=category, condition=CONDITIONS[rng.integers(len(CONDITIONS))],
            price=Decimal(int(rng.integers(800, 25000))) / 100, currency="USD",
            url=f"https://shop.example.com/item-{i:06d}",
            image=str(folder / "images" / f"item-{i:06d}.jpg"), image_as_written="",
            sold=bool(rng.random() < 0.3),
        )
        rows.append(DecodedListing(row=row, sha256=f"{i:064x}", image=None))  # type: ignore[arg-type]
    report = BuildReport()
    for start in range(0, n, 1000):
        catalog.store(rows[start : start + 1000], vectors[start : start + 1000], report)
    catalog.checkpoint()
    assert report.added == n


def unavoidable(engine: Engine, catalog: Catalog, data: bytes) -> None:
    """Decode, one photo encode, one catalog search, the price, the thumbnail."""
    photo = load_photo(data)
    vector = engine.encoder.encode_images([photo.image])[0]
    hits = catalog.search_vector(vector, limit=MAX_COMPS)
    comps = [Comp(listing=listing, score=max(score, 0.0), similarity=score)
             for listing, score in hits]
    estimate_price(comps)
    photo.info()


def timed(work: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def fresh(catalog: Catalog) -> Catalog:
    """The catalog with its recent searches forgotten: the photos repeat from
    round to round, and each analysis must pay for its own search."""
    catalog.forget_recent_searches()
    return catalog


def measure(engine: Engine, catalog: Catalog, photos: list[bytes], rounds: int,
            label: str) -> tuple[float, float]:
    base: list[tuple[float, float]] = []
    ours: list[tuple[float, float]] = []
    for r in range(rounds):
        base.append(timed(lambda: [unavoidable(engine, fresh(catalog), p) for p in photos]))
        ours.append(timed(lambda: [(fresh(catalog), engine.analyze(p)) for p in photos]))
        n = len(photos)
        print(f"  {label} round {r + 1}: unavoidable {base[-1][0] / n * 1e3:7.1f} ms, "
              f"analyze {ours[-1][0] / n * 1e3:7.1f} ms per photo "
              f"(load average {os.getloadavg()[0]:.2f})")
    n = len(photos)
    b_wall, o_wall = min(t[0] for t in base) / n, min(t[0] for t in ours) / n
    b_cpu, o_cpu = min(t[1] for t in base) / n, min(t[1] for t in ours) / n
    print(f"{label}: unavoidable {b_wall * 1e3:.1f} ms ({b_cpu * 1e3:.1f} CPU ms), "
          f"analyze {o_wall * 1e3:.1f} ms ({o_cpu * 1e3:.1f} CPU ms) per photo, best of "
          f"{rounds}")
    print(f"{label}: analyze / unavoidable = {o_wall / b_wall:.2f}x wall clock, "
          f"{o_cpu / b_cpu:.2f}x CPU time (target <= 1.25x)")
    return o_wall / b_wall, o_cpu / b_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listings", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--photos", type=int, default=6)
    parser.add_argument("--model", default="ViT-B-32/random")
    parser.add_argument("--load-threads", type=int, default=1,
                        help="threads of the competing process (its BLAS threads)")
    parser.add_argument("--skip-loaded", action="store_true")
    args = parser.parse_args()

    import torch

    torch.manual_seed(0)
    encoder = OpenClipEncoder(args.model, device="cpu")
    encoder.load()
    images = synthetic_photos(args.photos, seed=11)
    photos = [jpeg(img) for img in images]
    anchors = encoder.encode_images(images)
    with tempfile.TemporaryDirectory() as home:
        folder = Path(home)
        start = time.perf_counter()
        with Catalog.open(folder / "catalog", encoder, create=True) as catalog:
            fill_catalog(catalog, anchors, args.listings, folder)
        print(f"{args.listings} listings stored in {time.perf_counter() - start:.1f} s; model "
              f"{args.model} ({encoder.precision}), torch {torch.__version__}, "
              f"{os.cpu_count()} CPUs, {args.photos} photos of 800x600 JPEG")
        engine = Engine(encoder=encoder, catalog=folder / "catalog", load_entrypoints=False,
                        reranker=Reranker(cache=None), max_comps=MAX_COMPS)
        catalog = engine.catalog
        for p in photos:  # warm: taxonomy prompts, index, caches, threads
            engine.analyze(p)
            unavoidable(engine, catalog, p)
        first = engine.analyze(photos[0])
        print(f"a warm analysis: {len(first.comps)} comps, brand {first.identification.brand!r},"
              f" price {first.price.estimate} {first.price.currency}, "
              f"query step of the first comp {first.comps[0].query_step!r}")
        measure(engine, catalog, photos, args.rounds, "no added load")
        if args.skip_loaded:
            return
        env = dict(os.environ, OPENBLAS_NUM_THREADS=str(args.load_threads),
                   OMP_NUM_THREADS=str(args.load_threads), MKL_NUM_THREADS=str(args.load_threads))
        spinner = subprocess.Popen([sys.executable, "-c", _SPIN], env=env)
        try:
            time.sleep(1.0)
            plural = "s" if args.load_threads > 1 else ""
            measure(engine, catalog, photos, args.rounds,
                    f"beside a process keeping {args.load_threads} CPU{plural} busy")
        finally:
            spinner.kill()
            spinner.wait()


if __name__ == "__main__":
    main()

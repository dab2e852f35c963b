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

The catalog is generated in one process and measured in another, as a web
worker meets it: the time it takes to open, and the memory it and the warm
Engine take beside the model's (target: the index plus 200 MB).

    PYTHONPATH=src:. python bench/analyze.py [--listings 10000] [--rounds 5] [--photos 6]
        [--catalog FOLDER] [--load-threads 1] [--skip-loaded]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
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
    """``n`` listings: look-alikes of each anchor vector, the rest in clusters
    (a cluster of about 50 listings each), generated and stored 10,000 at a time."""
    rng = np.random.default_rng(7)
    dim = anchors.shape[1]
    # Each row names its own image file; analyses use the stored vectors and never
    # read them, so the files are not written.
    per_anchor = 40
    centres = unit(rng.standard_normal((max(1, n // 50), dim)))
    report = BuildReport()
    chunk = 10_000
    progress = time.perf_counter()
    for start in range(0, n, chunk):
        numbers = np.arange(start, min(n, start + chunk))
        m = len(numbers)
        brands = rng.integers(len(BRANDS), size=m)
        categories = rng.integers(len(CATEGORIES), size=m)
        noise = rng.standard_normal((m, dim)).astype(np.float32) / np.sqrt(dim)
        vectors = unit(centres[rng.integers(len(centres), size=m)] + 0.8 * noise)
        for j in range(min(m, max(0, per_anchor * len(anchors) - start))):
            # Look-alikes are often the same kind of thing, less often the same
            # brand: the most specific queries find a few, and relaxing finds more.
            anchor = (start + j) // per_anchor
            if rng.random() < 0.2:
                brands[j] = anchor
            if rng.random() < 0.6:
                categories[j] = anchor % len(CATEGORIES)
            vectors[j] = unit(anchors[anchor] + 0.35 * noise[j])
        colours = rng.integers(len(COLOURS), size=m)
        sizes = rng.integers(4, size=m)
        conditions = rng.integers(len(CONDITIONS), size=m)
        prices = rng.integers(800, 25000, size=m)
        sold = rng.random(m) < 0.3
        rows = [DecodedListing(row=ListingRow(
            number=int(i), listing_id=f"item-{i:07d}",
            title=f"{BRANDS[b]} {COLOURS[c]} {CATEGORIES[k]}, size {'SMLX'[z] if z < 3 else 'XL'}",
            brand=BRANDS[b], category=CATEGORIES[k], condition=CONDITIONS[q],
            price=Decimal(int(p)) / 100, currency="USD",
            url=f"https://shop.example.com/item-{i:07d}",
            image=str(folder / "images" / f"item-{i:07d}.jpg"), image_as_written="",
            sold=bool(s)), sha256=f"{i:064x}", image=None)  # type: ignore[arg-type]
            for i, b, c, k, z, q, p, s in zip(numbers, brands, colours, categories, sizes,
                                               conditions, prices, sold, strict=True)]
        for at in range(0, m, 1000):
            catalog.store(rows[at : at + 1000], vectors[at : at + 1000], report)
        if time.perf_counter() - progress > 30:
            progress = time.perf_counter()
            print(f"  {start + m} listings stored", flush=True)
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


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident memory (``RssFile``: the part mapped from files,
    shared with every process that maps them; ``RssAnon``: its own)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field}")


def index_bytes(directory: Path) -> int:
    """The catalog's vector index on disk: its file, or its shards' folder."""
    return sum(p.stat().st_size for p in directory.rglob("vectors*") if p.is_file())


def bench_model(name: str, count: int) -> tuple[OpenClipEncoder, list[bytes], np.ndarray]:
    """The encoder (random weights, seeded: the same in every process), the
    bench photos as JPEG and their vectors."""
    import torch

    torch.manual_seed(0)
    encoder = OpenClipEncoder(name, device="cpu")
    encoder.load()
    images = synthetic_photos(count, seed=11)
    return encoder, [jpeg(img) for img in images], encoder.encode_images(images)


def fill(folder: Path, args: argparse.Namespace) -> None:
    """The catalog for ``--listings``, kept in ``folder`` (filled once)."""
    marker = folder / "listings.txt"
    wanted = f"{args.listings} {args.photos}"
    if marker.exists() and marker.read_text() == wanted:
        print(f"reusing the catalog of {args.listings} listings in {folder}")
        return
    shutil.rmtree(folder / "catalog", ignore_errors=True)
    encoder, _, anchors = bench_model(args.model, args.photos)
    start = time.perf_counter()
    with Catalog.open(folder / "catalog", encoder, create=True) as catalog:
        fill_catalog(catalog, anchors, args.listings, folder)
    marker.write_text(wanted)
    print(f"{args.listings} listings stored in {time.perf_counter() - start:.1f} s")


def measure_here(folder: Path, args: argparse.Namespace) -> None:
    """The measurements, in a process of their own: the catalog opened as a
    web worker opens it, and the memory it costs beside the model's."""
    import torch

    encoder, photos, _ = bench_model(args.model, args.photos)
    floor = rss_mb()
    start = time.perf_counter()
    catalog = Catalog.open(folder / "catalog", encoder)
    opened = time.perf_counter() - start
    size = index_bytes(folder / "catalog") / 2**20
    print(f"{len(catalog)} listings, a {type(catalog.index).__name__} of {size:.0f} MB; model "
          f"{args.model} ({encoder.precision}), torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs, {args.photos} photos of 800x600 JPEG")
    print(f"the catalog opens in {opened:.2f} s (target < 2 s; its files in the page cache)")
    engine = Engine(encoder=encoder, catalog=catalog, load_entrypoints=False,
                    reranker=Reranker(cache=None), max_comps=MAX_COMPS)
    for p in photos:  # warm: taxonomy prompts, index, caches, threads
        engine.analyze(p)
        unavoidable(engine, catalog, p)
    first = engine.analyze(photos[0])
    print(f"a warm analysis: {len(first.comps)} comps, brand {first.identification.brand!r},"
          f" price {first.price.estimate} {first.price.currency}, "
          f"query step of the first comp {first.comps[0].query_step!r}")
    measure(engine, catalog, photos, args.rounds, "no added load")
    cost = rss_mb() - floor
    print(f"memory: the process holds {rss_mb():.0f} MB, {floor:.0f} MB of it the model and "
          f"photos before the catalog; the catalog and the warm Engine {cost:.0f} MB = the "
          f"index ({size:.0f} MB) + {cost - size:.0f} MB (target: index + 200 MB); of all it "
          f"holds, {rss_mb('RssFile'):.0f} MB is mapped from files (the index's pages, shared "
          f"by the processes that search it) and {rss_mb('RssAnon'):.0f} MB its own")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listings", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--photos", type=int, default=6)
    parser.add_argument("--model", default="ViT-B-32/random")
    parser.add_argument("--catalog", type=Path,
                        help="keep the generated catalog in this folder, and reuse it")
    parser.add_argument("--load-threads", type=int, default=1,
                        help="threads of the competing process (its BLAS threads)")
    parser.add_argument("--skip-loaded", action="store_true")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure_here(args.catalog, args)
        return
    with tempfile.TemporaryDirectory() as home:
        folder = args.catalog or Path(home)
        folder.mkdir(parents=True, exist_ok=True)
        fill(folder, args)
        subprocess.run([sys.executable, __file__, *sys.argv[1:], "--catalog", str(folder),
                        "--measure"], check=True)


if __name__ == "__main__":
    main()

"""Catalog builds on a local Ray against the in-process build, and what each stage costs.

1. Stage costs on one core: the in-process stages timed one at a time on a
   sample of the listings, with torch and faiss on one thread: read and
   validate, load and decode (640x480 JPEG), encode (ViT-B-32, random
   weights: they cost what trained ones do), and the driver's merge (SQLite
   rows, vectors, index). docs/scale.md extrapolates from these.
2. The same 2,000-listing JSONL file built into a fresh catalog in process
   (batches of 32, torch on its default threads) and on a local Ray started
   here (``--actors`` encoder actors of ``--actor-cpus`` CPUs each, torch on
   that many threads), in the same run; the ratio of images/s (Ray over in
   process) is the overhead of going through Ray on one machine, and Ray
   images/s over the number of actors is the per-actor throughput.

The machine may be shared: the load average is printed before and after each
measurement, and the numbers only compare like with like inside one run.

    PYTHONPATH=src:. python bench/ray_build.py [--listings 2000] [--actors 2]
        [--actor-cpus 1] [--ray-cpus 4] [--model ViT-B-32/random]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (5 min {five:.2f}) on {os.cpu_count()} CPUs"


def stage_costs(source: Path, model: str, sample: int) -> dict[str, float]:
    """Seconds per listing of each stage, on one core."""
    import faiss
    import numpy as np
    import torch

    from restyle import Catalog
    from restyle._ingestion.listings import (
        DecodedListing,
        ListingRow,
        decode_listing_image,
        draft_side,
        embed_listings,
        load_images,
        read_listings,
        validate_listing,
    )
    from restyle.encoders.openclip import OpenClipEncoder

    threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    torch.set_num_threads(1)
    faiss.omp_set_num_threads(1)
    try:
        start = time.perf_counter()
        rows = [validate_listing(r, base=source.parent) for r in read_listings(source)]
        read = (time.perf_counter() - start) / len(rows)
        listings = [r for r in rows if isinstance(r, ListingRow)][:sample]
        encoder = OpenClipEncoder(model, device="cpu", batch_size=32)
        side = draft_side(encoder)  # what a build decodes to for this model
        start = time.perf_counter()
        decoded: list[DecodedListing] = []
        for loaded in load_images(listings):
            result = decode_listing_image(loaded, side=side)  # type: ignore[arg-type]
            assert isinstance(result, DecodedListing)
            decoded.append(result)
        decode = (time.perf_counter() - start) / len(listings)
        encoder.encode_images([d.image for d in decoded[:8]])  # load and warm up
        start = time.perf_counter()
        kept, vectors, _ = embed_listings(decoded, encoder)
        encode = (time.perf_counter() - start) / len(decoded)
        with tempfile.TemporaryDirectory() as tmp, Catalog.open(
                Path(tmp) / "c", encoder, create=True) as catalog:
            from restyle._store.catalog import BuildReport

            report = BuildReport()
            start = time.perf_counter()
            for i in range(0, len(kept), 32):
                catalog.store(kept[i : i + 32], np.ascontiguousarray(vectors[i : i + 32]),
                              report)
            catalog.checkpoint()
            merge = (time.perf_counter() - start) / len(kept)
    finally:
        torch.set_num_threads(threads[0])
        faiss.omp_set_num_threads(threads[1])
    return {"read and validate": read, "load and decode": decode, "encode": encode,
            "merge": merge}


def build(source: Path, target: Path, encoder: object, executor: object) -> float:
    from restyle import Catalog

    shutil.rmtree(target, ignore_errors=True)
    start = time.perf_counter()
    with Catalog.open(target, encoder, create=True) as catalog:  # type: ignore[arg-type]
        report = catalog.build(source, encoder, progress=False,  # type: ignore[arg-type]
                               executor=executor)  # type: ignore[arg-type]
    elapsed = time.perf_counter() - start
    assert report.added == sum(1 for _ in source.open()) and not report.rejected
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--listings", type=int, default=2000)
    parser.add_argument("--sample", type=int, default=200,
                        help="listings the per-stage costs are measured on")
    parser.add_argument("--model", default="ViT-B-32/random")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--actor-cpus", type=float, default=1.0)
    parser.add_argument("--ray-cpus", type=int, default=4,
                        help="logical CPUs of the local Ray (more than the cores: the "
                        "read and decode tasks are light next to the model)")
    parser.add_argument("--skip-stages", action="store_true")
    args = parser.parse_args()

    import ray
    import torch

    from bench.catalog_build import write_listings
    from restyle import RayExecutor
    from restyle.encoders.openclip import OpenClipEncoder

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        source = write_listings(folder, args.listings)
        encoder = OpenClipEncoder(args.model, device="cpu", batch_size=32)
        encoder.load()
        print(f"{args.listings} listings (640x480 JPEG), model {args.model}, precision "
              f"{encoder.precision}; {load()}")
        if not args.skip_stages:
            print(f"\nStage costs on one core (a sample of {args.sample} listings):")
            costs = stage_costs(source, args.model, args.sample)
            for name, seconds in costs.items():
                print(f"  {name:18s} {seconds * 1000:8.2f} ms per listing "
                      f"({1 / seconds:8.1f} per second per core)")
            print(f"  ({load()})")

        print(f"\nIn process (torch threads {torch.get_num_threads()}): {load()}")
        local = build(source, folder / "local", encoder, None)
        print(f"  {args.listings / local:7.1f} images/s ({local:.1f} s); after: {load()}")

        temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
        ray.init(address="local", num_cpus=args.ray_cpus, include_dashboard=False,
                 _temp_dir=temp, log_to_driver=False)
        try:
            executor = RayExecutor(actors=args.actors, actor_cpus=args.actor_cpus,
                                   batch_size=32)
            print(f"\nLocal Ray ({args.ray_cpus} logical CPUs, {args.actors} actors of "
                  f"{args.actor_cpus:g} CPU): {load()}")
            distributed = build(source, folder / "ray", encoder, executor)
            print(f"  {args.listings / distributed:7.1f} images/s ({distributed:.1f} s); "
                  f"after: {load()}")
        finally:
            ray.shutdown()
            shutil.rmtree(temp, ignore_errors=True)
        ratio = local / distributed
        print(f"\nRay / in process: {ratio:.2f} (target >= 0.7)")
        print(f"per actor ({args.actor_cpus:g} CPU): "
              f"{args.listings / distributed / args.actors:.1f} images/s")


if __name__ == "__main__":
    main()

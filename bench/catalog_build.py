"""Catalog builds: throughput against the encoder's own, and memory against file size.

1. Throughput. A 2,000-listing JSONL file whose listings each have their own
   640x480 JPEG is built into a fresh catalog with ViT-B-32 (random weights,
   CPU); the baseline is the same encoder embedding already-decoded images in
   batches of the same size, nothing else. Rounds alternate the two and the
   best of each is kept; the ratio (build listings/s over encoder images/s)
   says how much of the encoder's speed the whole build keeps: reading,
   validating, decoding and writing included. The same ratio in CPU time
   (all threads) is printed too: on a shared machine it moves far less with
   the load than wall-clock time does.

2. Memory. Listings files of about 100 MB and 1 GB (rows of about 2 KB, most
   pointing at a few small images; some invalid; some single lines of 1 MB
   that are rejected unread) are run through the ingestion stages (read,
   validate, load and decode the image) in a child process, without the model
   (embedding 500,000 rows would take hours on a CPU), and the child's peak
   RSS is printed for each: it should not grow with the file.

    PYTHONPATH=src:. python bench/catalog_build.py [--listings 2000] [--rounds 3]
        [--batch-size 32] [--sizes 100,1000] [--skip-build] [--skip-memory] [--device cuda]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def jpeg(img: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def listing_images(folder: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` distinct 640x480 JPEGs: windows of a few camera-sized pictures."""
    from bench.encode import photos

    rng = np.random.default_rng(seed)
    bases = photos(40, seed=seed)
    (folder / "images").mkdir(parents=True)
    names = []
    for i in range(n):
        base = bases[i % len(bases)]
        x, y = int(rng.integers(0, 160)), int(rng.integers(0, 120))
        name = f"images/{i:05d}.jpg"
        (folder / name).write_bytes(jpeg(base.crop((x, y, x + 640, y + 480))))
        names.append(name)
    return names


def write_listings(folder: Path, n: int) -> Path:
    """A JSONL file of ``n`` listings in ``folder``, each with its own 640x480 JPEG."""
    names = listing_images(folder, n)
    source = folder / "listings.jsonl"
    with source.open("w") as fh:
        for i, name in enumerate(names):
            fh.write(json.dumps({"id": f"item-{i}", "title": f"Thing number {i}",
                                 "brand": "Acme", "category": "jacket",
                                 "price": f"{10 + i % 90}.00", "image": name}) + "\n")
    return source


def timed(work: Callable[[], object]) -> tuple[float, float]:
    """Wall-clock and CPU seconds (all threads of this process) of ``work()``."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return time.perf_counter() - wall, time.process_time() - cpu


def build_round(folder: Path, source: Path, encoder: object,
                batch_size: int) -> tuple[float, float]:
    from restyle import Catalog

    target = folder / "catalog"
    shutil.rmtree(target, ignore_errors=True)

    def build() -> None:
        with Catalog.open(target, encoder, create=True) as catalog:  # type: ignore[arg-type]
            report = catalog.build(source, encoder, progress=False,  # type: ignore[arg-type]
                                   batch_size=batch_size)
        assert report.added == sum(1 for _ in source.open()) and not report.rejected

    return timed(build)


def _torch() -> Any:
    import torch  # after restyle, as an application using restyle loads it

    return torch


def throughput(args: argparse.Namespace) -> None:
    from restyle.encoders.openclip import OpenClipEncoder

    torch = _torch()
    torch.manual_seed(0)
    encoder = OpenClipEncoder(args.model, device=args.device, batch_size=args.batch_size)
    encoder.load()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        start = time.perf_counter()
        source = write_listings(folder, args.listings)
        names = [json.loads(line)["image"] for line in source.open()]
        print(f"{args.listings} listings of 640x480 JPEG written in "
              f"{time.perf_counter() - start:.1f} s; model {args.model}, precision "
              f"{encoder.precision}, torch threads {torch.get_num_threads()}, "
              f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
        # The encoder's own speed, on images decoded beforehand (a sample: all
        # 2,000 decoded at once would take 1.8 GB): whole, as an application
        # holding them would hand them over, and as small as the build decodes
        # them (a JPEG at reduced scale in its decoder, down to the model's side).
        from restyle._ingestion.listings import draft_side
        from restyle._input.imaging import decode

        side = draft_side(encoder)
        sample = [Image.open(folder / n).convert("RGB") for n in names[: args.sample]]
        drafted = [decode((folder / n).read_bytes(), draft_side=side).image
                   for n in names[: args.sample]]
        encoder.encode_images(sample[:32])  # warm up
        times: dict[str, list[tuple[float, float]]] = {"whole": [], "drafted": [], "build": []}
        for r in range(args.rounds):
            for key, images in (("whole", sample), ("drafted", drafted)):
                wall, cpu = timed(lambda images=images: encoder.encode_images(images))
                times[key].append((wall / len(images), cpu / len(images)))
            wall, cpu = build_round(folder, source, encoder, args.batch_size)
            times["build"].append((wall / args.listings, cpu / args.listings))
            print(f"  round {r + 1}: encoder {1 / times['whole'][-1][0]:6.1f} img/s "
                  f"({1 / times['drafted'][-1][0]:.1f} on images decoded as the build does), "
                  f"build {1 / times['build'][-1][0]:6.1f} listings/s "
                  f"(load average {os.getloadavg()[0]:.2f})")
        rate = {k: 1 / min(t[0] for t in v) for k, v in times.items()}
        cpu = {k: min(t[1] for t in v) for k, v in times.items()}
        print(f"encoder alone (best)  : {rate['whole']:7.1f} images/s, "
              f"{cpu['whole'] * 1000:6.1f} CPU ms per image (640x480 decoded)")
        small = f"{drafted[0].width}x{drafted[0].height}"
        print(f"  the same, {small}: {rate['drafted']:7.1f} images/s, "
              f"{cpu['drafted'] * 1000:6.1f} CPU ms per image (as the build decodes them, "
              f"for a model that sees {side}x{side})")
        print(f"catalog build (best)  : {rate['build']:7.1f} listings/s, "
              f"{cpu['build'] * 1000:6.1f} CPU ms per listing (batches of {args.batch_size})")
        print(f"build / encoder       : {rate['build'] / rate['whole']:7.2f} in wall-clock speed, "
              f"{cpu['whole'] / cpu['build']:.2f} in CPU work (less sensitive to the machine's "
              f"load; target >= 0.95)")
        floor = rate["build"] / rate["drafted"]
        print(f"build / its floor     : {floor:7.2f} in wall-clock speed, "
              f"{cpu['drafted'] / cpu['build']:.2f} in CPU work (the encoder on images already "
              f"decoded at the build's size: what reading, decoding and writing cost)")


# -- memory ---------------------------------------------------------------------

_CHILD = r"""
import sys, time
from pathlib import Path
from restyle._ingestion.listings import (ListingLimits, ListingRow, Rejection, batches,
                             decode_listing_image, load_images, read_listings, validate_listing)

def kib(field):
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child
    # started by a big parent would report the parent's peak.
    status = Path("/proc/self/status").read_text()
    return int(status.split(field + ":")[1].split()[0])

source = Path(sys.argv[1])
before = kib("VmRSS")
limits = ListingLimits()
start = time.perf_counter()
rows = kept = rejected = 0
checked = (validate_listing(r, base=source.parent, limits=limits)
           for r in read_listings(source, limits=limits))
for batch in batches(checked, 32):
    rows += len(batch)
    good = [r for r in batch if isinstance(r, ListingRow)]
    rejected += len(batch) - len(good)
    for loaded in load_images(good, limits=limits):
        if not isinstance(loaded, Rejection):
            loaded = decode_listing_image(loaded, limits=limits)
        rejected += isinstance(loaded, Rejection)
        kept += not isinstance(loaded, Rejection)
elapsed = time.perf_counter() - start
print(f"{rows} {kept} {rejected} {elapsed:.2f} {before} {kib('VmHWM')}")
"""


def listings_file(folder: Path, megabytes: int, seed: int = 0) -> Path:
    """About ``megabytes`` MB of JSONL: 2 KB rows over four small images, one row
    in ten invalid, one line in 2,000 a single 1 MB title."""
    rng = random.Random(seed)
    images = folder / "images"
    images.mkdir(exist_ok=True)
    for i in range(4):
        (images / f"{i}.jpg").write_bytes(
            jpeg(Image.new("RGB", (96, 96), (40 * i, 120, 200 - 40 * i))))
    path = folder / f"listings-{megabytes}mb.jsonl"
    target = megabytes * 1_000_000
    description = "Gently used, from a smoke-free home. " * 40  # about 1.5 KB
    huge = json.dumps({"id": "huge", "title": "x" * 1_000_000, "price": "5",
                       "image": "images/0.jpg"})
    written = 0
    with path.open("w") as fh:
        i = 0
        while written < target:
            i += 1
            if i % 2000 == 0:
                line = huge
            elif i % 10 == 0:
                line = json.dumps({"id": f"bad-{i}", "title": "no price", "image": "images/1.jpg",
                                   "description": description})
            else:
                line = json.dumps({
                    "id": f"item-{i}", "title": f"Northwind trucker jacket {i} " * 4,
                    "brand": "Northwind", "category": "jacket", "condition": "used",
                    "price": f"{rng.randint(5, 500)}.{rng.randint(0, 99):02d}",
                    "image": f"images/{i % 4}.jpg", "description": description,
                })
            fh.write(line + "\n")
            written += len(line) + 1
    return path


def memory(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        src = str(Path(__file__).resolve().parent.parent / "src")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
        for megabytes in sizes:
            start = time.perf_counter()
            path = listings_file(folder, megabytes)
            size = path.stat().st_size
            made = time.perf_counter() - start
            result = subprocess.run([sys.executable, "-c", _CHILD, str(path)], env=env,
                                    capture_output=True, text=True, check=True)
            rows, kept, rejected, elapsed, before, peak = result.stdout.split()
            print(f"{size / 1e6:7.0f} MB file ({made:.0f} s to write): {int(rows):>7} rows, "
                  f"{int(kept):>7} decoded, {int(rejected):>6} rejected in "
                  f"{float(elapsed):6.1f} s ({int(rows) / float(elapsed):6.0f} rows/s); "
                  f"RSS after imports {int(before) / 1024:5.1f} MiB, peak "
                  f"{int(peak) / 1024:5.1f} MiB (load average {os.getloadavg()[0]:.2f})")
            path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listings", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sample", type=int, default=256,
                        help="images the encoder-alone baseline embeds per round")
    parser.add_argument("--model", default="ViT-B-32/random")
    parser.add_argument("--device", default="cpu", help="the encoder's: cpu, cuda, mps")
    parser.add_argument("--batch-size", type=int, default=32,
                        help="the build's batch (the encoder's is 32 either way)")
    parser.add_argument("--sizes", default="100,1000", help="listings file sizes, in MB")
    parser.add_argument("--skip-build", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    if not args.skip_memory:
        memory(args)
    if not args.skip_build:
        throughput(args)


if __name__ == "__main__":
    main()

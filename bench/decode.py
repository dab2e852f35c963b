"""Decoding in parallel: restyle's photo decoding with 1 and 2 threads, against
Pillow decoding the same files directly.

The photos are phone-sized JPEGs (4032x3024, quality 90, with EXIF
orientation), written to a temporary folder once.

- restyle: :func:`restyle.load_photo` on each path with a deadline, as every
  analysis reads its photo (the gate's checks, the JPEG decoded at the reduced
  scale restyle needs, the working copy made), on 1 thread and on 2 threads
  sharing the list (what concurrent ``analyze`` calls on one Engine do).
- floor: Pillow alone on the same files: opened, drafted to the same scale,
  decoded, on 1 and on 2 threads.

Rounds alternate the sides and the best of each is kept; photos a second are
printed, and the speed-up of 2 threads over 1 (the target is at least 1.7x
on 2 cores) beside the floor's own.

    PYTHONPATH=src:. python bench/decode.py [--photos 24] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from restyle import load_photo
from restyle._input.limits import WORKING_SIDE


def write_photos(folder: Path, count: int) -> list[Path]:
    """Phone-sized JPEGs with some structure, each a little different."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 255, (189, 252, 3), dtype=np.uint8)
    paths = []
    for i in range(count):
        base = Image.fromarray(np.roll(small, i * 7, axis=1)).resize((4032, 3024),
                                                                      Image.Resampling.BICUBIC)
        exif = Image.Exif()
        exif[0x0112] = 1 + i % 2 * 5  # upright, or turned (6)
        path = folder / f"photo-{i:02d}.jpg"
        base.save(path, quality=90, exif=exif)
        paths.append(path)
    return paths


def restyle_decode(path: Path) -> None:
    load_photo(path, deadline=time.monotonic() + 60)


def pillow_decode(path: Path) -> None:
    with Image.open(path) as img:
        width, height = img.size
        scale = 1
        while scale < 8 and -(-max(width, height) // scale) > WORKING_SIDE:
            scale *= 2
        img.draft("RGB", (width // scale, height // scale))
        img.load()


def throughput(decode: Callable[[Path], None], paths: list[Path], threads: int) -> float:
    started = time.perf_counter()
    if threads == 1:
        for path in paths:
            decode(path)
    else:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(decode, paths))
    return len(paths) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="restyle-decode-") as tmp:
        paths = write_photos(Path(tmp), args.photos)
        sides = {("floor (Pillow)", 1): pillow_decode, ("floor (Pillow)", 2): pillow_decode,
                 ("restyle", 1): restyle_decode, ("restyle", 2): restyle_decode}
        for decode in set(sides.values()):
            decode(paths[0])  # warm: the plugins imported, the file in the page cache
        best: dict[tuple[str, int], float] = {}
        for round_ in range(args.rounds):
            for (name, threads), decode in sides.items():
                rate = throughput(decode, paths, threads)
                best[(name, threads)] = max(best.get((name, threads), 0.0), rate)
                print(f"round {round_ + 1}  {name:15s} {threads} thread(s)  {rate:6.1f} photos/s"
                      f"  load {os.getloadavg()[0]:.2f}", flush=True)
        print(f"\n{args.photos} photos of 4032x3024, best of {args.rounds} "
              f"(load {os.getloadavg()[0]:.2f}):")
        for name in ("floor (Pillow)", "restyle"):
            one, two = best[(name, 1)], best[(name, 2)]
            print(f"  {name:15s} 1 thread {one:6.1f} photos/s   2 threads {two:6.1f} photos/s"
                  f"   {two / one:.2f}x")
        print(f"  restyle on 2 threads: {best[('restyle', 2)] / best[('floor (Pillow)', 2)]:.2f} "
              "of the floor's throughput; 2 threads over 1: target >= 1.7x")


if __name__ == "__main__":
    main()

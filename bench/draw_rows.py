"""Drawing a build's training sample from a large listings file, against reading it whole.

A build that takes a catalog past a million listings draws rows evenly across
the rest of its file before it starts (``draw_rows``: a seek and two line
reads a row, nothing else read) and estimates the file's rows when it is too
large to count (``estimate_rows``: 2,000 lines drawn; measured here on a
file of any size). Baseline: reading the
file line by line to the end, what a sampler that keeps every n-th line
must do. Both run on the same generated JSONL file (about 300 bytes a row,
like a listing with an image URL), interleaved, best of the rounds; the file
is in the page cache, so the figures are the CPU's cost, and the draws a
second are printed beside it to price a file on disk (a draw there is one
random read).

    PYTHONPATH=src:. python bench/draw_rows.py [--rows 3000000] [--draws 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from restyle._ingestion import reading
from restyle._ingestion.listings import draw_rows, estimate_rows

# The estimate a file over 1 GiB gets, whatever this file's size: never counted.
reading.COUNTED_BYTES = 0


def write_listings(path: Path, rows: int) -> None:
    with path.open("w") as fh:
        for i in range(rows):
            fh.write(json.dumps({
                "id": f"item-{i:09d}", "title": f"Northwind Outfitters jacket, size M, {i}",
                "brand": "Northwind Outfitters", "category": "jacket", "price": f"{i % 500}.99",
                "condition": "used", "url": f"https://shop.example.com/item-{i:09d}",
                "image": f"https://images.example.com/{i % 97:02d}/{i:09d}/photo-large.jpg",
            }) + "\n")


def read_whole(path: Path, every: int) -> int:
    kept = 0
    with path.open("rb") as fh:
        for number, _ in enumerate(fh):
            kept += number % every == 0
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3_000_000)
    parser.add_argument("--draws", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="restyle-draw-") as tmp:
        source = Path(tmp) / "listings.jsonl"
        write_listings(source, args.rows)
        size = source.stat().st_size
        print(f"{args.rows:,} rows, {size / 2**20:,.0f} MiB; drawing {args.draws:,} "
              f"(load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs)")
        best = {"read whole": float("inf"), "draw_rows": float("inf"),
                "estimate_rows": float("inf")}
        for round_ in range(args.rounds):
            start = time.perf_counter()
            read_whole(source, max(1, args.rows // args.draws))
            best["read whole"] = min(best["read whole"], time.perf_counter() - start)
            start = time.perf_counter()
            written = draw_rows(source, Path(tmp) / "drawn.jsonl", args.draws)
            best["draw_rows"] = min(best["draw_rows"], time.perf_counter() - start)
            start = time.perf_counter()
            estimate = estimate_rows(source)
            best["estimate_rows"] = min(best["estimate_rows"], time.perf_counter() - start)
            print(f"  round {round_ + 1}: read whole {best['read whole']:.2f} s, draw_rows "
                  f"{best['draw_rows']:.2f} s ({written:,} rows), estimate_rows "
                  f"{best['estimate_rows'] * 1e3:.1f} ms ({estimate:,}) "
                  f"(load average {os.getloadavg()[0]:.2f})")
        whole, drawn = best["read whole"], best["draw_rows"]
        print(f"draw_rows: {drawn:.2f} s for {args.draws:,} rows, {args.draws / drawn:,.0f} "
              f"draws a second; reading the file whole: {whole:.2f} s "
              f"({whole / drawn:.1f}x the draws' time)")
        print(f"at 10^8 rows (495,000 draws from 30 GB): {495_000 / (args.draws / drawn):.0f} s "
              f"of CPU, plus one random read a draw on disk")


if __name__ == "__main__":
    main()

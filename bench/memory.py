"""Peak memory of one analysis, by the shape of the image it is given.

Each case runs in a fresh process with ViT-B-32 (random weights) already
loaded and warmed up, through the two paths an image takes: as the user's
photo (``load_photo``, its embedding, its thumbnail) and as a comp's picture
(``decode(data, draft_side=448)`` then ``encode_images``). The peak resident
memory the path adds on top of the loaded model is compared with what a
normal 1024x768 photo adds; the target is at most 100 MB more for every case.
A process that goes past ``--kill-mb`` is stopped and reported as such. The
seconds column is the path's own time (decoding, embedding, thumbnail): for
the progressive JPEGs near restyle's limits (50 scans, 64 MiB of coefficient
buffers) it is the most CPU one accepted image can cost. The HEIC cases need
the ``heif`` extra (pillow-heif), the AVIF case a Pillow with AVIF support.

    PYTHONPATH=src python bench/memory.py [--cases normal,strip-40000x1] [--kill-mb 4000]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from restyle._input.imaging import JPEG_MAX_SCANS as MAX_SCANS

TARGET_MB = 100.0


def scene(size: tuple[int, int], seed: int = 0) -> Image.Image:
    """A photo-like picture of any size: a gradient with a few shapes on it
    (compresses like a photo of an object on a plain background)."""
    rng = np.random.default_rng(seed)
    width, height = size
    row = np.linspace(40, 220, width, dtype=np.float32)
    col = np.linspace(0.6, 1.0, height, dtype=np.float32)
    grey = (col[:, None] * row[None, :]).astype(np.uint8)
    img = Image.merge("RGB", [Image.fromarray(grey)] * 3)
    draw = ImageDraw.Draw(img)
    for _ in range(8):
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        w, h = int(rng.integers(1, width // 3 + 2)), int(rng.integers(1, height // 3 + 2))
        draw.ellipse((x, y, x + w, y + h), fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    return img


def encoded(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def animation(fmt: str, frames: int, size: tuple[int, int]) -> bytes:
    """``frames`` distinct frames (a moving disc), so no encoder merges them."""
    pictures = []
    for i in range(frames):
        img = Image.new("RGB", size, (250, 250, 245))
        x = i * (size[0] - 40) // frames
        ImageDraw.Draw(img).ellipse((x, 10, x + 40, 50), fill=(i % 256, 90, 160))
        pictures.append(img)
    extra: dict[str, object] = {}
    if fmt == "WEBP":
        extra = {"lossless": True, "quality": 0, "method": 0}
    return encoded(pictures[0], fmt, save_all=True, append_images=pictures[1:], duration=40,
                   **extra)


def progressive(img: Image.Image, *, subsampling: int = 0, scans: int | None = None) -> bytes:
    """``img`` as a progressive JPEG; with ``scans``, its last scan (a
    refinement) repeated until it has that many, each of which libjpeg decodes."""
    data = encoded(img, "JPEG", progressive=True, quality=80, subsampling=subsampling)
    if scans is None:
        return data
    found, pos = [], 2
    while data[pos + 1] != 0xD9:  # the segments up to the end of the image
        end = pos + 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        if data[pos + 1] == 0xDA:  # a scan: its header, then its entropy-coded data
            match = re.compile(rb"\xff[^\x00\xd0-\xd7]").search(data, end)
            assert match is not None
            end = match.start()
            found.append((pos, end))
        pos = end
    start, end = found[-1]
    return data[:end] + data[start:end] * (scans - len(found)) + data[end:]


def heic(img: Image.Image) -> bytes:
    """``img`` as an iPhone-like HEIC, made by pillow-heif (the ``heif`` extra)."""
    import pillow_heif

    buf = io.BytesIO()
    pillow_heif.from_pillow(img).save(buf, quality=80)
    return buf.getvalue()


def flat(size: tuple[int, int], mode: str = "RGB") -> Image.Image:
    return Image.new(mode, size, 150 if mode == "L" else (120, 140, 160))


CASES: dict[str, tuple[str, Callable[[], bytes]]] = {
    "normal": ("1024x768 JPEG", lambda: encoded(scene((1024, 768)), "JPEG", quality=90)),
    "strip-40000x1": ("40000x1 PNG", lambda: encoded(Image.new("RGB", (40000, 1)), "PNG")),
    "strip-1x40000": ("1x40000 PNG", lambda: encoded(Image.new("RGB", (1, 40000)), "PNG")),
    "strip-8000x1": ("8000x1 PNG", lambda: encoded(Image.new("RGB", (8000, 1)), "PNG")),
    "panorama-8000x2000": ("8000x2000 JPEG",
                           lambda: encoded(scene((8000, 2000)), "JPEG", quality=90)),
    "banner-21000x1050": ("21000x1050 PNG (20:1, 22 Mpx)",
                          lambda: encoded(scene((21000, 1050)), "PNG")),
    "huge-jpeg-6000": ("6000x6000 JPEG (36 Mpx)",
                       lambda: encoded(scene((6000, 6000)), "JPEG", quality=90)),
    "huge-png-4800": ("4800x4800 PNG (23 Mpx, near the PNG limit)",
                      lambda: encoded(scene((4800, 4800)), "PNG")),
    "huge-webp-2400": ("2400x2400 WebP (5.8 Mpx, near the WebP limit)",
                       lambda: encoded(scene((2400, 2400)), "WEBP", quality=80, method=0)),
    "heic-iphone-4032": ("4032x3024 HEIC (12.2 Mpx, an iPhone's photo)",
                         lambda: heic(scene((4032, 3024)))),
    "heic-over-limit-4200": ("4200x3200 HEIC (13.4 Mpx, refused)",
                             lambda: heic(scene((4200, 3200)))),
    "avif-3500": ("3500x3500 AVIF (12.3 Mpx, near the AVIF limit)",
                  lambda: encoded(scene((3500, 3500)), "AVIF", quality=60, speed=10)),
    "png-over-limit-6000": ("6000x6000 PNG (36 Mpx, refused)",
                            lambda: encoded(scene((6000, 6000)), "PNG")),
    "webp-over-limit-6000": ("6000x6000 WebP (36 Mpx, refused)",
                             lambda: encoded(scene((6000, 6000)), "WEBP", quality=80, method=0)),
    "over-cap-10000": ("10000x10000 PNG (100 Mpx)",
                       lambda: encoded(Image.new("L", (10000, 10000), 200), "PNG")),
    "apng-500": ("500-frame APNG 1024x768", lambda: animation("PNG", 500, (1024, 768))),
    "webp-500": ("500-frame WebP 1024x768", lambda: animation("WEBP", 500, (1024, 768))),
    "progressive-6324": ("6324x6324 progressive 4:4:4 (refused)",
                         lambda: progressive(flat((6324, 6324)))),
    "scans-4000": ("2048x2048 progressive, 4000 scans (refused)",
                   lambda: progressive(flat((2048, 2048)), scans=4000)),
    "progressive-444-3200": ("3200x3200 progressive 4:4:4, 50 scans",
                             lambda: progressive(scene((3200, 3200)), scans=MAX_SCANS)),
    "progressive-420-4600": ("4600x4600 progressive 4:2:0, 50 scans",
                             lambda: progressive(scene((4600, 4600)), subsampling=2,
                                                 scans=MAX_SCANS)),
    "progressive-grey-5700": ("5700x5700 progressive grey, 50 scans",
                              lambda: progressive(flat((5700, 5700), "L"), scans=MAX_SCANS)),
}


# -- the measured side: one case, one path, in its own process ----------------------


def _rss_kb(field: str) -> int:
    status = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
    return int(match.group(1)) if match else 0


def measure(path: Path, route: str) -> dict[str, object]:
    import gc

    import torch

    from restyle import ImageError, load_photo
    from restyle._input.imaging import decode
    from restyle.encoders.openclip import OpenClipEncoder

    torch.manual_seed(0)
    encoder = OpenClipEncoder("ViT-B-32/random", device="cpu")
    encoder.load()
    warm = scene((640, 480), seed=1)
    encoder.encode_images([warm])  # allocator and kernel caches belong to the model
    load_photo(encoded(warm, "JPEG")).info()
    data = path.read_bytes()
    gc.collect()
    # Reset the kernel's high-water mark so model loading does not hide the case.
    Path("/proc/self/clear_refs").write_text("5")
    before = _rss_kb("VmRSS")
    outcome, size = "ok", ""
    started = time.perf_counter()
    try:
        if route == "photo":
            photo = load_photo(path)
            encoder.photo_vector(photo)
            photo.info()
        else:
            photo = decode(data, draft_side=448)
            encoder.encode_images([photo.image])
        size = f"{photo.width}x{photo.height}"
    except ImageError as exc:
        outcome = f"ImageError: {exc}".replace(f"photo {str(path)!r}", "photo")
    seconds = time.perf_counter() - started
    peak = _rss_kb("VmHWM")
    return {"added_mb": (peak - before) / 1024, "outcome": outcome, "decoded": size,
            "seconds": seconds}


# -- the driver ---------------------------------------------------------------------


def run_case(path: Path, route: str, kill_mb: float) -> dict[str, object]:
    import psutil

    env = {**os.environ, "PYTHONWARNINGS": "always"}
    proc = subprocess.Popen([sys.executable, __file__, "--measure", str(path), route],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    killed = threading.Event()

    def watch() -> None:
        try:
            handle = psutil.Process(proc.pid)
            while proc.poll() is None:
                if handle.memory_info().rss > kill_mb * 1024 * 1024:
                    killed.set()
                    proc.kill()
                    return
                time.sleep(0.02)
        except psutil.NoSuchProcess:
            return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    out, err = proc.communicate()
    watcher.join()
    warnings = sorted(set(re.findall(r"(\w+Warning):", err)))
    if killed.is_set():
        return {"added_mb": float("inf"), "outcome": f"killed above {kill_mb:.0f} MB RSS",
                "decoded": "", "warnings": warnings, "seconds": float("nan")}
    if proc.returncode != 0:
        tail = err.strip().splitlines()[-1:] or ["no output"]
        return {"added_mb": float("nan"), "outcome": f"crashed: {tail[0]}", "decoded": "",
                "warnings": warnings, "seconds": float("nan")}
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    result["warnings"] = warnings
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES),
                        help="comma-separated case names (default: all)")
    parser.add_argument("--kill-mb", type=float, default=4000.0,
                        help="stop a case whose process grows past this RSS")
    parser.add_argument("--measure", nargs=2, metavar=("FILE", "ROUTE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(Path(args.measure[0]), args.measure[1])))
        return

    names = ["normal", *[n for n in args.cases.split(",") if n and n != "normal"]]
    print("ViT-B-32/random on cpu; peak RSS added over the loaded model, each case and path "
          "in a fresh process")
    rows = []
    with tempfile.TemporaryDirectory(prefix="restyle-memory-") as tmp:
        for name in names:
            label, make = CASES[name]
            path = Path(tmp) / name
            data = make()
            path.write_bytes(data)
            for route in ("photo", "comp"):
                result = run_case(path, route, args.kill_mb)
                rows.append((name, label, len(data), route, result))
                print(f"  measured {name} ({route})", file=sys.stderr)
    normal = {route: float(r["added_mb"]) for n, _, _, route, r in rows  # type: ignore[arg-type]
              if n == "normal"}
    header = (f"{'case':<42} {'bytes':>9} {'path':<5} {'added MB':>9} {'over normal':>11} "
              f"{'verdict':<7} {'seconds':>7} {'decoded':<10} outcome")
    print(header)
    print("-" * len(header))
    worst = 0.0
    for name, label, nbytes, route, r in rows:
        added = float(r["added_mb"])  # type: ignore[arg-type]
        over = added - normal[route]
        if name != "normal":
            worst = max(worst, over)
        verdict = "-" if name == "normal" else ("ok" if over <= TARGET_MB else "OVER")
        outcome = str(r["outcome"])
        if r["warnings"]:
            outcome += f" [stderr: {', '.join(r['warnings'])}]"  # type: ignore[arg-type]
        seconds = float(r["seconds"])  # type: ignore[arg-type]
        print(f"{label:<42} {nbytes:>9,} {route:<5} {added:>9.1f} {over:>11.1f} {verdict:<7} "
              f"{seconds:>7.2f} {r['decoded']!s:<10} {outcome[:110]}")
    print(f"worst case over normal: {worst:.1f} MB (target <= {TARGET_MB:.0f} MB): "
          f"{'met' if worst <= TARGET_MB else 'NOT met'}")


if __name__ == "__main__":
    main()

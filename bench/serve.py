"""restyle serve under load on loopback: requests per second and latency at
1, 4 and 16 concurrent clients, with cross-request batching of the encoder
on and off in the same run, and the server's memory over the run.

Two servers are started one after the other with ``restyle serve`` (the same
catalog, model and options but ``--batch-window``): the embedded pipeline on
a local catalog of the sample listings (the ``catalog`` expert and
marketplace, so each request decodes its photo, encodes it, searches the
catalog, re-ranks with the catalog's vectors and prices), on
``ViT-B-32/random`` (the real architecture, no download). Each level runs
for ``--seconds`` or ``--requests`` requests, whichever ends first, after a
warm-up; every client sends one photo at a time (each client its own photo)
to ``POST /v1/analyze``. RSS is the server process's, read after the
warm-up and at the end of each level.

Last, the model alone in this process: one photo at a time against a batch
of 16, what batching can at most save per photo.

Target: batching raises throughput at 16 clients by at least 1.5x on CPU;
RSS flat after the warm-up.

    PYTHONPATH=src:. python bench/serve.py [--seconds 15] [--requests 400]
        [--model ViT-B-32/random] [--batch-window 20]
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
LEVELS = (1, 4, 16)


def photos(count: int) -> list[bytes]:
    """``count`` different photos: the sample photo, each with its own corner."""
    base = Image.open(ROOT / "examples" / "photo.jpg").convert("RGB")
    out = []
    for i in range(count):
        image = base.copy()
        image.paste((i * 37 % 256, i * 91 % 256, i * 53 % 256), (0, 0, 24, 24))
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start(args: argparse.Namespace, catalog: Path,
          window: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [sys.executable, "-m", "restyle", "serve", "--model", args.model, "--catalog",
               str(catalog), "--no-plugins", "--experts", "catalog", "--marketplaces", "catalog",
               "--port", str(port), "--concurrency", "16", "--queue", "64",
               "--batch-window", str(window), "--max-batch", "32", "--deadline", "120"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    ends = time.monotonic() + 600
    while time.monotonic() < ends:
        try:
            if requests.get(url + "/v1/ready", timeout=5).status_code == 200:
                return process, url
        except requests.RequestException:
            pass
        if process.poll() is not None:
            raise SystemExit(f"the server ended with status {process.returncode}")
        time.sleep(0.5)
    raise SystemExit("the server did not get ready in 10 minutes")


def level(url: str, clients: int, data: list[bytes], seconds: float,
          most: int) -> tuple[float, float, float, int]:
    """``clients`` threads posting photos until ``seconds`` or ``most`` requests:
    requests per second, p50 and p99 latency in ms, errors."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    started = time.monotonic()
    ends = started + seconds

    def client(i: int) -> None:
        session = requests.Session()
        photo = data[i % len(data)]
        while time.monotonic() < ends:
            with lock:
                if len(latencies) + errors[0] >= most:
                    return
            t0 = time.monotonic()
            answer = session.post(url + "/v1/analyze", timeout=120,
                                  files=[("image", ("p.jpg", photo, "image/jpeg"))])
            took = time.monotonic() - t0
            with lock:
                if answer.status_code == 200:
                    latencies.append(took)
                else:
                    errors[0] += 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    if not latencies:
        return 0.0, float("nan"), float("nan"), errors[0]
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (len(latencies) / elapsed, statistics.median(ordered) * 1000, p99 * 1000,
            errors[0])


def run(args: argparse.Namespace, catalog: Path, window: float,
        data: list[bytes]) -> dict[int, tuple[float, float, float, int]]:
    process, url = start(args, catalog, window)
    name = f"batching {'on, ' + format(window, 'g') + ' ms window' if window else 'off'}"
    try:
        level(url, 16, data, seconds=args.warm_up, most=10_000)  # warm-up
        rss = [rss_mb(process.pid)]
        results = {}
        for clients in LEVELS:
            results[clients] = level(url, clients, data, args.seconds, args.requests)
            rss.append(rss_mb(process.pid))
            rps, p50, p99, errors = results[clients]
            print(f"  {name:30} {clients:3} clients  {rps:7.2f} req/s  p50 {p50:7.0f} ms  "
                  f"p99 {p99:7.0f} ms  errors {errors}", flush=True)
        growth = rss[-1] - rss[0]
        print(f"  {name:30} RSS after warm-up {rss[0]:.0f} MB, after each level "
              f"{', '.join(f'{r:.0f}' for r in rss[1:])} MB (growth {growth:+.0f} MB)",
              flush=True)
        return results
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def model_alone(model: str, data: list[bytes]) -> None:
    """The model in this process, no server: one photo at a time against a batch
    of 16 (best of 3 each), per photo."""
    from restyle import load_photo
    from restyle.encoders.openclip import OpenClipEncoder

    encoder = OpenClipEncoder(model, device="cpu")
    encoder.warm_up()
    images = [load_photo(d).image for d in data[:16]]
    one = min(_timed(lambda: encoder.encode_images(images[:1])) for _ in range(3))
    batch = min(_timed(lambda: encoder.encode_images(images)) for _ in range(3)) / len(images)
    print(f"the model alone: {one * 1000:.0f} ms a photo one at a time, {batch * 1000:.0f} ms "
          f"a photo in a batch of {len(images)} ({one / batch:.2f}x)", flush=True)


def _timed(work: object) -> float:
    start = time.perf_counter()
    work()  # type: ignore[operator]
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="ViT-B-32/random")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--warm-up", type=float, default=8.0)
    parser.add_argument("--batch-window", type=float, default=20.0, metavar="MS")
    args = parser.parse_args()
    print(f"load average at start: {', '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"({os.cpu_count()} CPUs); model {args.model}", flush=True)
    data = photos(16)
    with tempfile.TemporaryDirectory(prefix="restyle-bench-serve-") as tmp:
        catalog = Path(tmp) / "catalog"
        subprocess.run([sys.executable, "-m", "restyle", "catalog", "build",
                        str(ROOT / "examples" / "catalog" / "listings.jsonl"), "--catalog",
                        str(catalog), "--model", args.model], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        on = run(args, catalog, args.batch_window, data)
        off = run(args, catalog, 0, data)
    model_alone(args.model, data)
    ratio = on[16][0] / off[16][0] if off[16][0] else float("inf")
    print(f"throughput at 16 clients, batching on / off: {ratio:.2f}x (target >= 1.5x)")
    print(f"load average at end: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

"""Re-ranking 50 comps whose images a local server serves with 150 ms latency each.

The baseline is the original design's ``_find_visual_comps``: a sequential
``requests.get`` per comp, each image encoded on its own in fp32. restyle
fetches concurrently (6 connections per host, its default), decodes in the
fetch threads and encodes what has arrived whenever the model is free, at its
default precision (and once more in fp32, to compare the ranking).

restyle's own floor is the slower of the two things it overlaps, each timed
alone in the same run: downloading the 50 images with the same fetcher
(nothing decoded or encoded), and encoding the photo and the 50 images already
decoded, in one call. Rounds alternate baseline, restyle and the floor's two
parts; the best of each is kept. Every side runs its model on restyle's model
thread, so each gets the same OpenMP threads.

    PYTHONPATH=src:. python bench/rerank.py [--comps 50] [--latency 0.15] [--rounds 3]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import numpy as np
import requests
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from bench.encode import photos
from restyle import Fetcher, FetchLimits, Listing, Money, Reranker, load_photo
from restyle.encoders.openclip import OpenClipEncoder
from restyle.encoders.openclip.threads import _MODEL_THREAD
from restyle.testing import FakeServer, Reply


class OriginalEncoder:
    """The original design's encoder: bytes in, one fp32 vector out."""

    def __init__(self, loaded) -> None:  # type: ignore[no-untyped-def]
        self.loaded = loaded

    def encode_image(self, data: bytes) -> np.ndarray | None:
        import torch

        try:
            img = Image.open(io.BytesIO(data)).convert("RGB")
        except Exception:
            return None

        def run() -> np.ndarray:
            with torch.inference_mode():
                x = self.loaded.preprocess(img).unsqueeze(0)
                f = self.loaded.model.encode_image(x).float()
            return torch.nn.functional.normalize(f, dim=-1).numpy()[0]  # type: ignore[no-any-return]

        return _MODEL_THREAD.run(run)  # type: ignore[no-any-return]


def find_visual_comps(encoder: OriginalEncoder, user_image_data: bytes,
                      initial_comps: list[dict]) -> list[dict]:
    """``_find_visual_comps`` from the original design, unchanged in substance."""
    user_image_vector = encoder.encode_image(user_image_data)
    ranked_results = []
    for comp in initial_comps:
        try:
            image_url = comp.get("image", {}).get("imageUrl")
            if not image_url:
                continue
            response = requests.get(image_url, timeout=5)
            comp_image_vector = encoder.encode_image(response.content)
            if comp_image_vector is not None:
                similarity = np.dot(user_image_vector, comp_image_vector)
                comp["visual_similarity_score"] = round(float(similarity), 4)
                ranked_results.append(comp)
        except Exception:
            pass
    return sorted(ranked_results, key=lambda x: x.get("visual_similarity_score", 0),
                  reverse=True)


def jpeg(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=88)
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--comps", type=int, default=50)
    parser.add_argument("--latency", type=float, default=0.15)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="ViT-B-32/random")
    args = parser.parse_args()
    import torch  # after restyle, as an application using restyle loads it

    pictures = [jpeg(img) for img in photos(args.comps + 1, seed=3)]
    photo_bytes, comp_bytes = pictures[0], pictures[1:]
    routes = {f"/img/{i}.jpg": Reply(body=b, delay=args.latency)
              for i, b in enumerate(comp_bytes)}

    torch.manual_seed(0)
    fp32 = OpenClipEncoder(args.model, device="cpu", precision="fp32")
    original = OriginalEncoder(fp32._load())
    torch.manual_seed(0)
    ours = OpenClipEncoder(args.model, device="cpu")
    ours.load()
    decoded = [load_photo(b).image for b in pictures]
    print(f"{args.comps} comps, {args.latency * 1000:.0f} ms server latency, model "
          f"{args.model}, restyle precision {ours.precision}, {os.cpu_count()} CPUs")

    with FakeServer(routes=routes) as server:
        urls = [server.url(path) for path in routes]
        comps = [{"itemId": str(i), "image": {"imageUrl": u}} for i, u in enumerate(urls)]
        found = [(Listing(marketplace="bench", listing_id=str(i), title=f"item {i}",
                          price=Money(amount=Decimal("10"), currency="USD"), image_url=u),
                  "full") for i, u in enumerate(urls)]
        fetcher = Fetcher(FetchLimits(), trusted_networks=["127.0.0.1/32"])  # default limits

        def run(encoder: OpenClipEncoder) -> list[str]:
            reranker = Reranker(fetcher=fetcher, cache=None, cutoff=False)
            embedding = encoder.photo_vector(load_photo(photo_bytes))
            ranked = reranker.rerank(embedding, found, encoder=encoder)
            return [c.listing.listing_id for c in ranked.comps]

        def timed(work: Callable[[], object]) -> tuple[float, object]:
            start = time.perf_counter()
            result = work()
            return time.perf_counter() - start, result

        times: dict[str, list[float]] = {"original": [], "restyle": [], "network": [],
                                         "encode": []}
        run(ours)  # warm: the model, the connections' code paths
        for r in range(args.rounds):
            seconds, baseline = timed(lambda: find_visual_comps(original, photo_bytes,
                                                                [dict(c) for c in comps]))
            times["original"].append(seconds)
            seconds, fast_order = timed(lambda: run(ours))
            times["restyle"].append(seconds)
            seconds, fetched = timed(lambda: fetcher.fetch_many(urls))
            assert all(isinstance(v, bytes) for v in fetched.values())  # type: ignore[union-attr]
            times["network"].append(seconds)
            times["encode"].append(timed(lambda: ours.encode_images(decoded))[0])
            print(f"  round {r + 1}: original {times['original'][-1]:.2f} s, restyle "
                  f"{times['restyle'][-1]:.2f} s, network alone {times['network'][-1]:.2f} s, "
                  f"encoding alone {times['encode'][-1]:.2f} s "
                  f"(load average {os.getloadavg()[0]:.2f})")
        exact_time, exact_order = timed(lambda: run(fp32))

    best = {k: min(v) for k, v in times.items()}
    floor = max(best["network"], best["encode"])
    base_order = [c["itemId"] for c in baseline]  # type: ignore[attr-defined]
    fast_order = list(fast_order)  # type: ignore[call-overload]
    print(f"original design (sequential) : {best['original']:6.2f} s")
    print(f"restyle, {ours.precision:<4}                : {best['restyle']:6.2f} s  "
          f"({best['original'] / best['restyle']:5.1f}x, target >= 7.5x)  top-10 overlap: "
          f"{len(set(fast_order[:10]) & set(base_order[:10]))}/10")
    print(f"restyle, fp32 (one run)      : {exact_time:6.2f} s  "
          f"({best['original'] / exact_time:5.1f}x)  top-10 overlap: "
          f"{len(set(exact_order[:10]) & set(base_order[:10]))}/10, same order: "
          f"{exact_order == base_order} (restyle decodes the comps at the model's scale)")
    print(f"restyle's floor              : {floor:6.2f} s  (network alone {best['network']:.2f} s,"
          f" encoding {args.comps + 1} images alone {best['encode']:.2f} s)")
    print(f"restyle / floor              : {best['restyle'] / floor:6.2f}  (target <= 1.15); "
          f"original / floor {best['original'] / floor:.1f}x")
    print(f"max concurrent requests at the server: {server.max_active}")


if __name__ == "__main__":
    main()

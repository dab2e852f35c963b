"""Re-ranking 50 comps whose images a local server serves with 150 ms latency each.

The baseline is the original design's ``_find_visual_comps``: a sequential
``requests.get`` per comp, each image encoded on its own. restyle fetches
concurrently (bounded per host), decodes in the fetch threads and encodes in
one batch. Both sides use ViT-B-32 with the same random weights; the baseline
in fp32 as the original did, restyle at its default precision for this
machine (and once more in fp32, to show the same ranking). Prints times, the
ratio, and how far the rankings agree.

    PYTHONPATH=src:. python bench/rerank.py [--comps 50] [--latency 0.15]
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import requests
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.encode import photos
from restyle import Fetcher, FetchLimits, Listing, Money, Reranker
from restyle.encoders.openclip import OpenClipEncoder
from restyle.testing import FakeServer, Reply


class OriginalEncoder:
    """The original design's encoder: bytes in, one fp32 vector out."""

    def __init__(self, loaded) -> None:  # type: ignore[no-untyped-def]
        self.loaded = loaded

    def encode_image(self, data: bytes) -> np.ndarray | None:
        try:
            img = Image.open(io.BytesIO(data)).convert("RGB")
        except Exception:
            return None
        with torch.inference_mode():
            x = self.loaded.preprocess(img).unsqueeze(0)
            f = self.loaded.model.encode_image(x).float()
        return torch.nn.functional.normalize(f, dim=-1).numpy()[0]


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
    parser.add_argument("--model", default="ViT-B-32/random")
    args = parser.parse_args()

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
    print(f"{args.comps} comps, {args.latency * 1000:.0f} ms server latency, model "
          f"{args.model}, restyle precision {ours.precision}")

    with FakeServer(routes=routes) as server:
        urls = [server.url(path) for path in routes]
        comps = [{"itemId": str(i), "image": {"imageUrl": u}} for i, u in enumerate(urls)]
        found = [(Listing(marketplace="bench", listing_id=str(i), title=f"item {i}",
                          price=Money(amount=Decimal("10"), currency="USD"), image_url=u),
                  "full") for i, u in enumerate(urls)]

        start = time.perf_counter()
        baseline = find_visual_comps(original, photo_bytes, comps)
        base_time = time.perf_counter() - start

        fetcher = Fetcher(FetchLimits(), trusted_networks=["127.0.0.1/32"])  # default limits

        def run(encoder: OpenClipEncoder) -> tuple[float, list[str]]:
            reranker = Reranker(fetcher=fetcher, cache=None, cutoff=False)
            begin = time.perf_counter()
            from restyle import load_photo

            embedding = load_photo(photo_bytes).embedding(encoder)
            ranked = reranker.rerank(embedding, found, encoder=encoder)
            return time.perf_counter() - begin, [c.listing.listing_id for c in ranked.comps]

        fast_time, fast_order = run(ours)
        exact_time, exact_order = run(fp32)

    base_order = [c["itemId"] for c in baseline]
    print(f"original design (sequential) : {base_time:6.2f} s")
    print(f"restyle, fp32                : {exact_time:6.2f} s  "
          f"({base_time / exact_time:5.1f}x)  same ranking: {exact_order == base_order}")
    print(f"restyle, {ours.precision:<4}                : {fast_time:6.2f} s  "
          f"({base_time / fast_time:5.1f}x)  top-10 overlap: "
          f"{len(set(fast_order[:10]) & set(base_order[:10]))}/10, "
          f"same ranking: {fast_order == base_order}")
    print(f"max concurrent requests at the server: {server.max_active}")


if __name__ == "__main__":
    main()

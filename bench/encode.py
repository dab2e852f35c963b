"""Encoder throughput: a batch-1 fp32 loop against restyle's encoding path.

Both sides use ViT-B-32 with the same random weights (random weights cost
what trained ones do). The baseline preprocesses and encodes one image at a
time in fp32, as the original design did; restyle batches, preprocesses in a
thread pool and uses its default precision for this machine (bf16 on CPUs
with native bf16). Prints the times, the ratio and the worst cosine between
the two sides' embeddings.

    PYTHONPATH=src python bench/encode.py [--images 64] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from PIL import Image, ImageDraw

from restyle.encoders.openclip import OpenClipEncoder


def photos(n: int, seed: int = 0) -> list[Image.Image]:
    """Camera-sized pictures with some structure (shapes on a gradient)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        base = np.linspace(0, 255, 800, dtype=np.float32)[None, :, None]
        arr = (base * rng.uniform(0.3, 1.0, 3) + rng.normal(0, 12, (600, 800, 3))).clip(0, 255)
        img = Image.fromarray(arr.astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(6):
            x, y = rng.integers(0, 700), rng.integers(0, 500)
            draw.ellipse((x, y, x + rng.integers(40, 200), y + rng.integers(40, 200)),
                         fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        out.append(img)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default="ViT-B-32/random")
    args = parser.parse_args()

    images = photos(args.images)
    torch.manual_seed(0)
    baseline = OpenClipEncoder(args.model, device="cpu", precision="fp32")
    loaded = baseline._load()
    torch.manual_seed(0)
    fast = OpenClipEncoder(args.model, device="cpu", batch_size=args.batch_size)
    fast.load()
    print(f"model {args.model}, {args.images} images of 800x600, torch threads "
          f"{torch.get_num_threads()}, restyle precision {fast.precision}")

    def loop() -> np.ndarray:
        rows = []
        with torch.inference_mode():
            for img in images:
                x = loaded.preprocess(img.convert("RGB")).unsqueeze(0)
                f = loaded.model.encode_image(x).float()
                rows.append(torch.nn.functional.normalize(f, dim=-1).numpy()[0])
        return np.stack(rows)

    loop()  # warm up both paths once (allocator, oneDNN kernels)
    fast.encode_images(images[: args.batch_size])
    start = time.perf_counter()
    reference = loop()
    loop_time = time.perf_counter() - start
    start = time.perf_counter()
    ours = fast.encode_images(images)
    fast_time = time.perf_counter() - start
    batched32 = OpenClipEncoder(args.model, device="cpu", precision="fp32",
                                batch_size=args.batch_size)
    start = time.perf_counter()
    batched32.encode_images(images)  # shares the baseline's loaded fp32 model
    batched_time = time.perf_counter() - start
    cosine = float((reference * ours).sum(axis=1).min())
    print(f"batch-1 fp32 loop : {loop_time:7.2f} s  ({args.images / loop_time:6.1f} img/s)")
    print(f"restyle, fp32     : {batched_time:7.2f} s  ({args.images / batched_time:6.1f} img/s)"
          "  (batching and threaded preprocessing only)")
    print(f"restyle           : {fast_time:7.2f} s  ({args.images / fast_time:6.1f} img/s)")
    print(f"speed-up          : {loop_time / fast_time:7.2f}x")
    print(f"min cosine to fp32: {cosine:.5f}")


if __name__ == "__main__":
    main()

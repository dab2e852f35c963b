"""Encoder throughput: restyle's encode_images against the model alone and a batch-1 fp32 loop.

All sides use ViT-B-32 with the same random weights (random weights cost what
trained ones do), on 800x600 pictures already decoded.

- batch-1 fp32 loop: the original design, open_clip's preprocess and the fp32
  model one image at a time.
- model-only ceiling: the forward pass alone, at restyle's precision and batch
  size, on tensors preprocessed beforehand: what the encoder would reach if
  preprocessing cost nothing.
- restyle: ``encode_images`` on the pictures (preprocessing included).

Rounds alternate the sides and the best of each is kept; CPU time (all threads
of this process) is printed beside the wall-clock time. The baseline and the
ceiling run on restyle's model thread too, so every side gets the same
OpenMP threads (see the encoder's module docstring).

    PYTHONPATH=src:. python bench/encode.py [--images 64] [--batch-size 32] [--rounds 3]
        [--device cuda] [--precision int8]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from restyle.encoders.openclip import OpenClipEncoder
from restyle.encoders.openclip.threads import _MODEL_THREAD


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


def timed(work: Callable[[], object]) -> tuple[float, float, object]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="ViT-B-32/random")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps")
    parser.add_argument("--precision", default=None,
                        help="restyle's precision (fp32, bf16, fp16, int8); its default if unset")
    args = parser.parse_args()
    import torch  # after restyle, as an application using restyle loads it

    images = photos(args.images)
    torch.manual_seed(0)
    device = args.device
    baseline = OpenClipEncoder(args.model, device=device, precision="fp32")
    exact = baseline._load()
    torch.manual_seed(0)
    fast = OpenClipEncoder(args.model, device=device, batch_size=args.batch_size,
                           precision=args.precision)
    loaded = fast._load()
    dtype = next(loaded.model.parameters()).dtype
    print(f"model {args.model}, {args.images} images of 800x600, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, restyle precision {fast.precision}, "
          f"batch {args.batch_size}, {os.cpu_count()} CPUs, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.startswith("cuda") else ""))

    def synchronize() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)

    def loop() -> np.ndarray:
        def run() -> np.ndarray:
            rows = []
            with torch.inference_mode():
                for img in images:
                    x = exact.preprocess(img.convert("RGB")).unsqueeze(0).to(device)
                    f = exact.model.encode_image(x).float()
                    rows.append(torch.nn.functional.normalize(f, dim=-1).cpu().numpy()[0])
            return np.stack(rows)
        return _MODEL_THREAD.run(run)  # type: ignore[no-any-return]

    # The ceiling's input: open_clip's own preprocessing, done before the clock starts.
    tensors = [torch.stack([loaded.preprocess(img) for img in images[s : s + args.batch_size]])
               .to(device, dtype) for s in range(0, len(images), args.batch_size)]

    def model_only(model: object = loaded.model) -> None:
        def run() -> None:
            with torch.inference_mode():
                for batch in tensors:
                    model.encode_image(batch.float() if model is exact.model else batch)  # type: ignore[attr-defined]
            synchronize()
        _MODEL_THREAD.run(run)

    # At another precision than fp32, the fp32 model alone too: what it gains.
    sides = ("loop", "ceiling", "restyle") + (("fp32 ceiling",) if fast.precision != "fp32"
                                             else ())

    loop()  # warm up every path once (allocator, oneDNN kernels)
    model_only()
    fast.encode_images(images[: args.batch_size])
    results: dict[str, list[tuple[float, float]]] = {side: [] for side in sides}
    reference = ours = None
    for r in range(args.rounds):
        wall, cpu, reference = timed(loop)
        results["loop"].append((wall, cpu))
        wall, cpu, _ = timed(model_only)
        results["ceiling"].append((wall, cpu))
        wall, cpu, ours = timed(lambda: fast.encode_images(images))
        results["restyle"].append((wall, cpu))
        if "fp32 ceiling" in results:
            results["fp32 ceiling"].append(timed(lambda: model_only(exact.model))[:2])
        print(f"  round {r + 1}: " + ", ".join(f"{k} {v[-1][0]:.2f} s" for k, v in results.items())
              + f" (load average {os.getloadavg()[0]:.2f})")
    best = {k: min(v) for k, v in results.items()}
    n = args.images
    for label, key in (("batch-1 fp32 loop ", "loop"), ("model-only ceiling", "ceiling"),
                       ("restyle           ", "restyle"), ("fp32 model alone  ", "fp32 ceiling")):
        if key not in best:
            continue
        wall, cpu = best[key]
        print(f"{label}: {wall:6.2f} s ({n / wall:6.1f} img/s, {cpu / n * 1e3:5.1f} CPU ms/img)")
    print(f"restyle / ceiling : {best['ceiling'][0] / best['restyle'][0]:.3f} of the model-only "
          f"throughput ({best['ceiling'][1] / best['restyle'][1]:.3f} in CPU time; "
          "target >= 0.92)")
    print(f"restyle / loop    : {best['loop'][0] / best['restyle'][0]:.2f}x faster")
    if "fp32 ceiling" in best:
        print(f"{fast.precision} model / fp32 model, alone: "
              f"{best['fp32 ceiling'][0] / best['ceiling'][0]:.2f}x faster")
    assert reference is not None and ours is not None
    cosine = float((np.asarray(reference) * np.asarray(ours)).sum(axis=1).min())
    print(f"min cosine to fp32: {cosine:.5f}")


if __name__ == "__main__":
    main()

"""analyze_many against the same photos analysed one at a time.

The embedded default pipeline (clip and catalog experts, consensus, the local
catalog) with ViT-B-32 and random weights, over the sample catalog built in a
temporary directory. The baseline calls ``Engine.analyze`` once per photo;
restyle's ``analyze_many`` encodes a batch of photos in one call and runs
their analyses concurrently. Rounds are interleaved (baseline, then restyle)
and the best of each is kept. Also printed: the model-only floor, the time to
encode the photos one by one against in one batch.

    PYTHONPATH=src python bench/analyze_many.py [--photos 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.encode import photos as synthetic_photos
from restyle import Engine
from restyle.encoders.openclip import OpenClipEncoder

ROOT = Path(__file__).resolve().parent.parent
LISTINGS = ROOT / "examples" / "catalog" / "listings.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="ViT-B-32/random")
    args = parser.parse_args()

    encoder = OpenClipEncoder(args.model, device="cpu")
    encoder.load()
    images = synthetic_photos(args.photos, seed=1)
    with tempfile.TemporaryDirectory() as home:
        engine = Engine(encoder=encoder, catalog=Path(home) / "catalog",
                        load_entrypoints=False)
        engine.build_catalog(LISTINGS, progress=False)
        engine.analyze(images[0])  # warm: taxonomy prompts, index, caches
        print(f"model {args.model} ({encoder.precision}), {args.photos} photos of 800x600, "
              f"{args.rounds} rounds, embedded default pipeline")
        sequential, together, one_by_one, batched = [], [], [], []
        for _ in range(args.rounds):
            start = time.perf_counter()
            for image in images:
                engine.analyze(image)
            sequential.append(time.perf_counter() - start)
            start = time.perf_counter()
            results = engine.analyze_many(images, progress=False)
            together.append(time.perf_counter() - start)
            assert len(results) == len(images)
            start = time.perf_counter()
            for image in images:
                encoder.encode_images([image])
            one_by_one.append(time.perf_counter() - start)
            start = time.perf_counter()
            encoder.encode_images(images)
            batched.append(time.perf_counter() - start)
    seq, many = min(sequential), min(together)
    print(f"{args.photos} x analyze:        {seq:.3f} s")
    print(f"analyze_many:          {many:.3f} s")
    print(f"ratio sequential/analyze_many: {seq / many:.2f}x (target >= 1.5x)")
    print(f"floor, model only: encoding one by one {min(one_by_one):.3f} s, in one batch "
          f"{min(batched):.3f} s ({min(one_by_one) / min(batched):.2f}x)")


if __name__ == "__main__":
    main()

"""A 4-photo item against one photo, on the embedded defaults.

Analyses of the same warm Engine, interleaved, best of the rounds: one
``analyze`` of a 4-photo item whose roles restyle finds, one of the same item
with its roles given (the whole item, a tag, a label, a detail: what a web
form with a field per role, or ``--item ROLE=PATH``, hands over), 4
``analyze`` calls of those photos one by one, and one ``analyze`` of the
first photo alone. Beside them the floors: the unavoidable work of a 4-photo
item whose roles must be found (decode the 4 photos, encode them in one
batch, one catalog search, the price, the thumbnails), and the model alone
encoding one photo and a batch of four.

Target: the 4-photo item at most 1.6x the one-photo analysis.

    PYTHONPATH=src:. python bench/item.py [--listings 10000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.analyze import MAX_COMPS, fill_catalog, fresh, jpeg, timed
from bench.encode import photos as synthetic_photos
from restyle import Catalog, Comp, Engine, Item, Reranker, estimate_price, load_photo
from restyle.encoders.openclip import OpenClipEncoder


def floor(engine: Engine, catalog: Catalog, photos: list[bytes]) -> None:
    """Decode the item's photos, encode them in one batch, one search, price, thumbnails."""
    decoded = [load_photo(p) for p in photos]
    vectors = engine.encoder.encode_images([p.image for p in decoded])
    hits = catalog.search_vector(vectors[0], limit=MAX_COMPS)
    estimate_price([Comp(listing=listing, score=max(score, 0.0), similarity=score)
                    for listing, score in hits])
    for photo in decoded:
        photo.info()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listings", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--model", default="ViT-B-32/random")
    args = parser.parse_args()

    import torch

    torch.manual_seed(0)
    encoder = OpenClipEncoder(args.model, device="cpu")
    encoder.load()
    images = synthetic_photos(4, seed=23)
    photos = [jpeg(img) for img in images]
    with tempfile.TemporaryDirectory() as home:
        folder = Path(home)
        os.environ["RESTYLE_HOME"] = str(folder / "home")
        with Catalog.open(folder / "catalog", encoder, create=True) as catalog:
            fill_catalog(catalog, encoder.encode_images(images[:1]), args.listings, folder)
        engine = Engine(encoder=encoder, catalog=folder / "catalog", load_entrypoints=False,
                        reranker=Reranker(cache=None), max_comps=MAX_COMPS)
        engine.warm_up()
        catalog = engine.catalog
        item = Item(*photos)
        given = Item(*photos, roles=["whole", "tag", "label", "detail"])
        first = engine.analyze(item)
        roles = ", ".join(f"{p.role.value if p.role else '?'}" for p in first.photos)
        print(f"model {args.model} ({encoder.precision}), torch {torch.__version__}, "
              f"{os.cpu_count()} CPUs, {args.listings} listings, 4 photos of 800x600 JPEG; "
              f"roles found: {roles}; {len(first.comps)} comps, "
              f"{len(first.opinions)} opinions")
        decoded = [load_photo(p).image for p in photos]
        work = {
            "item of 4": lambda: (fresh(catalog), engine.analyze(item)),
            "roles given": lambda: (fresh(catalog), engine.analyze(given)),
            "4 one by one": lambda: [(fresh(catalog), engine.analyze(p)) for p in photos],
            "one photo": lambda: (fresh(catalog), engine.analyze(photos[0])),
            "item floor": lambda: floor(engine, fresh(catalog), photos),
            "model, 1 photo": lambda: encoder.encode_images(decoded[:1]),
            "model, batch 4": lambda: encoder.encode_images(decoded),
        }
        for name in work:  # warm every path
            work[name]()
        best = {name: (float("inf"), float("inf")) for name in work}
        for r in range(args.rounds):
            line = []
            for name, run in work.items():
                wall, cpu = timed(run)
                best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
                line.append(f"{name} {wall * 1e3:.0f} ms")
            print(f"  round {r + 1}: " + ", ".join(line)
                  + f" (load average {os.getloadavg()[0]:.2f})")
        for name, (wall, cpu) in best.items():
            print(f"{name:>14}: {wall * 1e3:7.1f} ms ({cpu * 1e3:.1f} CPU ms), best of "
                  f"{args.rounds}")
        one = best["one photo"][0]
        print(f"item of 4, roles found / one photo = {best['item of 4'][0] / one:.2f}x "
              f"(target <= 1.6x); its floor / one photo = {best['item floor'][0] / one:.2f}x; "
              f"item of 4 / its floor = {best['item of 4'][0] / best['item floor'][0]:.2f}x")
        print(f"item of 4, roles given / one photo = {best['roles given'][0] / one:.2f}x "
              f"(target <= 1.6x); 4 one by one / one photo = "
              f"{best['4 one by one'][0] / one:.2f}x")
        print(f"the model: a batch of 4 / one photo = "
              f"{best['model, batch 4'][0] / best['model, 1 photo'][0]:.2f}x; one photo's "
              f"encoding is {best['model, 1 photo'][0] / one:.0%} of its analysis")


if __name__ == "__main__":
    main()

"""Cold start: a new process's ``restyle analyze photo.jpg`` against its floor.

The model is ViT-B-32 with random weights saved once as a local model folder
(config and safetensors, as ``restyle model export`` writes one), so it loads
as a fixed model whose prompt vectors restyle keeps on disk, as the default
model's are; the sample catalog (examples/catalog) is built with it and one
analysis is run first, so the disk caches hold what a user's would.

- floor: a new process that imports torch and open_clip, loads the same model
  and encodes the photo, and nothing else. It loads the weights the fastest
  way known (the architecture built on the meta device, the file mapped into
  it: what restyle does); open_clip's own loading (a random initialisation,
  then a copy of the file) is timed beside it.
- restyle: ``python -m restyle analyze examples/photo.jpg --catalog DIR``.

Rounds alternate the sides and the best of each is kept (wall-clock seconds
of the whole process, peak resident memory beside it). Then one process
times the parts of restyle's cold start in turn: its own imports, torch's
and open_clip's, the Engine (plugin discovery), the catalog's opening, the
model, the prompt vectors (read from disk), the analysis itself.

    PYTHONPATH=src:. python bench/cold_start.py [--rounds 3] [--precision int8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PHOTO = ROOT / "examples" / "photo.jpg"
LISTINGS = ROOT / "examples" / "catalog" / "listings.jsonl"

# A floor's model: the local model folder ``folder`` loaded as restyle loads it
# (``how == "lean"``: built on the meta device, its weights mapped from the
# file) or by open_clip's own path; gives ``model`` and ``pre``.
LOAD_MODEL = """
if how == "lean":
    from safetensors import safe_open
    model, _, pre = open_clip.create_model_and_transforms(
        "local-dir:" + folder, load_weights=False, device="meta")
    with safe_open(folder + "/open_clip_model.safetensors", framework="pt") as f:
        model.load_state_dict({k: f.get_tensor(k) for k in f.keys()}, assign=True)
    model.attn_mask = torch.full((77, 77), float("-inf")).triu_(1)
else:
    model, _, pre = open_clip.create_model_and_transforms("local-dir:" + folder)
"""

FLOOR = """
import sys, torch, open_clip
from PIL import Image
folder, how = sys.argv[1], sys.argv[2]
""" + LOAD_MODEL + """
with torch.inference_mode():
    model.eval().encode_image(pre(Image.open(sys.argv[3]).convert("RGB")).unsqueeze(0))
"""

PARTS = """
import json, sys, time
marks = [("start", time.perf_counter())]
def mark(name): marks.append((name, time.perf_counter()))
import restyle, restyle.cli
mark("restyle's imports")
import torch, open_clip
mark("torch and open_clip imports")
from restyle import Engine
engine = Engine(catalog=sys.argv[1])
mark("Engine: plugin discovery")
engine.encoder.load()
mark("model load")
engine.catalog
mark("catalog open")
engine.warm_up()
mark("prompt vectors, warm-up")
engine.analyze(sys.argv[2])
mark("the analysis (decode, encode, search, re-rank, price)")
print(json.dumps([(name, b - a) for (_, a), (name, b) in zip(marks, marks[1:])]))
"""


def save_model(folder: Path) -> None:
    """ViT-B-32 with random weights (seed 0) as a local model folder."""
    import open_clip
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None)
    folder.mkdir(parents=True)
    config = {"model_cfg": open_clip.get_model_config("ViT-B-32"), "preprocess_cfg": {}}
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(folder / "open_clip_model.safetensors"))


def run(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Seconds, peak resident MB and stdout of a new process running ``argv``."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own peak
        seconds = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{argv[:4]} failed:\n{err.read()[-2000:]}")
        out.seek(0)
        return seconds, usage.ru_maxrss / 1024, out.read()


def load() -> str:
    return f"load {os.getloadavg()[0]:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--precision", default=None, help="RESTYLE_PRECISION for restyle")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="restyle-cold-") as tmp:
        work = Path(tmp)
        model = work / "vit-b-32"
        save_model(model)
        env = {**os.environ, "RESTYLE_HOME": str(work / "home"), "RESTYLE_OFFLINE": "1",
               "RESTYLE_MODEL": f"local-dir:{model}",
               "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
        if args.precision:
            env["RESTYLE_PRECISION"] = args.precision
        catalog = work / "catalog"
        python = sys.executable
        restyle = [python, "-m", "restyle", "analyze", str(PHOTO), "--catalog", str(catalog)]
        run([python, "-m", "restyle", "catalog", "build", str(LISTINGS), "--catalog",
             str(catalog)], env)
        run(restyle, env)  # the prompt vectors kept on disk, the files in the page cache
        sides = {
            "floor (meta device, mapped file)": [python, "-c", FLOOR, str(model), "lean",
                                                 str(PHOTO)],
            "floor, open_clip's own loading": [python, "-c", FLOOR, str(model), "open_clip",
                                               str(PHOTO)],
            "restyle analyze": restyle,
        }
        best: dict[str, tuple[float, float]] = {}
        for round_ in range(args.rounds):
            for name, argv in sides.items():
                seconds, peak, _ = run(argv, env)
                old = best.get(name, (float("inf"), peak))
                best[name] = (min(old[0], seconds), peak if seconds < old[0] else old[1])
                print(f"round {round_ + 1}  {name:34s} {seconds:6.2f} s  "
                      f"peak {peak:6.0f} MB  {load()}", flush=True)
        floor = best["floor (meta device, mapped file)"][0]
        print(f"\nbest of {args.rounds} ({load()}):")
        for name, (seconds, peak) in best.items():
            print(f"  {name:34s} {seconds:6.2f} s  {seconds / floor:5.2f}x the floor  "
                  f"peak {peak:6.0f} MB")
        print(f"\nrestyle analyze, cold: {best['restyle analyze'][0] / floor:.2f}x its floor "
              "(target <= 1.25x)")
        _, _, out = run([python, "-c", PARTS, str(catalog), str(PHOTO)], env)
        parts = json.loads(out.strip().splitlines()[-1])
        print(f"\nthe parts of restyle's cold start, one process ({load()}):")
        for name, seconds in parts:
            print(f"  {name:55s} {seconds:6.2f} s")
        print(f"  {'total':55s} {sum(s for _, s in parts):6.2f} s")


if __name__ == "__main__":
    main()

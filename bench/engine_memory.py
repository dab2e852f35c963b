"""A warm Engine's memory against its floor, steady and at its peak while loading.

The model is ViT-B-32 with random weights saved once as a local model folder
(config and safetensors, as ``restyle model export`` writes one, see
bench/cold_start.py), the catalog the sample catalog built with it. Each side
runs in a new process, which reports its resident memory once warm and its
peak (VmHWM: loading included):

- floor: torch, open_clip and faiss imported, the model loaded as restyle
  loads it (built on the meta device, the weights file mapped into it; for
  int8 quantized by restyle's own function), a photo and a text encoded (so
  every weight is in memory), and the catalog's index read. Nothing else.
- open_clip's own loading: the same, but the model loaded by
  ``open_clip.create_model_and_transforms`` (a random initialisation, then the
  whole file read and copied in): what restyle did before.
- restyle: ``Engine(catalog=...)``, ``warm_up()`` and one ``analyze`` (its
  peak includes the analysis: the photo, its comps' pictures and the batch
  that encodes them), measured at rest a moment later.

The target: restyle at most 1.15x the floor, steady and at its peak.

    PYTHONPATH=src:. python bench/engine_memory.py [--precision fp32|int8]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.cold_start import LISTINGS, LOAD_MODEL, PHOTO, ROOT, save_model

REPORT = """
def report(**extra):
    status = dict(line.split(":", 1) for line in open("/proc/self/status"))
    mb = lambda key: int(status[key].split()[0]) / 1024
    print(json.dumps({"rss": mb("VmRSS"), "peak": mb("VmHWM"), **extra}))
"""

FLOOR = """
import importlib.util, json, sys, torch, open_clip, faiss
from PIL import Image
folder, how, precision, index, photo, quantize_py = sys.argv[1:7]
""" + LOAD_MODEL + """
model.eval()
if precision == "int8":
    spec = importlib.util.spec_from_file_location("quantize", quantize_py)
    quantize = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quantize)
    quantize.quantize_int8(model)
    for tensor in (*model.parameters(), *model.buffers()):
        tensor.data = tensor.data.clone()
    import gc; gc.collect()
with torch.inference_mode():
    model.encode_image(pre(Image.open(photo).convert("RGB")).unsqueeze(0))
    model.encode_text(open_clip.get_tokenizer("ViT-B-32")(["a red leather handbag"]))
kept = faiss.read_index(index)
""" + REPORT + "report()"

RESTYLE = """
import json, sys, time
from restyle import Engine
engine = Engine(catalog=sys.argv[1])
engine.warm_up()
analysis = engine.analyze(sys.argv[2])
time.sleep(1.5)  # at rest: a web worker between requests
""" + REPORT + "report(comps=len(analysis.comps))"


def measure(argv: list[str], env: dict[str, str]) -> dict[str, float]:
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{argv[:3]} failed:\n{done.stderr[-2000:]}")
    result: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="fp32", choices=("fp32", "int8"))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="restyle-memory-") as tmp:
        work = Path(tmp)
        model = work / "vit-b-32"
        save_model(model)
        env = {**os.environ, "RESTYLE_HOME": str(work / "home"), "RESTYLE_OFFLINE": "1",
               "RESTYLE_MODEL": f"local-dir:{model}", "RESTYLE_PRECISION": args.precision,
               "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
        catalog = work / "catalog"
        python = sys.executable
        subprocess.run([python, "-m", "restyle", "catalog", "build", str(LISTINGS),
                        "--catalog", str(catalog)], env=env, check=True, capture_output=True)
        quantize_py = ROOT / "src" / "restyle" / "encoders" / "openclip" / "quantize.py"
        floor_args = [str(catalog / "vectors.faiss"), str(PHOTO), str(quantize_py)]
        sides = {
            "floor": [python, "-c", FLOOR, str(model), "lean", args.precision, *floor_args],
            "open_clip's own loading": [python, "-c", FLOOR, str(model), "open_clip",
                                        args.precision, *floor_args],
            "restyle, a warm Engine": [python, "-c", RESTYLE, str(catalog), str(PHOTO)],
        }
        best: dict[str, dict[str, float]] = {}
        for _ in range(args.rounds):  # a process's memory barely moves: two rounds say so
            for name, argv in sides.items():
                got = measure(argv, env)
                kept = best.setdefault(name, got)
                kept["rss"], kept["peak"] = min(kept["rss"], got["rss"]), min(kept["peak"],
                                                                               got["peak"])
        floor = best["floor"]
        print(f"ViT-B-32 ({args.precision}), the sample catalog; resident MB, best of "
              f"{args.rounds} (load {os.getloadavg()[0]:.2f}):")
        for name, got in best.items():
            print(f"  {name:26s} warm {got['rss']:7.0f} MB ({got['rss'] / floor['rss']:.2f}x)"
                  f"   peak {got['peak']:7.0f} MB "
                  f"({got['peak'] / floor['peak']:.2f}x)")
        print("target: restyle at most 1.15x the floor, warm and at its peak")


if __name__ == "__main__":
    main()

"""``restyle model``: list the published models and which are cached, fetch
one into the cache, export one to a folder for a machine with no network
(``RESTYLE_MODEL=local-dir:DIR`` there), verify one loads from this machine
alone."""

from __future__ import annotations

import argparse
import json
import sys

from restyle import _settings
from restyle.encoders.openclip.models import (
    export_model,
    fetch_model,
    known_models,
    verify_model,
)

__all__ = ["model_command"]


def model_command(args: argparse.Namespace) -> int:
    actions = {"list": _list, "fetch": _fetch, "export": _export, "verify": _verify}
    return actions[args.model_command](args)


def _spec(args: argparse.Namespace) -> str:
    return str(args.spec or _settings.env_str("RESTYLE_MODEL") or _settings.DEFAULT_MODEL)


def _list(args: argparse.Namespace) -> int:
    models = [m for m in known_models() if m.cached or not args.cached]
    if args.json:
        sys.stdout.write(json.dumps([m.to_dict() for m in models], indent=2) + "\n")
        return 0
    width = max((len(m.spec) for m in models), default=5)
    out = sys.stdout.write
    out(f"{'model':<{width}}  cached  from\n")
    for m in models:
        mark = " (default)" if m.default else ""
        out(f"{m.spec:<{width}}  {'yes' if m.cached else '-':<6}  "
            f"{m.repo or 'open_clip URL'}{mark}\n")
    cached = sum(m.cached for m in models)
    out(f"\n{cached} of {len(models)} cached; 'restyle model fetch MODEL' caches one, "
        "'restyle model export MODEL DIR' writes one for an offline machine\n")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    spec = _spec(args)
    where = fetch_model(spec)
    sys.stdout.write(f"{spec}: cached at {where}\n")
    return 0


def _export(args: argparse.Namespace) -> int:
    spec = _spec(args)
    folder = export_model(spec, args.folder)
    sys.stdout.write(f"{spec}: written to {folder}\n"
                     f"on the offline machine: RESTYLE_MODEL=local-dir:{folder} "
                     f"(then 'restyle model verify local-dir:{folder}')\n")
    return 0


def _verify(args: argparse.Namespace) -> int:
    spec = _spec(args)
    verified = verify_model(spec)
    if args.json:
        sys.stdout.write(json.dumps({"spec": spec, **verified.to_dict()}) + "\n")
    else:
        sys.stdout.write(f"{spec}: ok, model id {verified.model_id}, {verified.dim}-dimensional "
                         f"vectors, loaded and used in {verified.seconds:.1f} s\n")
    return 0

"""``restyle backtest`` and ``restyle replay``: the estimates measured against
real sales, and a recorded analysis re-run under other rules."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from restyle._errors import ConfigurationError
from restyle._evaluation.backtest import backtest
from restyle._evaluation.recording import load_recording
from restyle.cli.common import make_engine, pricing_rules, split_names

__all__ = ["backtest_command", "replay_command"]


def backtest_command(args: argparse.Namespace) -> int:
    engine = make_engine(args, experts=split_names(args.experts), synthesizer=args.synthesizer,
                     marketplaces=split_names(args.marketplaces), **pricing_rules(args))
    # The model and the prompt vectors before the first photo, outside its deadline:
    # one clear error if the model cannot load, and a first answer as full as the next.
    engine.warm_up()
    if args.limit is not None and args.limit < 1:
        raise ConfigurationError("--limit must be at least 1")
    report = backtest(engine, args.dataset, limit=args.limit, progress=None,
                      images_root=args.images_root)
    if args.html:
        Path(args.html).write_text(report.html(), encoding="utf-8")
    if args.json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(report.table())
    if args.html:
        sys.stderr.write(f"HTML report written to {args.html}\n")
    return 0


def replay_command(args: argparse.Namespace) -> int:
    recording = load_recording(args.recording)
    # Only what the options change: the pricing variables would make a replay
    # differ from its recording unasked.
    replay = recording.replay(
        synthesizer=args.synthesizer, minimum_comps=args.minimum_comps,
        half_life_days=args.half_life_days, cutoff=False if args.no_cutoff else None,
        load_entrypoints=not args.no_plugins,
    )
    if args.json:
        sys.stdout.write(json.dumps(replay.to_dict(), indent=2) + "\n")
        return 0
    out = sys.stdout.write
    changes = ", ".join(f"{k}={v}" for k, v in replay.changes.items()) or "none"
    out(f"replay of {args.recording} (changes: {changes})\n")
    if replay.same:
        out("no differences: the replay reproduces the recording\n")
        return 0
    width = max(len(d.what) for d in replay.differences)
    out(f"  {'':<{width}}  recorded -> replayed\n")
    for d in replay.differences:
        out(f"  {d.what:<{width}}  {d.before or '-'} -> {d.after or '-'}\n")
    return 0

"""``restyle logs``: the history of analyses, listed, searched, one shown, all
exported as JSON Lines; and the history each ``analyze`` run writes to."""

from __future__ import annotations

import argparse
import json
import sys
from contextlib import suppress

from restyle import _settings
from restyle._display import degradations
from restyle._errors import ConfigurationError
from restyle._history import History, HistoryEntry
from restyle._types import Analysis
from restyle.cli.summary import summary_text

__all__ = ["AnalysisLog", "logs_command"]

#: The variable that keeps every run out of the history.
NO_LOG_VARIABLE = "RESTYLE_NO_LOG"


class AnalysisLog:
    """Where ``analyze`` logs each photo's result: the history, unless
    ``--no-log`` or ``$RESTYLE_NO_LOG`` say not to. A history that cannot be
    written is one warning, and the analyses go on unlogged."""

    def __init__(self, args: argparse.Namespace) -> None:
        off = getattr(args, "no_log", False) or _settings.env_flag(NO_LOG_VARIABLE)
        self._history: History | None = None if off else History()

    def add(self, photo: str, result: Analysis | str) -> None:
        if self._history is None:
            return
        try:
            self._history.add(photo, result, degraded=isinstance(result, Analysis)
                              and bool(degradations(result)))
        except Exception as exc:  # the history is a convenience: never fail an analysis for it
            sys.stderr.write(f"restyle: warning: not logged to the history at "
                             f"{self._history.path}: {exc}\n")
            self._history = None


def logs_command(args: argparse.Namespace) -> int:
    history = History()
    action = args.logs_command or "list"
    if action == "path":
        sys.stdout.write(f"{history.path}\n")
        return 0
    if action == "show":
        entry = history.get(args.id)
        if entry is None:
            raise ConfigurationError(f"no analysis {args.id} in the history at {history.path}")
        if args.json:
            sys.stdout.write(json.dumps(entry.to_dict(), indent=2) + "\n")
        else:
            sys.stdout.write(_shown(entry))
        return 0
    if action == "export":
        for entry in history.entries(limit=None, oldest_first=True):
            sys.stdout.write(json.dumps(entry.to_dict()) + "\n")
        return 0
    entries = history.entries(text=args.query, brand=args.brand, product=args.product,
                              limit=args.count or None)
    if args.json:
        for entry in entries:
            sys.stdout.write(json.dumps(entry.to_dict()) + "\n")
        return 0
    sys.stdout.write(_listed(entries))
    return 0


def _listed(entries: list[HistoryEntry]) -> str:
    if not entries:
        return "no analyses logged (yet)\n"
    lines = [f"{'id':>5}  {'when (UTC)':<19}  {'brand':<14}  {'product':<24}  "
             f"{'price':<14}  photo"]
    for e in entries:
        price = f"{e.price} {e.currency}" if e.price else (
            "failed" if e.status == "failed" else "not enough data")
        lines.append(f"{e.id:>5}  {e.created_at[:19].replace('T', ' '):<19}  "
                     f"{(e.brand or '-')[:14]:<14}  {(e.product or '-')[:24]:<24}  "
                     f"{price[:14]:<14}  {e.photo}")
    return "\n".join(lines) + "\n"


def _shown(entry: HistoryEntry) -> str:
    head = f"#{entry.id} {entry.created_at} {entry.photo}\n"
    if entry.analysis is None or entry.error:
        return head + f"failed: {entry.error}\n"
    with suppress(Exception):  # an entry a newer restyle wrote may not read back
        return head + summary_text(Analysis.from_dict(entry.analysis), 10)
    return head + json.dumps(entry.analysis, indent=2) + "\n"

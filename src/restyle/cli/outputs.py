"""Where ``restyle analyze`` sends each photo's result, as it comes: stdout (a
summary, a table line or a JSON line), the CSV, the HTML report, the history,
and the tally that ends a run over many photos.

Each output is a function of one photo's name and its Analysis (or why it
failed), so a run over items of several photos can reuse them item by item.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import TextIO

from restyle._display import report_html, report_row_html
from restyle._types import Analysis
from restyle.cli.logs import AnalysisLog
from restyle.cli.summary import summary_text
from restyle.cli.table import CsvRows, RunTally, table_header, table_line

__all__ = ["SUMMARY_COMPS", "RunOutputs", "with_top", "write_through_bar"]

#: Comps the summary lists unless --top says otherwise.
SUMMARY_COMPS = 10


def with_top(analysis: Analysis, top: int | None) -> Analysis:
    return analysis if top is None else dataclasses.replace(analysis, comps=analysis.comps[:top])


def write_through_bar(stream: TextIO, text: str) -> None:
    """Write ``text`` and flush, around the progress bar if one is drawn: each
    photo's result shows (or reaches the pipe) as soon as it is known."""
    from tqdm.std import tqdm

    with tqdm.external_write_mode(file=stream):
        stream.write(text)
        stream.flush()


class RunOutputs:
    """The outputs of a run over many photos (``single`` False) or of one photo."""

    def __init__(self, args: argparse.Namespace, *, single: bool) -> None:
        self._args = args
        self._single = single
        self._format = args.format or ("summary" if single else "table")
        self._top = SUMMARY_COMPS if args.top is None else int(args.top)
        self._log = AnalysisLog(args)
        self._files = ExitStack()
        self._csv: CsvRows | None = None
        if args.csv:
            stream = sys.stdout if args.csv == "-" else self._files.enter_context(
                Path(args.csv).open("w", encoding="utf-8", newline=""))  # noqa: SIM115 - closed by finish
            self._csv = CsvRows(stream)
        self._rows: list[str] | None = [] if args.html else None
        self.tally = RunTally()
        self._shown = 0

    def add(self, name: str, result: Analysis | str) -> None:
        """One photo's result, to every output at once."""
        self._stdout(name, result)
        if isinstance(result, str):
            write_through_bar(sys.stderr, f"restyle: error: {name}: {result}\n")
        if self._csv is not None:
            self._csv.add(name, result)
        if self._rows is not None:
            self._rows.append(report_row_html(name, result))
        self._log.add(name, result)
        self.tally.add(name, result)

    def _stdout(self, name: str, result: Analysis | str) -> None:
        args = self._args
        if args.csv == "-":
            return
        if args.json:
            if self._single and isinstance(result, Analysis):
                text = with_top(result, args.top).to_json(indent=2) + "\n"
            else:
                line = ({"photo": name, "analysis": with_top(result, args.top).to_dict()}
                        if isinstance(result, Analysis) else {"photo": name, "error": result})
                text = json.dumps(line) + "\n"
        elif self._format == "table":
            text = ("" if self._shown else table_header()) + table_line(name, result)
        elif isinstance(result, Analysis):
            head = "" if self._single else (
                ("\n" if self._shown else "") + f"==> {name} <==\n")
            text = head + summary_text(result, self._top)
        else:
            return
        self._shown += 1
        write_through_bar(sys.stdout, text)

    def finish(self, *, total: int, done: int, interrupted: bool = False) -> None:
        """End the run: its summary (a run over many photos), the HTML report."""
        self._files.close()
        if self._rows is not None:
            intro = (f"{done} of {total} photos" + (" (interrupted)" if interrupted else "")
                     + f": {self.tally.analysed} analysed, {len(self.tally.failed)} failed, "
                     f"{len(self.tally.degraded)} degraded")
            Path(self._args.html).write_text(
                report_html(self._rows, title="restyle analysis", intro=intro),
                encoding="utf-8")
        if not self._single:
            text = self.tally.text(interrupted_at=done if interrupted else None, total=total)
            quiet = self._args.json or self._args.csv == "-"
            write_through_bar(sys.stderr if quiet else sys.stdout,
                              ("" if quiet else "\n") + text)
        if self._rows is not None:
            sys.stderr.write(f"HTML report written to {self._args.html}\n")

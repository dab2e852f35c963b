"""A run over many photos, compactly: one table line and one CSV row per photo,
and the summary that ends the run (how many were analysed, failed, degraded,
the failures listed again)."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from typing import TextIO

from restyle._display import degradations
from restyle._types import Analysis

__all__ = ["CSV_COLUMNS", "CsvRows", "RunTally", "table_header", "table_line"]

#: The CSV's columns, one row per photo.
CSV_COLUMNS = ("photo", "status", "brand", "product", "category", "confidence", "price",
               "currency", "low", "high", "basis", "comps_used", "problem")
#: The table's columns and their widths; longer text is cut with an ellipsis.
_TABLE = (("photo", 30), ("brand", 14), ("product", 26), ("price", 16), ("range", 15),
          ("basis", 6))


def _cut(text: str, width: int, *, keep_end: bool = False) -> str:
    if len(text) <= width:
        return text.ljust(width)
    return "…" + text[-(width - 1):] if keep_end else text[:width - 1] + "…"


def table_header() -> str:
    return " ".join(_cut(name, width) for name, width in _TABLE).rstrip() + "\n"


def table_line(photo: str, result: Analysis | str) -> str:
    """One photo's line: its analysis, or ``failed`` and why (in the summary)."""
    if isinstance(result, str):
        cells = [photo, "failed", "", "", "", ""]
    else:
        ident, price = result.identification, result.price
        cells = [photo, ident.brand or "-", ident.product_name or ident.category or "-",
                 f"{price.estimate} {price.currency}" if price.ok else "not enough data",
                 f"{price.low}-{price.high}" if price.ok else "",
                 price.basis.value if price.ok and price.basis is not None else ""]
    return " ".join(_cut(cell, width, keep_end=column == 0)
                    for column, (cell, (_, width)) in enumerate(zip(cells, _TABLE, strict=True))
                    ).rstrip() + "\n"


def _csv_row(photo: str, result: Analysis | str) -> list[object]:
    if isinstance(result, str):
        return [photo, "failed", *[""] * 10, result]
    ident, price = result.identification, result.price
    problems = degradations(result)
    return [photo, "degraded" if problems else "ok", ident.brand or "",
            ident.product_name or "", ident.category or "", f"{ident.confidence:.2f}",
            price.estimate if price.ok else "", price.currency or "",
            price.low if price.ok else "", price.high if price.ok else "",
            price.basis.value if price.ok and price.basis is not None else "",
            price.comps_used, "; ".join(problems)]


class CsvRows:
    """A CSV of the run, a row written and flushed as each photo is done."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._writer = csv.writer(stream)
        self._writer.writerow(CSV_COLUMNS)
        stream.flush()

    def add(self, photo: str, result: Analysis | str) -> None:
        self._writer.writerow(_csv_row(photo, result))
        self._stream.flush()


@dataclass
class RunTally:
    """What a run over many photos came to, told at its end."""

    analysed: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    degraded: list[tuple[str, str]] = field(default_factory=list)

    def add(self, photo: str, result: Analysis | str) -> None:
        if isinstance(result, str):
            self.failed.append((photo, result))
            return
        self.analysed += 1
        problems = degradations(result)
        if problems:
            self.degraded.append((photo, "; ".join(problems)))

    def text(self, *, interrupted_at: int | None = None, total: int = 0) -> str:
        head = (f"interrupted after {interrupted_at} of {total} photos: "
                if interrupted_at is not None else "")
        lines = [f"{head}{self.analysed} analysed ({len(self.degraded)} degraded), "
                 f"{len(self.failed)} failed"]
        if self.failed:
            lines.append("failed:")
            lines += [f"  {photo}: {why}" for photo, why in self.failed]
        if self.degraded:
            lines.append("degraded:")
            lines += [f"  {photo}: {why}" for photo, why in self.degraded]
        return "\n".join(lines) + "\n"

"""Reading listings files: the rows of a JSONL, CSV or Parquet file, one at a
time and within the limits whatever the file holds, and the slices a file is
cut into to be read in parallel."""

from __future__ import annotations

import csv
import json
import os
import stat
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

from restyle._errors import CatalogError
from restyle._ingestion.rejections import clip, preview
from restyle._ingestion.rows import ListingLimits, SourcePart, SourceRow

__all__ = ["COLUMNS", "COUNTED_BYTES", "FORMATS", "MIN_ROW_BYTES", "count_rows", "draw_rows",
           "estimate_rows", "listings_format", "most_rows", "read_listings", "split_listings"]

#: File suffixes and the format each is read as.
FORMATS: Mapping[str, str] = MappingProxyType({
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv",
    ".parquet": "parquet", ".pq": "parquet",
})

#: The columns a listing row may have; the second name of a pair is an alias.
COLUMNS = ("id", "listing_id", "title", "brand", "category", "condition", "price", "currency",
           "url", "image", "image_path", "image_url", "sold")
# Parquet is read this many rows at a time (a record batch).
_PARQUET_BATCH = 256
_SKIP_CHUNK = 1 << 16
_UTF8_BOM = b"\xef\xbb\xbf"



def read_listings(source: str | Path, *, limits: ListingLimits | None = None,
                  part: SourcePart | None = None) -> Iterator[SourceRow]:
    """The rows of a JSONL, CSV or Parquet file, one at a time (only those of
    ``part``, one of :func:`split_listings`'s slices, when given).

    A row that cannot be read (too long, not UTF-8, not JSON, malformed CSV)
    comes back with its ``error`` set; the rows after it are still read. Only
    a file that cannot be read at all is a :class:`CatalogError`.
    """
    limits = limits or ListingLimits()
    part = part or SourcePart()
    path = Path(source)
    kind = listings_format(path)
    if kind == "parquet":
        yield from _parquet_rows(path, limits, part)
        return
    with _open_listings(path) as fh:
        if kind == "jsonl":
            fh.seek(part.start)
            yield from _jsonl_rows(fh, limits, first=part.first_row, stop=part.stop)
        else:
            yield from _csv_rows(fh, limits, path)


def split_listings(source: str | Path, *, part_bytes: int = 64 << 20) -> list[SourcePart]:
    """Cut a listings file into slices of about ``part_bytes`` that
    :func:`read_listings` reads independently (in parallel, on other machines)
    with the row numbers of a whole-file read.

    JSONL is cut after a newline (one pass over the file counts the lines
    before each cut); Parquet between row groups; CSV not at all.
    """
    if part_bytes < 1:
        raise ValueError("part_bytes must be positive")
    path = Path(source)
    kind = listings_format(path)
    if kind == "parquet":
        return _parquet_parts(path, part_bytes)
    with _open_listings(path) as fh:
        if kind == "csv":
            return [SourcePart()]
        return _jsonl_parts(fh, part_bytes)


def _open_listings(path: Path) -> IO[bytes]:
    """A JSONL or CSV listings file opened for reading, or a CatalogError that
    says why not."""
    try:
        fh = path.open("rb")
    except FileNotFoundError as exc:
        raise CatalogError(f"listings file not found: {path}") from exc
    except OSError as exc:
        raise CatalogError(f"cannot read listings file {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
        fh.close()
        raise CatalogError(f"listings file is not a regular file: {path}")
    return fh


def _jsonl_parts(fh: IO[bytes], part_bytes: int) -> list[SourcePart]:
    parts: list[SourcePart] = []
    start, first_row = 0, 1
    position = lines = 0  # bytes read before this chunk, and the newlines in them
    while chunk := fh.read(1 << 20):
        begin = 0  # where this chunk's newlines are not yet counted
        while True:
            # The next cut is after the first newline at least part_bytes past the last one.
            found = chunk.find(b"\n", max(begin, start + part_bytes - position))
            if found < 0:
                break
            lines += chunk.count(b"\n", begin, found + 1)
            begin = found + 1
            parts.append(SourcePart(start=start, stop=position + begin, first_row=first_row))
            start, first_row = position + begin, lines + 1
        lines += chunk.count(b"\n", begin)
        position += len(chunk)
    if start < position or not parts:
        parts.append(SourcePart(start=start, stop=None, first_row=first_row))
    return parts


#: Largest JSONL or CSV file whose rows are counted before a build (about a
#: second's read); a larger one's build shows no total.
COUNTED_BYTES = 1 << 30


def count_rows(source: str | Path) -> int | None:
    """About how many rows ``source`` holds, cheaply, for a progress bar's total
    and its time left: a Parquet file's metadata; a JSONL or CSV file's lines
    (less CSV's header) when it is at most :data:`COUNTED_BYTES`; else None."""
    path = Path(source)
    try:
        kind = listings_format(path)
        if kind == "parquet":
            return int(_open_parquet(path).metadata.num_rows)
        with _open_listings(path) as fh:
            if os.fstat(fh.fileno()).st_size > COUNTED_BYTES:
                return None
            lines = last = 0
            while chunk := fh.read(1 << 20):
                lines += chunk.count(b"\n")
                last = chunk[-1]
            lines += last not in (0, 0x0A)  # a last line with no newline
    except CatalogError:
        return None
    return max(0, lines - (kind == "csv"))


#: The fewest bytes a row that can be stored takes: a CSV line ``a,b,1,c`` and
#: its newline (id, title, price and image are needed; the last line may end
#: without its newline).
MIN_ROW_BYTES = 8


def most_rows(source: str | Path) -> int | None:
    """The most rows ``source`` could hold that a build stores, from its size
    alone (nothing read): a JSONL or CSV file's bytes over
    :data:`MIN_ROW_BYTES`; None for a Parquet file (compressed: its size bounds
    nothing) or a file that cannot be looked at."""
    path = Path(source)
    try:
        if listings_format(path) == "parquet":
            return None
        return (path.stat().st_size + 1) // MIN_ROW_BYTES
    except (CatalogError, OSError):
        return None


def estimate_rows(source: str | Path, *,
                  counted: Callable[[], int | None] | None = None) -> int | None:
    """How many rows ``source`` holds: counted (:func:`count_rows`, or
    ``counted`` when the caller keeps the count) or, for a JSONL or CSV file
    too large to count, its size over the mean length of lines drawn across
    it; None when it cannot be read."""
    rows = counted() if counted is not None else count_rows(source)
    if rows is not None:
        return rows
    path = Path(source)
    try:
        if listings_format(path) == "parquet":
            return None
        with _open_listings(path) as fh:
            size = os.fstat(fh.fileno()).st_size
            start = len(fh.readline()) if listings_format(path) == "csv" else 0
            lines = _drawn_lines(fh, start, size, _ESTIMATE_LINES)
    except CatalogError:
        return None
    if not lines:
        return 0
    return round((size - start) * len(lines) / sum(len(line) for line in lines))


def draw_rows(source: str | Path, target: Path, count: int, *, after: float = 0.0) -> int:
    """Write to ``target`` up to ``count`` rows of ``source`` drawn evenly over
    the part of it past the fraction ``after`` (of its bytes, or of a Parquet
    file's rows), without reading the rest: JSONL and CSV (its header first)
    as they are, Parquet's rows as JSONL; how many were written. ``target``'s
    suffix must be the format written. A row is drawn once however many draws
    land in it, so a small file gives each of its rows."""
    path = Path(source)
    after = min(1.0, max(0.0, after))
    if listings_format(path) == "parquet":
        rows = _drawn_parquet_rows(path, count, after)
        target.write_text("".join(json.dumps(row, default=str) + "\n" for row in rows),
                          encoding="utf-8")
        return len(rows)
    with _open_listings(path) as fh:
        size = os.fstat(fh.fileno()).st_size
        header = fh.readline() if listings_format(path) == "csv" else b""
        lines = _drawn_lines(fh, len(header), size, count, after=after)
    with target.open("wb") as out:
        out.write(header if header.endswith(b"\n") or not header else header + b"\n")
        for line in lines:
            out.write(line if line.endswith(b"\n") else line + b"\n")
    return len(lines)


#: Lines drawn to estimate the rows of a file too large to count.
_ESTIMATE_LINES = 2_000


def _drawn_lines(fh: IO[bytes], start: int, size: int, count: int, *,
                 after: float = 0.0) -> list[bytes]:
    """Up to ``count`` distinct non-blank lines, each the first to begin at or
    after one of ``count`` offsets spread evenly over ``[low, size)``, where
    ``low`` lies the fraction ``after`` of the way from ``start`` (the first
    line's offset) to the end."""
    low = start + int(after * (size - start))
    if count < 1 or low >= size:
        return []
    longest = ListingLimits().row_bytes
    lines: list[bytes] = []
    seen: set[int] = set()
    for offset in range(low, size, max(1, -(-(size - low) // count))):
        if offset > start:
            # Past the line holding the byte before: the next begins here or later.
            fh.seek(offset - 1)
            while (rest := fh.readline(_SKIP_CHUNK)) and not rest.endswith(b"\n"):
                pass
        else:
            fh.seek(start)
        begin = fh.tell()
        line = fh.readline(longest + 1)  # a longer row would be refused: not drawn
        if begin not in seen and line.strip() and len(line) <= longest:
            seen.add(begin)
            lines.append(line)
    return lines[:count]


def _drawn_parquet_rows(path: Path, count: int, after: float) -> list[dict[str, Any]]:
    """Up to ``count`` rows spread evenly over a Parquet file's rows past the
    fraction ``after``, reading only the row groups that hold them."""
    parquet = _open_parquet(path)
    import pyarrow as pa

    metadata = parquet.metadata
    total = int(metadata.num_rows)
    low = int(after * total)
    if count < 1 or low >= total:
        return []
    wanted = sorted({low + (i * (total - low)) // count for i in range(min(count, total - low))})
    columns = [name for name in parquet.schema_arrow.names if name in COLUMNS]
    rows: list[dict[str, Any]] = []
    first = 0
    try:
        for group in range(metadata.num_row_groups):
            last = first + metadata.row_group(group).num_rows
            inside = [i - first for i in wanted if first <= i < last]
            if inside:
                table = parquet.read_row_group(group, columns=columns)
                rows += table.take(pa.array(inside)).to_pylist()
            first = last
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise CatalogError(
            f"listings file {path.name} cannot be read as Parquet: {clip(str(exc), 200)}"
        ) from exc
    return rows


def listings_format(path: Path) -> str:
    """``"jsonl"``, ``"csv"`` or ``"parquet"`` by the file's suffix, or a CatalogError."""
    kind = FORMATS.get(path.suffix.lower())
    if kind is None:
        raise CatalogError(f"listings file must be .jsonl, .csv or .parquet, got {path.name}")
    return kind


def _lines(fh: IO[bytes], limit: int, *, first: int = 1,
           stop: int | None = None) -> Iterator[tuple[int, bytes | None]]:
    """Physical lines with their numbers (from ``first``), up to byte ``stop``;
    None for a line over ``limit`` bytes, which is skipped to its end without
    being held in memory."""
    number = first - 1
    while True:
        if stop is not None and fh.tell() >= stop:
            return
        line = fh.readline(limit + 1)
        if not line:
            return
        number += 1
        if number == 1 and line.startswith(_UTF8_BOM):
            line = line[len(_UTF8_BOM):]
        if len(line) > limit and not line.endswith(b"\n"):
            while True:
                chunk = fh.readline(_SKIP_CHUNK)
                if not chunk or chunk.endswith(b"\n"):
                    break
            yield number, None
            continue
        yield number, line


def _too_long(limits: ListingLimits) -> str:
    return f"row is longer than the limit of {limits.row_bytes} bytes"


def _not_utf8(exc: UnicodeDecodeError) -> str:
    return f"row is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"


def _jsonl_rows(fh: IO[bytes], limits: ListingLimits, *, first: int = 1,
                stop: int | None = None) -> Iterator[SourceRow]:
    for number, line in _lines(fh, limits.row_bytes, first=first, stop=stop):
        if line is None:
            yield SourceRow(number=number, data={}, error=_too_long(limits))
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            preview = {"_line": clip(line.decode("utf-8", "replace").strip())}
            yield SourceRow(number=number, data=preview, error=_not_utf8(exc))
            continue
        if not text.strip():
            continue
        error = None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            error = f"invalid JSON: {exc.msg}"
        except (ValueError, RecursionError) as exc:
            # Integers of thousands of digits, nesting deeper than the parser goes.
            error = f"invalid JSON: {clip(str(exc), 80)}"
        else:
            if not isinstance(data, dict):
                error = "not a JSON object"
        if error is not None:
            yield SourceRow(number=number, data={"_line": clip(text.strip())}, error=error)
        else:
            yield SourceRow(number=number, data=data)


def _csv_rows(fh: IO[bytes], limits: ListingLimits, path: Path) -> Iterator[SourceRow]:
    # The csv module's own field limit is process-wide: raise it just above
    # ours (never lower it) so that our limit, with its clear reason, applies.
    if csv.field_size_limit() < limits.row_bytes + 1024:
        csv.field_size_limit(limits.row_bytes + 1024)
    lines = _CsvLines(_lines(fh, limits.row_bytes))
    reader = csv.reader(lines)
    header: list[str] | None = None
    while True:
        lines.handed.clear()
        error: str | None = None
        try:
            fields = next(reader)
        except StopIteration:
            fields = None
        except csv.Error as exc:
            fields, error = [], f"malformed CSV: {exc}"
        if header is None and lines.skipped:
            raise CatalogError(f"listings file {path.name}: the header row is longer than "
                               f"the limit of {limits.row_bytes} bytes")
        for number in lines.skipped:
            yield SourceRow(number=number, data={}, error=_too_long(limits))
        lines.skipped.clear()
        if fields is None:
            return
        first = lines.handed[0][0] if lines.handed else 0
        error = error or next((lines.bad[n] for n, _ in lines.handed if n in lines.bad), None)
        if error is None and sum(len(f) for f in fields) > limits.row_bytes:
            error = _too_long(limits)
        if header is None:
            if error is not None:
                raise CatalogError(f"listings file {path.name}: the header row cannot be read "
                                   f"({error})")
            if not fields:
                continue
            header = [name.strip() for name in fields]
            continue
        # A quote never closed swallows the lines after it, bad ones too: the
        # record's own fault is its first line's, and the others are read again.
        if (error is None or len(lines.handed) > 1) and _unclosed_quote(
                fields, header, len(lines.handed)):
            yield lines.unclosed_quote()
        elif error is not None:
            yield SourceRow(number=first, data=preview(_record(header, fields)), error=error)
        elif any(f.strip() for f in fields):
            yield SourceRow(number=first, data=_record(header, fields))


class _CsvLines:
    """The physical lines handed to the csv reader, with their numbers: those
    of the record being read (``handed``), those too long to hand over
    (``skipped``), those not UTF-8 (``bad``, with the reason), and lines put
    back to be read again (after a quote that was never closed)."""

    def __init__(self, lines: Iterator[tuple[int, bytes | None]]) -> None:
        self._lines = lines
        self._again: deque[tuple[int, str]] = deque()
        self.handed: list[tuple[int, str]] = []
        self.skipped: list[int] = []
        self.bad: dict[int, str] = {}

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        while not self._again:
            number, line = next(self._lines)
            if line is None:
                self.skipped.append(number)
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                # Hand the line over anyway so the csv reader stays in step,
                # and reject the record it belongs to.
                text = line.decode("utf-8", "replace")
                self.bad[number] = _not_utf8(exc)
            self._again.append((number, text))
        number, text = self._again.popleft()
        self.handed.append((number, text))
        return text

    def unclosed_quote(self) -> SourceRow:
        """The record just read began with a quote never closed: its first line
        rejected as malformed CSV, the lines it swallowed put back to be read
        as rows of their own."""
        (number, text), swallowed = self.handed[0], self.handed[1:]
        self._again.extendleft(reversed(swallowed))
        last = swallowed[-1][0] if swallowed else number
        after = "" if last == number else f" (it would have swallowed line {last})" \
            if last == number + 1 else f" (it would have swallowed lines {number + 1}-{last})"
        return SourceRow(number=number, data={"_line": clip(text.strip())},
                         error=f"malformed CSV: a quoted field on line {number} is never "
                               f"closed{after}")


def _unclosed_quote(fields: list[str], header: list[str], lines: int) -> bool:
    """Whether a record ran on past its line because a quote was never closed:
    a line break inside a field of a one-line record (only the file's end
    closed it), or a record of several lines with the wrong number of fields."""
    broken = any("\n" in field or "\r" in field for field in fields)
    return broken and (lines == 1 or len(fields) != len(header))


def _record(header: list[str], fields: list[str]) -> dict[str, Any]:
    # Like csv.DictReader: fields past the header are dropped, missing ones are None.
    return {name: fields[i] if i < len(fields) else None for i, name in enumerate(header)}


def _open_parquet(path: Path) -> Any:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise CatalogError(
            "reading Parquet listings needs pyarrow: pip install 'restyle[parquet]'"
        ) from exc
    if not path.is_file():
        raise CatalogError(f"listings file not found: {path}")
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise CatalogError(
            f"listings file {path.name} cannot be read as Parquet: {clip(str(exc), 200)}"
        ) from exc


def _parquet_parts(path: Path, part_bytes: int) -> list[SourcePart]:
    metadata = _open_parquet(path).metadata
    parts: list[SourcePart] = []
    start, first_row, rows, size = 0, 1, 0, 0
    for group in range(metadata.num_row_groups):
        info = metadata.row_group(group)
        rows, size = rows + info.num_rows, size + info.total_byte_size
        if size >= part_bytes:
            parts.append(SourcePart(start=start, stop=group + 1, first_row=first_row))
            start, first_row, size = group + 1, first_row + rows, 0
            rows = 0
    if start < metadata.num_row_groups or not parts:
        parts.append(SourcePart(start=start, stop=None, first_row=first_row))
    return parts


def _parquet_rows(path: Path, limits: ListingLimits, part: SourcePart) -> Iterator[SourceRow]:
    parquet = _open_parquet(path)
    import pyarrow as pa

    try:
        names = parquet.schema_arrow.names
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise CatalogError(
            f"listings file {path.name} cannot be read as Parquet: {clip(str(exc), 200)}"
        ) from exc
    # Only the columns restyle uses are read: a huge description column costs nothing.
    columns = [name for name in names if name in COLUMNS]
    groups = range(part.start, parquet.metadata.num_row_groups if part.stop is None
                   else min(part.stop, parquet.metadata.num_row_groups))
    number = part.first_row - 1
    try:
        for batch in parquet.iter_batches(batch_size=_PARQUET_BATCH, columns=columns,
                                          row_groups=groups):
            for data in batch.to_pylist():
                number += 1
                size = sum(len(v) for v in data.values() if isinstance(v, (str, bytes)))
                if size > limits.row_bytes:
                    yield SourceRow(number=number, data=preview(data), error=_too_long(limits))
                else:
                    yield SourceRow(number=number, data=data)
    except (pa.ArrowException, OSError, ValueError) as exc:
        yield SourceRow(number=number + 1, data={},
                        error=f"the rest of the file cannot be read: {clip(str(exc), 200)}")


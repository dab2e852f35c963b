"""Catalog ingestion as small stages: read rows, validate them, load and decode
their images, embed them.

Each stage is a plain function or generator over rows that keeps no state
between calls beyond its arguments, so ``Catalog.build`` and a distributed
build can run the same stages. Every bound a stage enforces is in
:class:`ListingLimits`. A row that breaks one becomes a :class:`Rejection`
with a reason, never an exception, and the rows around it are kept; memory
stays bounded by the limits, whatever the size of the file.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import MappingProxyType
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from restyle._errors import CatalogError, FetchError, ImageError
from restyle._input.imaging import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS, decode
from restyle._plugin.contracts import vector_problem
from restyle._types import MAXIMUM_PRICE, Condition, Money

if TYPE_CHECKING:
    from PIL import Image

    from restyle._input.fetching import Fetcher
    from restyle._plugin.components import Encoder

__all__ = [
    "CurrentImages",
    "DecodedListing",
    "ListingLimits",
    "ListingRow",
    "LoadedImage",
    "Rejection",
    "SourcePart",
    "SourceRow",
    "StoredAlready",
    "checked_embeddings",
    "decode_listing_image",
    "draft_side",
    "embed_listings",
    "listings_format",
    "load_images",
    "load_unstored",
    "read_listings",
    "rejection_json",
    "split_listings",
    "validate_listing",
]

#: File suffixes and the format each is read as.
FORMATS: Mapping[str, str] = MappingProxyType({
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv",
    ".parquet": "parquet", ".pq": "parquet",
})

#: The columns a listing row may have; the second name of a pair is an alias.
COLUMNS = ("id", "listing_id", "title", "brand", "category", "condition", "price", "currency",
           "url", "image", "image_path", "image_url", "sold")

# Images are decoded at reduced scale as long as both sides stay above this,
# as comp images are when re-ranking: twice the input of common CLIP models.
DRAFT_SIDE = 448

_PRICE_CHARS = 40
_CURRENCY_CHARS = 40
_SOLD_CHARS = 20
# Parquet is read this many rows at a time (a record batch).
_PARQUET_BATCH = 256
# Rejections keep a preview of the row, not the row: it may be huge.
_PREVIEW_CHARS = 200
_PREVIEW_KEYS = 32
_SKIP_CHUNK = 1 << 16

_UTF8_BOM = b"\xef\xbb\xbf"
# C0 and C1 controls, DEL, lone surrogates (not storable as UTF-8) and the
# bidirectional overrides that make a title display as something else.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_SPACES = re.compile("[\t\n\r\v\f]+")
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def _default_max_prices() -> Mapping[str, Decimal]:
    # Currencies whose unit is worth far less than a dollar or euro need a
    # higher ceiling for the same item (a 1,000,000 USD watch is about 2.5e10 VND).
    high = {"JPY": 10**11, "KRW": 10**12, "HUF": 10**11, "CLP": 10**12, "COP": 10**13,
            "IDR": 10**13, "VND": 10**14, "IRR": 10**14, "LBP": 10**14, "UZS": 10**13,
            "PYG": 10**13, "LAK": 10**13, "MMK": 10**12, "KHR": 10**13, "UGX": 10**13,
            "TZS": 10**12, "NGN": 10**12, "PKR": 10**11, "INR": 10**11, "RUB": 10**11,
            "ISK": 10**11, "KZT": 10**12, "ARS": 10**13}
    return MappingProxyType({code: Decimal(value) for code, value in high.items()})


@dataclass(frozen=True, slots=True, kw_only=True)
class ListingLimits:
    """What one listing row may hold. A row over any limit is rejected, with the reason.

    Text limits count characters; ``row_bytes`` counts the encoded row as it
    is in the file (all its columns, known or not). Prices must lie in
    ``[min_price, max_price]`` in their currency; ``max_prices`` raises the
    ceiling for currencies with a small unit. No limit may exceed what the
    price estimate can compute with (:data:`restyle.MAXIMUM_PRICE`).
    """

    row_bytes: int = 256 * 1024
    id: int = 200
    title: int = 1000
    brand: int = 200
    category: int = 200
    condition: int = 100
    url: int = 2048
    image: int = 2048
    min_price: Decimal = Decimal("0.01")
    max_price: Decimal = Decimal(10) ** 9
    max_prices: Mapping[str, Decimal] = field(default_factory=_default_max_prices)
    image_bytes: int = DEFAULT_MAX_BYTES
    image_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        for name in ("row_bytes", "id", "title", "brand", "category", "condition", "url",
                     "image", "image_bytes", "image_pixels"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ListingLimits.{name} must be a positive integer, got {value!r}")
        ceilings = [self.max_price, *self.max_prices.values()]
        if not 0 < self.min_price <= min(ceilings) or max(ceilings) >= MAXIMUM_PRICE:
            raise ValueError(
                f"ListingLimits prices must satisfy 0 < min_price <= max_price < {MAXIMUM_PRICE}"
            )

    def max_price_for(self, currency: str) -> Decimal:
        return self.max_prices.get(currency, self.max_price)


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejection:
    """A source row the build could not use, and why. ``data`` is a short preview of the row."""

    row: int
    reason: str
    data: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceRow:
    """One row as read from the file: its columns, or why it could not be read."""

    number: int
    data: dict[str, Any]
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ListingRow:
    """A validated row. ``image`` is a resolved local path or an http(s) URL;
    ``image_as_written`` is what the row said (for messages)."""

    number: int
    listing_id: str
    title: str
    brand: str | None
    category: str | None
    condition: Condition
    price: Decimal
    currency: str
    url: str | None
    image: str
    image_as_written: str
    sold: bool | None
    preview: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def image_is_url(self) -> bool:
        return _is_url(self.image)


@dataclass(frozen=True, slots=True, kw_only=True)
class LoadedImage:
    """A row with its image's bytes and their SHA-256."""

    row: ListingRow
    data: bytes
    sha256: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DecodedListing:
    """A row with its decoded image, ready for the encoder."""

    row: ListingRow
    sha256: str
    image: Image.Image


@dataclass(frozen=True, slots=True, kw_only=True)
class SourcePart:
    """A slice of a listings file that can be read on its own, with the same row
    numbers as reading the whole file: bytes ``[start, stop)`` of a JSONL file
    (whole lines), row groups ``[start, stop)`` of a Parquet file, or all of a
    CSV file (a quoted field may span lines, so CSV is never cut).
    ``stop=None`` reads to the end; ``first_row`` is the number of the slice's
    first row (physical line for JSONL, row for Parquet)."""

    start: int = 0
    stop: int | None = None
    first_row: int = 1


class _Refused(ValueError):
    """A row that breaks a rule; the message is the rejection's reason."""


# -- read ----------------------------------------------------------------------


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
            preview = {"_line": _clip(line.decode("utf-8", "replace").strip())}
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
            error = f"invalid JSON: {_clip(str(exc), 80)}"
        else:
            if not isinstance(data, dict):
                error = "not a JSON object"
        if error is not None:
            yield SourceRow(number=number, data={"_line": _clip(text.strip())}, error=error)
        else:
            yield SourceRow(number=number, data=data)


def _csv_rows(fh: IO[bytes], limits: ListingLimits, path: Path) -> Iterator[SourceRow]:
    # The csv module's own field limit is process-wide: raise it just above
    # ours (never lower it) so that our limit, with its clear reason, applies.
    if csv.field_size_limit() < limits.row_bytes + 1024:
        csv.field_size_limit(limits.row_bytes + 1024)
    handed: list[int] = []  # physical lines handed to the csv reader for this record
    bad: dict[int, str] = {}  # physical line -> why its record is rejected
    skipped: list[int] = []  # physical lines too long to hand over at all

    def text_lines() -> Iterator[str]:
        for number, line in _lines(fh, limits.row_bytes):
            if line is None:
                skipped.append(number)
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                # Hand the line over anyway so the csv reader stays in step,
                # and reject the record it belongs to.
                text = line.decode("utf-8", "replace")
                bad[number] = _not_utf8(exc)
            handed.append(number)
            yield text

    reader = csv.reader(text_lines())
    header: list[str] | None = None
    while True:
        handed.clear()
        error: str | None = None
        try:
            fields = next(reader)
        except StopIteration:
            fields = None
        except csv.Error as exc:
            fields, error = [], f"malformed CSV: {exc}"
        if header is None and skipped:
            raise CatalogError(f"listings file {path.name}: the header row is longer than "
                               f"the limit of {limits.row_bytes} bytes")
        for number in skipped:
            yield SourceRow(number=number, data={}, error=_too_long(limits))
        skipped.clear()
        if fields is None:
            return
        first = handed[0] if handed else 0
        error = error or next((bad[n] for n in handed if n in bad), None)
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
        if error is not None:
            yield SourceRow(number=first, data=_preview(_record(header, fields)), error=error)
        elif any(f.strip() for f in fields):
            yield SourceRow(number=first, data=_record(header, fields))


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
            f"listings file {path.name} cannot be read as Parquet: {_clip(str(exc), 200)}"
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
            f"listings file {path.name} cannot be read as Parquet: {_clip(str(exc), 200)}"
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
                    yield SourceRow(number=number, data=_preview(data), error=_too_long(limits))
                else:
                    yield SourceRow(number=number, data=data)
    except (pa.ArrowException, OSError, ValueError) as exc:
        yield SourceRow(number=number + 1, data={},
                        error=f"the rest of the file cannot be read: {_clip(str(exc), 200)}")


# -- validate ------------------------------------------------------------------


def validate_listing(
    source: SourceRow,
    *,
    base: Path,
    images_root: Path | None = None,
    limits: ListingLimits | None = None,
) -> ListingRow | Rejection:
    """Check one row against the limits and make it a :class:`ListingRow`.

    ``base`` is the listings file's folder: relative image paths start there.
    Local images must lie inside ``images_root`` (default ``base``), symbolic
    links resolved; a path outside it is refused with the same words as a
    missing file, so a refusal never tells whether a file exists elsewhere.
    """
    limits = limits or ListingLimits()
    if source.error is not None:
        return Rejection(row=source.number, reason=source.error, data=_preview(source.data))
    try:
        row = _validate(source, base=base, images_root=images_root or base, limits=limits)
    except _Refused as exc:
        return Rejection(row=source.number, reason=str(exc), data=_preview(source.data))
    return row


def _validate(source: SourceRow, *, base: Path, images_root: Path,
              limits: ListingLimits) -> ListingRow:
    raw = source.data

    def value(column: str, *aliases: str, limit: int, clean: bool = True) -> str | None:
        for key in (column, *aliases):
            text = _text(raw.get(key), column)
            if text is None:
                continue
            if len(text) > limit:
                raise _Refused(f"{column} is {len(text)} characters, over the limit of {limit}")
            if clean:
                text = _SPACES.sub(" ", text)
                text = _CONTROLS.sub("", text)
            elif _CONTROLS.search(text):
                raise _Refused(f"{column} contains control characters")
            text = text.strip()
            if text:
                return text
        return None

    listing_id = value("id", "listing_id", limit=limits.id, clean=False)
    title = value("title", limit=limits.title)
    image = value("image", "image_path", "image_url", limit=limits.image, clean=False)
    if listing_id is None:
        raise _Refused("missing id")
    if title is None:
        raise _Refused("missing title")
    if image is None:
        raise _Refused("missing image")
    currency = (value("currency", limit=_CURRENCY_CHARS, clean=False) or "USD").upper()
    try:
        Money(amount=Decimal(0), currency=currency)
    except ValueError as exc:
        raise _Refused(f"bad currency {currency!r}: not a 3-letter ISO 4217 code") from exc
    price = _price(raw.get("price"), currency, limits)
    url = value("url", limit=limits.url, clean=False)
    if url is not None and not _is_url(url):
        raise _Refused(f"bad url: must be an http(s) URL, not {_scheme(url)}")
    sold_text = value("sold", limit=_SOLD_CHARS)
    return ListingRow(
        number=source.number,
        listing_id=listing_id,
        title=title,
        brand=value("brand", limit=limits.brand),
        category=value("category", limit=limits.category),
        condition=Condition.parse(value("condition", limit=limits.condition)),
        price=price,
        currency=currency,
        url=url,
        image=_image_location(image, base=base, images_root=images_root),
        image_as_written=image,
        sold=None if sold_text is None else sold_text.lower() in {"1", "true", "yes", "sold"},
        preview=_preview(raw),
    )


def _text(raw: object, column: str) -> str | None:
    """A cell as text: strings, numbers and booleans are; anything else is refused."""
    if raw is None:
        return None
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, (int, Decimal)):
        return str(raw)
    if isinstance(raw, float):
        return repr(raw)
    if isinstance(raw, bytes):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Refused(f"{column} is not UTF-8 text") from exc
    raise _Refused(f"{column} must be text or a number, not {type(raw).__name__}")


def _price(raw: object, currency: str, limits: ListingLimits) -> Decimal:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise _Refused("missing price")
    if isinstance(raw, bool):
        raise _Refused(f"bad price {raw!r}: not a number")
    if isinstance(raw, float) and not math.isfinite(raw):
        raise _Refused(f"bad price {raw!r}: not a finite number")
    text = _text(raw, "price") or ""
    shown = _clip(text.strip(), _PRICE_CHARS)
    if len(text) > _PRICE_CHARS:
        raise _Refused(f"bad price {shown!r}: longer than {_PRICE_CHARS} characters")
    try:
        price = Decimal(text.strip())
    except InvalidOperation as exc:
        raise _Refused(f"bad price {shown!r}: not a number") from exc
    if not price.is_finite():
        raise _Refused(f"bad price {shown!r}: not a finite number")
    if price < limits.min_price:
        raise _Refused(f"bad price {shown!r}: below the minimum of {limits.min_price}")
    ceiling = limits.max_price_for(currency)
    if price > ceiling:
        raise _Refused(f"bad price {shown!r}: above the {currency} maximum of {ceiling:,}")
    # Plain digits from here on ("1E+3" is stored as "1000").
    return Decimal(format(price, "f"))


def _is_url(text: str) -> bool:
    return text[:8].lower().startswith(("http://", "https://"))


def _scheme(text: str) -> str:
    # Only the scheme: the rest of a URL may carry credentials.
    scheme = text.split(":", 1)[0] if ":" in text else ""
    return f"a {scheme[:20]!r} URL" if scheme and scheme.isascii() else "a URL"


def _image_location(image: str, *, base: Path, images_root: Path) -> str:
    if _is_url(image):
        return image
    if _URL_SCHEME.match(image):
        raise _Refused(f"bad image: must be a file path or an http(s) URL, not {_scheme(image)}")
    refusal = (f"image not found: {_clip(image, 200)} (images must be files inside "
               f"{images_root}; see images_root)")
    try:
        path = Path(image).expanduser() if image.startswith("~") else Path(image)
        resolved = (path if path.is_absolute() else base / path).resolve()
        # Outside the root reads exactly as missing: nothing is learnt about the file.
        found = resolved.is_relative_to(images_root.resolve()) and resolved.is_file()
    except (OSError, RuntimeError, ValueError) as exc:
        raise _Refused(refusal) from exc
    if not found:
        raise _Refused(refusal)
    return str(resolved)


# -- load and decode -----------------------------------------------------------


def load_images(
    rows: Sequence[ListingRow],
    *,
    fetcher: Fetcher | None = None,
    limits: ListingLimits | None = None,
) -> list[LoadedImage | Rejection]:
    """The bytes of each row's image, in row order: local files are read, URLs
    fetched concurrently through ``fetcher`` (with its limits and guards)."""
    limits = limits or ListingLimits()
    urls = [row.image for row in rows if row.image_is_url]
    fetched: dict[str, bytes | FetchError] = {}
    if urls:
        if fetcher is None:
            from restyle._input.fetching import Fetcher

            fetcher = Fetcher()
        fetched = fetcher.fetch_many(urls)
    out: list[LoadedImage | Rejection] = []
    for row in rows:
        try:
            if row.image_is_url:
                result = fetched[row.image]
                if isinstance(result, FetchError):
                    raise _Refused(f"image could not be fetched: {result}")
                data = result
                if len(data) > limits.image_bytes:
                    raise _Refused(f"image {_clip(row.image_as_written, 200)} is larger than "
                                   f"the {limits.image_bytes // (1024 * 1024)} MiB limit")
            else:
                data = _read_local(row, limits)
        except _Refused as exc:
            out.append(Rejection(row=row.number, reason=str(exc), data=row.preview))
            continue
        out.append(LoadedImage(row=row, data=data, sha256=hashlib.sha256(data).hexdigest()))
    return out


def _read_local(row: ListingRow, limits: ListingLimits) -> bytes:
    shown = _clip(row.image_as_written, 200)
    # The path was resolved (links followed) and confined when validated: refuse
    # a link swapped in since, and never block on a FIFO or device.
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    flags |= getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(row.image, flags)
    except OSError as exc:
        raise _Refused(f"image not found: {shown}") from exc
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise _Refused(f"image not found: {shown}")
    with os.fdopen(fd, "rb") as fh:
        try:
            # Sized by the file, not the limit: read(limit) would allocate the
            # whole limit (30 MB) for every small image.
            data = fh.read(min(info.st_size, limits.image_bytes) + 1)
        except OSError as exc:
            raise _Refused(f"image {shown} cannot be read: {exc.strerror or exc}") from exc
    if len(data) > limits.image_bytes:
        raise _Refused(f"image {shown} is larger than the "
                       f"{limits.image_bytes // (1024 * 1024)} MiB limit")
    return data


def draft_side(encoder: object) -> int:
    """The side a build decodes its images down to for ``encoder``: the side of
    the square its model sees when the encoder can tell without loading the
    model (``input_side``), else :data:`DRAFT_SIDE`."""
    try:
        side = getattr(encoder, "input_side", None)
    except Exception:  # a plugin's property that fails costs the speed-up, not the work
        side = None
    if isinstance(side, int) and not isinstance(side, bool) and 32 <= side <= 4096:
        return side
    return DRAFT_SIDE


def decode_listing_image(
    loaded: LoadedImage, *, limits: ListingLimits | None = None, side: int = DRAFT_SIDE
) -> DecodedListing | Rejection:
    """Decode a row's image safely, reduced as far as both sides stay at least
    ``side`` pixels (see :func:`draft_side`): a JPEG inside its decoder, at 1/2,
    1/4 or 1/8 scale, much faster than decoding it whole; PNG and WebP by a
    whole factor after decoding. What the encoder's own resize would discard
    is never decoded."""
    limits = limits or ListingLimits()
    row = loaded.row
    try:
        # No source name for URLs: they may carry tokens into the message.
        name = None if row.image_is_url else _clip(row.image_as_written, 200)
        photo = decode(loaded.data, max_pixels=limits.image_pixels, source=name,
                       draft_side=side, sha256=loaded.sha256)
    except ImageError as exc:
        return Rejection(row=row.number, reason=str(exc), data=row.preview)
    image = photo.image
    factor = min(image.size) // side
    if factor >= 2:
        # PNG and WebP have no draft mode: shrink in one cheap step instead.
        image = image.reduce(factor)
    return DecodedListing(row=row, sha256=loaded.sha256, image=image)


@dataclass(frozen=True, slots=True)
class StoredAlready:
    """A row whose listing the catalog holds with this same image, and its
    vector: nothing to embed (``sha256`` is None when the URL matched and the
    image was not fetched again)."""

    row: ListingRow
    sha256: str | None


#: listing ids -> (image as stored, its sha256), for the listings the catalog
#: holds with a vector; the others are absent.
CurrentImages = Callable[[Sequence[str]], Mapping[str, tuple[str, str]]]


def load_unstored(
    rows: Sequence[ListingRow], *, current: CurrentImages, fetcher: Fetcher | None,
    limits: ListingLimits, side: int,
) -> list[DecodedListing | Rejection | StoredAlready]:
    """Each row's image loaded and decoded, in row order, unless the catalog
    holds the listing with the same image: a URL already stored is not fetched
    again, and an image whose bytes hash as stored is not decoded."""
    known = current([row.listing_id for row in rows]) if rows else {}
    out: list[DecodedListing | Rejection | StoredAlready | None] = [None] * len(rows)
    to_load: list[int] = []
    for i, row in enumerate(rows):
        image, _ = known.get(row.listing_id, (None, None))
        if row.image_is_url and image == row.image:
            out[i] = StoredAlready(row, None)
        else:
            to_load.append(i)
    loaded = load_images([rows[i] for i in to_load], fetcher=fetcher, limits=limits)
    for i, result in zip(to_load, loaded, strict=True):
        if isinstance(result, Rejection):
            out[i] = result
        elif known.get(result.row.listing_id, (None, None))[1] == result.sha256:
            out[i] = StoredAlready(result.row, result.sha256)
        else:
            out[i] = decode_listing_image(result, limits=limits, side=side)
    return [item for item in out if item is not None]


# -- embed ---------------------------------------------------------------------


def embed_listings(
    decoded: Sequence[DecodedListing], encoder: Encoder
) -> tuple[list[DecodedListing], np.ndarray, list[Rejection]]:
    """Embed a batch: the rows kept, their unit vectors (one per row), and the rows
    whose vector was unusable (not finite, or zero)."""
    if not decoded:
        return [], np.zeros((0, encoder.dim), np.float32), []
    return checked_embeddings(decoded, encoder.encode_images([d.image for d in decoded]),
                              encoder)


def checked_embeddings(
    decoded: Sequence[DecodedListing], vectors: np.ndarray, encoder: Encoder
) -> tuple[list[DecodedListing], np.ndarray, list[Rejection]]:
    """The encoder's answer for a batch, checked: the rows kept, their unit
    vectors, and the rows whose vector was unusable (not finite, or zero)."""
    dim = encoder.dim
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.shape != (len(decoded), dim):
        from restyle._errors import EncoderError

        raise EncoderError(
            f"encoder {encoder.name} returned vectors of shape {vectors.shape} for "
            f"{len(decoded)} images, expected ({len(decoded)}, {dim})"
        )
    usable = [vector_problem(vector) is None for vector in vectors]
    kept = [d for d, ok in zip(decoded, usable, strict=True) if ok]
    rejected = [
        Rejection(row=d.row.number, reason="the encoder gave no usable vector for this image",
                  data=d.row.preview)
        for d, ok in zip(decoded, usable, strict=True) if not ok
    ]
    return kept, np.ascontiguousarray(vectors[np.array(usable, dtype=bool)]), rejected


# -- rejections ----------------------------------------------------------------


def rejection_json(rejection: Rejection) -> str:
    """One line of ``rejected.jsonl``: strict JSON (no NaN or Infinity), ASCII only."""
    return json.dumps({"row": rejection.row, "reason": rejection.reason,
                       "data": _preview(rejection.data)}, allow_nan=False)


def _clip(text: str, limit: int = _PREVIEW_CHARS) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def _preview(data: Mapping[str, Any], depth: int = 0) -> dict[str, Any]:
    """A short, JSON-safe copy of a row for a rejection: values clipped, numbers
    that are not finite written as strings, at most a few nested levels."""
    out: dict[str, Any] = {}
    for i, (key, value) in enumerate(data.items()):
        if i == _PREVIEW_KEYS:
            out["..."] = f"{len(data) - _PREVIEW_KEYS} more columns"
            break
        out[_safe_text(_clip(str(key), 80))] = _preview_value(value, depth)
    return out


def _preview_value(value: object, depth: int) -> object:
    if value is None or isinstance(value, (bool, int)):
        if isinstance(value, int) and value.bit_length() > 53:
            # Beyond what JSON readers keep exactly (and str() refuses the largest).
            return f"an integer of {value.bit_length()} bits"
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return _safe_text(_clip(value))
    if isinstance(value, bytes):
        return _safe_text(_clip(value.decode("utf-8", "replace")))
    if isinstance(value, Mapping) and depth < 2:
        return _preview(value, depth + 1)
    if isinstance(value, (list, tuple)) and depth < 2:
        items = [_preview_value(v, depth + 1) for v in value[:_PREVIEW_KEYS]]
        return items + ([f"... {len(value) - _PREVIEW_KEYS} more"]
                        if len(value) > _PREVIEW_KEYS else [])
    return _safe_text(_clip(repr(value)))


def _safe_text(text: str) -> str:
    # Lone surrogates (from JSON escapes) cannot be written as UTF-8.
    return text.encode("utf-8", "replace").decode("utf-8")


def batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """``items`` in lists of at most ``size``."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch

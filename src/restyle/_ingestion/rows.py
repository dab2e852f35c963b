"""What ingestion's stages hand each other: the limits a row must keep, the
rows at each stage (read, validated, loaded, decoded, already stored) and the
rejection a row becomes when it breaks a rule."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from restyle._input.imaging import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from restyle._types import MAXIMUM_PRICE, Condition

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "CurrentImages",
    "DecodedListing",
    "ListingLimits",
    "ListingRow",
    "LoadedImage",
    "Refused",
    "Rejection",
    "SourcePart",
    "SourceRow",
    "StoredAlready",
    "batches",
    "is_url",
]


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
        return is_url(self.image)


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


class Refused(ValueError):
    """A row that breaks a rule; the message is the rejection's reason."""



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


def is_url(text: str) -> bool:
    """Whether an image is named by an http(s) URL (else it is a file path)."""
    return text[:8].lower().startswith(("http://", "https://"))


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

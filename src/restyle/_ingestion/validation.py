"""Validating a row read from a listings file: each column within its limit
and cleaned, the price a number in range, the image a URL or a file inside
the images folder; a row that breaks a rule is a rejection with the reason."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from pathlib import Path

from restyle._ingestion.prices import read_price
from restyle._ingestion.rejections import clip, preview
from restyle._ingestion.rows import (
    ListingLimits,
    ListingRow,
    Refused,
    Rejection,
    SourceRow,
    is_url,
)
from restyle._input.confined import Unsafe, resolve_inside
from restyle._types import Condition, Money

__all__ = ["image_location", "validate_listing"]

_PRICE_CHARS = 40
_CURRENCY_CHARS = 40
_SOLD_CHARS = 20
# C0 and C1 controls, DEL, lone surrogates (not storable as UTF-8) and the
# bidirectional overrides that make a title display as something else.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_SPACES = re.compile("[\t\n\r\v\f]+")
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


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
        return Rejection(row=source.number, reason=source.error, data=preview(source.data))
    try:
        row = _validate(source, base=base, images_root=images_root or base, limits=limits)
    except Refused as exc:
        return Rejection(row=source.number, reason=str(exc), data=preview(source.data))
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
                raise Refused(f"{column} is {len(text)} characters, over the limit of {limit}")
            if clean:
                text = _SPACES.sub(" ", text)
                text = _CONTROLS.sub("", text)
            elif _CONTROLS.search(text):
                raise Refused(f"{column} contains control characters")
            text = text.strip()
            if text:
                return text
        return None

    listing_id = value("id", "listing_id", limit=limits.id, clean=False)
    title = value("title", limit=limits.title)
    image = value("image", "image_path", "image_url", limit=limits.image, clean=False)
    if listing_id is None:
        raise Refused("missing id")
    if title is None:
        raise Refused("missing title")
    if image is None:
        raise Refused("missing image")
    price, currency = _price(raw.get("price"),
                             value("currency", limit=_CURRENCY_CHARS, clean=False), limits)
    url = value("url", limit=limits.url, clean=False)
    if url is not None and not is_url(url):
        raise Refused(f"bad url: must be an http(s) URL, not {_scheme(url)}")
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
        image=image_location(image, base=base, images_root=images_root),
        image_as_written=image,
        sold=None if sold_text is None else sold_text.lower() in {"1", "true", "yes", "sold"},
        preview=preview(raw),
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
            raise Refused(f"{column} is not UTF-8 text") from exc
    raise Refused(f"{column} must be text or a number, not {type(raw).__name__}")


def _price(raw: object, column: str | None, limits: ListingLimits) -> tuple[Decimal, str]:
    """The price and its currency: the currency column's, else the one the
    price's symbol or code names, else USD; the two must agree."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise Refused("missing price")
    if isinstance(raw, bool):
        raise Refused(f"bad price {raw!r}: not a number")
    if isinstance(raw, float) and not math.isfinite(raw):
        raise Refused(f"bad price {raw!r}: not a finite number")
    text = _text(raw, "price") or ""
    shown = clip(text.strip(), _PRICE_CHARS)
    if len(text) > _PRICE_CHARS:
        raise Refused(f"bad price {shown!r}: longer than {_PRICE_CHARS} characters")
    read = read_price(text.strip(), shown)
    currency = _currency(column, read.currencies, shown)
    price = read.amount
    if not price.is_finite():
        raise Refused(f"bad price {shown!r}: not a finite number")
    if price < limits.min_price:
        raise Refused(f"bad price {shown!r}: below the minimum of {limits.min_price}")
    ceiling = limits.max_price_for(currency)
    if price > ceiling:
        raise Refused(f"bad price {shown!r}: above the {currency} maximum of {ceiling:,}")
    # Plain digits from here on ("1E+3" is stored as "1000").
    return Decimal(format(price, "f")), currency


def _currency(column: str | None, marked: tuple[str, ...], shown: str) -> str:
    currency = (column or (marked[0] if marked else "USD")).upper()
    try:
        Money(amount=Decimal(0), currency=currency)
    except ValueError as exc:
        raise Refused(f"bad currency {currency!r}: not a 3-letter ISO 4217 code") from exc
    if marked and currency not in marked:
        raise Refused(f"bad price {shown!r}: its currency mark is not the currency "
                      f"column's {currency}")
    return currency


def _scheme(text: str) -> str:
    # Only the scheme: the rest of a URL may carry credentials.
    scheme = text.split(":", 1)[0] if ":" in text else ""
    return f"a {scheme[:20]!r} URL" if scheme and scheme.isascii() else "a URL"


def image_location(image: str, *, base: Path, images_root: Path) -> str:
    """A row's image as it is read: an http(s) URL as it is, a path resolved
    inside ``images_root`` (relative to ``base``); anything else raises
    :class:`Refused` saying why, a path outside the root as if it were missing."""
    if is_url(image):
        return image
    if _URL_SCHEME.match(image):
        raise Refused(f"bad image: must be a file path or an http(s) URL, not {_scheme(image)}")
    refusal = (f"image not found: {clip(image, 200)} (images must be files inside "
               f"{images_root}; another folder is named by --images-root, images_root= "
               "in Python)")
    try:
        path = Path(image).expanduser() if image.startswith("~") else Path(image)
        resolved = resolve_inside(images_root, path, base=base)
        found = resolved.is_file()
    except (Unsafe, OSError, RuntimeError, ValueError) as exc:
        # Outside the root reads exactly as missing: nothing is learnt about the file.
        raise Refused(refusal) from exc
    if not found:
        raise Refused(refusal)
    return str(resolved)


"""Prices as resellers' spreadsheets export them: a currency symbol or ISO
code before or after the number, commas between thousands, or a comma before
the cents; anything ambiguous refused with the reason (docs/catalog.md,
"Prices").

The locale rule: a dot is always the decimal point. A comma followed by
exactly three digits separates thousands (``1,200.00``, ``1,200``); a single
comma followed by one or two final digits, with no dot, is the decimal point
(``12,50``). Anything else with a comma (``1.200,00``, ``1,200,5``,
``12,3456``) is refused: it reads differently in different countries.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from restyle._ingestion.rows import Refused

__all__ = ["PriceText", "read_price"]

#: Currency symbols and the currency each names; None: several (see _SHARED).
_SYMBOLS: dict[str, str | None] = {
    "$": None, "¥": None, "€": "EUR", "£": "GBP", "₹": "INR", "₩": "KRW", "₽": "RUB",
    "₺": "TRY", "₪": "ILS", "₫": "VND", "฿": "THB", "₱": "PHP", "zł": "PLN", "kč": "CZK",
    "us$": "USD", "c$": "CAD", "ca$": "CAD", "a$": "AUD", "au$": "AUD", "nz$": "NZD",
    "hk$": "HKD", "s$": "SGD", "r$": "BRL", "mx$": "MXN",
}
#: The currencies a symbol shared by several stands for, the first its default.
_SHARED = {
    "$": ("USD", "CAD", "AUD", "NZD", "HKD", "SGD", "TWD", "MXN", "ARS", "CLP", "COP"),
    "¥": ("JPY", "CNY"),
}
_SHAPE = re.compile(r"^(?P<sign>-?)\s*(?P<head>[^\d.,\s-]*)\s*(?P<sign2>-?)(?P<number>[\d.,]+)"
                    r"\s*(?P<tail>[^\d.,\s]*)$")
_THOUSANDS = re.compile(r"^\d{1,3}(,\d{3})+(\.\d+)?$")
_DECIMAL_COMMA = re.compile(r"^\d+,\d{1,2}$")
_PLAIN = re.compile(r"^(\d+\.?\d*|\.\d+)$")
_ISO = re.compile(r"^[A-Za-z]{3}$")


class PriceText:
    """A price cell read: its amount and the currency its symbol or code names, if any."""

    __slots__ = ("amount", "currencies")

    def __init__(self, amount: Decimal, currencies: tuple[str, ...]) -> None:
        self.amount = amount
        #: The currencies the price's mark allows, the first its default; () when unmarked.
        self.currencies = currencies


def read_price(text: str, shown: str) -> PriceText:
    """``text`` (a price cell, stripped) as an amount and the currencies its
    mark allows; :class:`Refused` with the reason when it is not a price."""
    try:
        return PriceText(Decimal(text), ())  # plain digits, an exponent: as ever
    except InvalidOperation:
        pass
    found = _SHAPE.match(text)
    if found is None:
        raise Refused(f"bad price {shown!r}: not a number")
    head, tail = found["head"], found["tail"]
    if head and tail:
        raise Refused(f"bad price {shown!r}: two currency marks ({head!r} and {tail!r})")
    currencies = _currencies(head or tail, shown) if head or tail else ()
    sign = "-" if found["sign"] or found["sign2"] else ""
    return PriceText(Decimal(sign + _digits(found["number"], shown)), currencies)


def _currencies(mark: str, shown: str) -> tuple[str, ...]:
    if _ISO.match(mark):
        return (mark.upper(),)
    key = mark.lower()
    if key not in _SYMBOLS:
        raise Refused(f"bad price {shown!r}: not a number ({mark!r} is not a currency "
                      "symbol or code restyle knows)")
    named = _SYMBOLS[key]
    return (named,) if named is not None else _SHARED[key]


def _digits(number: str, shown: str) -> str:
    """The number with its separators read by the locale rule above."""
    if _PLAIN.match(number):
        return number
    if _THOUSANDS.match(number):
        return number.replace(",", "")
    if _DECIMAL_COMMA.match(number):
        return number.replace(",", ".")
    raise Refused(
        f"bad price {shown!r}: ambiguous separators; write it with a dot before the cents "
        "and commas only between groups of three digits (1,200.00 or 1200.00; 12,50 for "
        "12.50 is read too)"
    )

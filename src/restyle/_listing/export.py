"""Drafts as a flat CSV for bulk listing tools, in the columns of eBay's
Seller Hub bulk upload template (``*Action``, ``*Category``, ``*Title``,
``*ConditionID``, ``C:<aspect>``, ``*StartPrice``, ...), one row a draft."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

from restyle._listing.values import ListingDraft

__all__ = ["drafts_csv"]

_FIXED = ("*Action(SiteID=US|Country=US|Currency=USD|Version=1193)", "CustomLabel",
          "*Category", "*Title", "*ConditionID", "ConditionDescription", "*StartPrice",
          "Currency", "*Format", "*Duration", "*Quantity", "*Description", "PicURL")
#: A cell that starts with one of these is quoted with a leading apostrophe,
#: so that a spreadsheet does not run it as a formula.
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: str) -> str:
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def drafts_csv(drafts: Iterable[ListingDraft], *, labels: Sequence[str] | None = None,
               picture_urls: Sequence[Sequence[str]] | None = None) -> str:
    """The drafts as CSV text: the fixed columns, then a ``C:`` column for every
    aspect any draft has. ``labels`` are the sellers' SKUs (CustomLabel),
    ``picture_urls`` each draft's hosted photos (PicURL, ``|``-separated)."""
    drafts = list(drafts)
    names: list[str] = []
    for draft in drafts:
        for aspect in draft.aspects:
            if aspect.name not in names:
                names.append(aspect.name)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([*_FIXED, *(f"C:{n}" for n in names)])
    for i, draft in enumerate(drafts):
        amount = draft.price.amount
        row = [
            "Add", labels[i] if labels else "", draft.category.category_id or "", draft.title,
            draft.condition_id or "", draft.condition_description,
            "" if amount is None else f"{amount.amount:.2f}",
            "" if amount is None else amount.currency, "FixedPrice", "GTC", "1",
            draft.description, "|".join(picture_urls[i]) if picture_urls else "",
        ]
        row.extend("|".join(draft.aspect(n)) for n in names)
        writer.writerow([_cell(c) for c in row])
    return out.getvalue()

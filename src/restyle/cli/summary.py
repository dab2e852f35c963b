"""One Analysis as the text ``restyle analyze`` prints: the identification, the
price and what it rests on, and the comps under headed columns, the ones the
price counts marked."""

from __future__ import annotations

from pathlib import Path

from restyle._display import CONDITION_WORDS, comp_note, counted_keys, price_words
from restyle._types import Analysis, Comp, PhotoInfo

__all__ = ["COUNTED_MARK", "summary_text"]

#: The mark beside a comp the price counts.
COUNTED_MARK = "*"


def summary_text(analysis: Analysis, top: int) -> str:
    """``analysis`` in words, with its ``top`` most alike comps."""
    lines = _identification_lines(analysis)
    lines += _price_lines(analysis, top)
    lines += _comp_lines(analysis, top)
    return "\n".join(lines) + "\n"


def _identification_lines(analysis: Analysis) -> list[str]:
    ident = analysis.identification
    lines = [ident.summary,
             f"  brand:      {ident.brand or '-'}",
             f"  product:    {ident.product_name or '-'}",
             f"  category:   {ident.category or '-'}"]
    if ident.attributes:
        lines.append("  attributes: " + ", ".join(f"{a.name} {a.value}" for a in ident.attributes))
    lines.append(f"  confidence: {ident.confidence:.2f}")
    if len(analysis.photos) > 1:
        lines.append("  photos:     " + ", ".join(_photo_words(p) for p in analysis.photos))
    if ident.fallback_reason:
        lines.append(f"  synthesizer: {ident.synthesizer or '-'} (fallback: "
                     f"{ident.fallback_reason})")
    lines += [f"  to be surer, add {suggestion}" for suggestion in ident.suggested_photos]
    lines += [f"  expert {expert} failed: {reason}"
              for expert, reason in analysis.failed_experts.items()]
    lines += [f"  warning: {warning}" for warning in analysis.warnings]
    return lines


def _photo_words(photo: PhotoInfo) -> str:
    """"2 tag (tag.jpg)" for photo 2 of an item, a tag; "(found, 0.83)" when restyle found it."""
    role = photo.role.value if photo.role is not None else "?"
    found = "" if photo.role_score is None else f" found {photo.role_score:.2f}"
    name = f" {Path(photo.source).name}" if photo.source else ""
    return f"{photo.index + 1} {role}{found}{name}"


def _price_lines(analysis: Analysis, top: int) -> list[str]:
    price = analysis.price
    text, basis = price_words(price)
    if not price.ok:
        return [f"\nPrice: {text}"]
    counted = counted_keys(price)
    shown = sum(c.listing.key in counted for c in analysis.comps[:top])
    where = (f"marked {COUNTED_MARK} below" if shown == price.comps_used
             else f"{shown} of them shown below, marked {COUNTED_MARK}")
    lines = [f"\nPrice: {text}, from {price.comps_used} comps ({where})"]
    if basis:
        lines.append(f"  basis: {basis}")
    return lines


def _comp_lines(analysis: Analysis, top: int) -> list[str]:
    comps = analysis.comps
    if not comps:
        return ["\nNo comps found."]
    counted = counted_keys(analysis.price)
    shown = comps[:top]
    lines = [f"\nComps ({len(comps)} found, most alike first"
             + (f"; {COUNTED_MARK} counted in the price" if counted else "") + "):"]
    if not shown:
        return lines
    rows = [_comp_row(i, comp, analysis, counted) for i, comp in enumerate(shown, start=1)]
    header = ("", "#", "alike", "price", "sold", "condition", "marketplace", "title")
    widths = [max(len(row[col]) for row in [header, *rows]) for col in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [cell.rjust(w) if col in (1, 2, 3) else cell.ljust(w)
                 for col, (cell, w) in enumerate(zip(row, widths, strict=False))]
        lines.append(("  " + "  ".join(cells) + "  " + row[-1]).rstrip())
    hidden = [i for i, comp in enumerate(comps, start=1)
              if i > top and comp.listing.key in counted]
    if hidden:
        lines.append(f"  also counted in the price, not shown: #{', #'.join(map(str, hidden))} "
                     f"(--top {hidden[-1]} lists them)")
    return lines


def _comp_row(rank: int, comp: Comp, analysis: Analysis,
              counted: frozenset[str]) -> tuple[str, ...]:
    listing = comp.listing
    note = comp_note(comp, analysis.price)
    return (
        COUNTED_MARK if listing.key in counted else "",
        str(rank),
        "n/a" if comp.similarity is None else f"{comp.similarity:.3f}",
        str(listing.price) if listing.price else "no price",
        "sold" if listing.sold else "asking" if listing.sold is False else "",
        CONDITION_WORDS.get(listing.condition.value, listing.condition.value),
        listing.marketplace,
        listing.title + (f"  ({note})" if note else ""),
    )

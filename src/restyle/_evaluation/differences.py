"""What a replay changed: the differences between two analyses of one photo."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from restyle._types import Analysis, Comp, Identification, Value

__all__ = ["Difference", "differences", "identification_fields"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Difference(Value):
    """One thing a replay changed: ``what`` (``"price.estimate"``,
    ``"identification.brand"``, ``"comp catalog:x rank"``), before and after."""

    what: str
    before: str
    after: str



def identification_fields(identification: Identification) -> dict[str, str]:
    return {
        "product_name": identification.product_name or "",
        "brand": identification.brand or "",
        "category": identification.category or "",
        "attributes": ", ".join(f"{a.name}={a.value}" for a in identification.attributes),
        "confidence": f"{identification.confidence:.2f}",
        "synthesizer": identification.synthesizer,
        "fallback_reason": identification.fallback_reason or "",
    }


def _priceidentification_fields(analysis: Analysis) -> dict[str, str]:
    price = analysis.price

    def text(value: object) -> str:
        return "" if value is None else str(getattr(value, "value", value))

    return {
        "status": text(price.status), "basis": text(price.basis),
        "currency": text(price.currency), "estimate": text(price.estimate),
        "low": text(price.low), "high": text(price.high),
        "comps_used": str(price.comps_used), "effective_weight": str(price.effective_weight),
        "minimum_comps": str(price.minimum_comps), "half_life_days": text(price.half_life_days),
        "counted": " ".join(sorted(c.listing_key for c in price.counted)),
    }


def _comps(comps: Sequence[Comp]) -> dict[str, tuple[int, str]]:
    return {c.listing.key: (rank, ", ".join(c.flags)) for rank, c in enumerate(comps, start=1)}


def differences(before: Analysis, after: Analysis) -> tuple[Difference, ...]:
    """What differs between two analyses of one photo: identification fields,
    the query's words, each comp's rank and flags, and the price."""
    found: list[Difference] = []

    def compare(prefix: str, old: Mapping[str, str], new: Mapping[str, str]) -> None:
        for name in old:
            if old[name] != new[name]:
                found.append(Difference(what=f"{prefix}.{name}", before=old[name],
                                        after=new[name]))

    compare("identification", identification_fields(before.identification),
            identification_fields(after.identification))
    old_query = before.query.text if before.query else ""
    new_query = after.query.text if after.query else ""
    if old_query != new_query:
        found.append(Difference(what="query.text", before=old_query, after=new_query))
    old_comps, new_comps = _comps(before.comps), _comps(after.comps)
    for key in [*old_comps, *(k for k in new_comps if k not in old_comps)]:
        old_rank, old_flags = old_comps.get(key, (0, ""))
        new_rank, new_flags = new_comps.get(key, (0, ""))
        if old_rank != new_rank:
            found.append(Difference(what=f"comp {key} rank", before=str(old_rank or "-"),
                                    after=str(new_rank or "-")))
        if old_flags != new_flags:
            found.append(Difference(what=f"comp {key} flags", before=old_flags or "-",
                                    after=new_flags or "-"))
    compare("price", _priceidentification_fields(before), _priceidentification_fields(after))
    return tuple(found)

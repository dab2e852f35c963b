"""The price estimate: a similarity-weighted median with outliers trimmed, per currency.

Rules, in order (docs/pricing.md says the same for users):

1. A comp is excluded when it has no price (``no_price``), when its price is
   not finite or not below :data:`MAXIMUM_PRICE` (``absurd_price``: no
   marketplace's typo or overflow may break the arithmetic), when re-ranking
   flagged it ``below_cutoff`` (``below_cutoff``), when its score is not
   positive although its image was compared (``not_alike``), or when it is an
   active auction nobody has bid on (``auction_without_bids``: a starting
   price says nothing about the market).
2. A comp flagged ``image_unavailable`` is not excluded but down-weighted to
   :data:`UNSEEN_WEIGHT`: the search found it, but nobody could check that it
   looks like the photo. Every other comp weighs its score (capped at 1).
3. Currencies are never mixed or converted: each currency is estimated on its
   own (see the bands), and the headline is the currency carrying the most
   weight; comps in other currencies are left out of it (``other_currency``).
4. Within a currency with at least four comps, prices outside Tukey's fences
   (Q1 - 1.5 IQR, Q3 + 1.5 IQR) are excluded as outliers (``outlier``).
5. The estimate is the weighted median, the range the weighted 25th to 75th
   percentile, of the item prices (shipping left out: it depends on the buyer).
6. Fewer than ``minimum_comps`` (default :data:`MINIMUM_COMPS`) comps left in a
   currency: ``not_enough_data`` for it, with no amounts.
7. Bands split each currency by condition and, when the marketplaces said
   which, into sold and active listings, under the same minimum.
8. Sold comps weigh less the older the sale: their weight is multiplied by
   ``0.5 ** (age_days / half_life_days)``, the age counted back from ``now``
   (a sale without a date is not aged; asking prices never are).
9. The headline prefers what sold. With at least ``minimum_comps`` sold comps
   in the headline currency it is their band (basis ``sold``), and asking
   prices are left out of it (``asking_price``), shown in their own band.
   With fewer sold comps it mixes them with the asking prices (``mixed``);
   with none it rests on asking prices (``asking``). Outliers (rule 4) are
   looked for among the sold prices and among the others apart, since asking
   prices run above what sells.
"""

from __future__ import annotations

import decimal
import math
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import TypeVar

import numpy as np

from restyle._types import (
    Comp,
    CompFlag,
    Condition,
    Exclusion,
    PriceBand,
    PriceBasis,
    PricedComp,
    PriceEstimate,
    PriceStatus,
)

__all__ = ["MAXIMUM_PRICE", "MINIMUM_COMPS", "UNSEEN_WEIGHT", "estimate_price",
           "weighted_quantile"]

#: Fewest comps an estimate may rest on.
MINIMUM_COMPS = 3
#: Weight of a comp whose image could not be compared with the photo.
UNSEEN_WEIGHT = 0.25
#: Days after which a sold comp weighs half what a sale of today would.
DEFAULT_HALF_LIFE_DAYS = 30.0
#: The smallest recency factor: however old a sale, its weight stays a number.
_MIN_RECENCY = 1e-9
#: Fewest prices before outliers are looked for: with three, the fences say nothing.
_OUTLIER_MINIMUM = 4

#: Comps priced at or above this, in any currency, are excluded as absurd.
#: Far above any real price (a trillion dollars is 2.5e16 Vietnamese dong,
#: too), and far enough below Decimal's 28-digit default precision that an
#: amount in cents always fits.
MAXIMUM_PRICE = Decimal(10) ** 18

_CENT = Decimal("0.01")
# The arithmetic runs in its own context: a caller's decimal.getcontext()
# (a lower precision, other traps) must not change or break an estimate.
_CONTEXT = decimal.Context(prec=34, rounding=ROUND_HALF_UP)
_N = TypeVar("_N", float, Decimal)


def weighted_quantile(values: Sequence[_N], weights: Sequence[float], q: float) -> _N:
    """The smallest value whose cumulative weight reaches ``q`` of the total
    (the lower weighted quantile; the midpoint when exactly on a boundary).

    Pairs are sorted by value and then weight, so the answer does not depend
    on the order the values come in.
    """
    if not values or len(values) != len(weights):
        raise ValueError("weighted_quantile needs as many weights as values, and at least one")
    pairs = sorted(zip(values, weights, strict=True))
    total = math.fsum(w for _, w in pairs)
    target = q * total
    cumulative = 0.0
    for i, (value, weight) in enumerate(pairs):
        cumulative += weight
        if cumulative >= target - 1e-12 * total:
            if math.isclose(cumulative, target, rel_tol=1e-9) and i + 1 < len(pairs):
                return (value + pairs[i + 1][0]) / 2
            return value
    return pairs[-1][0]


def _money(value: Decimal) -> Decimal:
    return value.quantize(_CENT, rounding=ROUND_HALF_UP, context=_CONTEXT)


def _weigh(comp: Comp) -> tuple[float, str | None] | Exclusion:
    """A comp's weight and why it was lowered, or why it is excluded."""
    listing = comp.listing
    key = listing.key
    if listing.price is None:
        return Exclusion(listing_key=key, reason="no_price", detail="no price")
    amount = listing.price.amount
    if not amount.is_finite() or amount >= MAXIMUM_PRICE:
        return Exclusion(
            listing_key=key, reason="absurd_price",
            detail=f"absurd price {amount} {listing.price.currency}",
        )
    if CompFlag.BELOW_CUTOFF in comp.flags:
        return Exclusion(
            listing_key=key, reason="below_cutoff",
            detail=f"looks too little like the photo (score {comp.score:.2f})",
        )
    if listing.auction and not listing.sold and listing.bid_count == 0:
        return Exclusion(
            listing_key=key, reason="auction_without_bids",
            detail=f"auction without bids (starting price {listing.price})",
        )
    if CompFlag.IMAGE_UNAVAILABLE in comp.flags:
        return UNSEEN_WEIGHT, "image_unavailable"
    if not comp.score > 0:
        return Exclusion(
            listing_key=key, reason="not_alike",
            detail=f"does not look like the photo (score {comp.score:.2f})",
        )
    return min(float(comp.score), 1.0), None


def _trim_outliers(
    priced: list[PricedComp],
) -> tuple[list[PricedComp], list[Exclusion]]:
    if len(priced) < _OUTLIER_MINIMUM:
        return priced, []
    prices = np.array([float(p.price.amount) for p in priced])
    q1, q3 = np.percentile(prices, [25, 75])
    fence = 1.5 * (q3 - q1)
    kept, excluded = [], []
    for item, value in zip(priced, prices, strict=True):
        if q1 - fence <= value <= q3 + fence:
            kept.append(item)
        else:
            excluded.append(Exclusion(
                listing_key=item.listing_key, reason="outlier",
                detail=f"outlier price {item.price} (kept {q1 - fence:.2f} to {q3 + fence:.2f})",
            ))
    return kept, excluded


def _band(
    currency: str,
    priced: Sequence[PricedComp],
    minimum_comps: int,
    *,
    condition: Condition | None = None,
    sold: bool | None = None,
) -> PriceBand:
    if len(priced) < minimum_comps:
        return PriceBand(
            currency=currency, status=PriceStatus.NOT_ENOUGH_DATA, condition=condition,
            sold=sold, comps_used=len(priced),
            effective_weight=_effective_weight([p.weight for p in priced]),
        )
    prices = [p.price.amount for p in priced]
    weights = [p.weight for p in priced]
    return PriceBand(
        currency=currency,
        status=PriceStatus.OK,
        condition=condition,
        sold=sold,
        estimate=_money(weighted_quantile(prices, weights, 0.5)),
        low=_money(weighted_quantile(prices, weights, 0.25)),
        high=_money(weighted_quantile(prices, weights, 0.75)),
        comps_used=len(priced),
        effective_weight=_effective_weight(weights),
    )


def _effective_weight(weights: Sequence[float]) -> float:
    """Kish's effective number of comps: n when all weigh the same, less when a few dominate."""
    if not weights:
        return 0.0
    total = math.fsum(weights)
    return round(total * total / math.fsum(w * w for w in weights), 3)


def _sort_key(priced: PricedComp) -> tuple[Decimal, float, str]:
    return (priced.price.amount, -priced.weight, priced.listing_key)


def recency_factor(sold_at: datetime, now: datetime, half_life_days: float) -> float:
    """``0.5 ** (age_days / half_life_days)``: 1 for a sale at ``now`` (or
    after it), one half ``half_life_days`` before it, never below a tiny floor."""
    age_days = max(0.0, (_aware(now) - _aware(sold_at)).total_seconds() / 86400.0)
    return max(_MIN_RECENCY, float(0.5 ** (age_days / half_life_days)))


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def estimate_price(
    comps: Sequence[Comp],
    *,
    minimum_comps: int = MINIMUM_COMPS,
    half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
    now: datetime | None = None,
) -> PriceEstimate:
    """Estimate a price from ``comps`` following the module's rules.

    ``now`` is the moment sold comps' ages are counted from (the current
    time by default; a naive time is taken as UTC).
    """
    if minimum_comps < 1:
        raise ValueError("minimum_comps must be at least 1")
    if isinstance(half_life_days, bool) or not isinstance(half_life_days, (int, float)) \
            or not (math.isfinite(half_life_days) and half_life_days > 0):
        raise ValueError(f"half_life_days must be a positive number, got {half_life_days!r}")
    as_of = datetime.now(timezone.utc) if now is None else _aware(now)
    with decimal.localcontext(_CONTEXT):
        return _estimate(comps, minimum_comps, half_life_days, as_of)


def _estimate(comps: Sequence[Comp], minimum_comps: int, half_life_days: float,
              as_of: datetime) -> PriceEstimate:
    excluded: list[Exclusion] = []
    by_currency: dict[str, list[PricedComp]] = defaultdict(list)
    for comp in comps:
        weighed = _weigh(comp)
        if isinstance(weighed, Exclusion):
            excluded.append(weighed)
            continue
        weight, lowered = weighed
        listing = comp.listing
        assert listing.price is not None
        recency = None
        if listing.sold and listing.sold_at is not None:
            recency = recency_factor(listing.sold_at, as_of, half_life_days)
            weight *= recency
        by_currency[listing.price.currency].append(PricedComp(
            listing_key=listing.key, price=listing.price, weight=weight,
            condition=listing.condition, sold=listing.sold, down_weighted=lowered,
            recency=recency, sold_at=listing.sold_at,
        ))
    aged = any(p.recency is not None for group in by_currency.values() for p in group)

    kept_by_currency: dict[str, list[PricedComp]] = {}
    bands: list[PriceBand] = []
    overall: dict[str, PriceBand] = {}
    for currency in sorted(by_currency):
        kept = []
        for sold in (True, False):  # sold prices, then the others: two markets
            part, outliers = _trim_outliers(
                [p for p in by_currency[currency] if (p.sold is True) is sold]
            )
            kept.extend(part)
            excluded.extend(outliers)
        kept.sort(key=_sort_key)
        kept_by_currency[currency] = kept
        overall[currency] = band = _band(currency, kept, minimum_comps)
        bands.append(band)
        for condition in Condition:
            group = [p for p in kept if p.condition is condition]
            if group:
                bands.append(_band(currency, group, minimum_comps, condition=condition))
        for sold in (True, False):
            group = [p for p in kept if p.sold is sold]
            if group:
                bands.append(_band(currency, group, minimum_comps, sold=sold))

    if not overall:
        return PriceEstimate(
            status=PriceStatus.NOT_ENOUGH_DATA, minimum_comps=minimum_comps,
            exclusions=_ordered(excluded), half_life_days=float(half_life_days),
        )
    weight_of = {c: math.fsum(p.weight for p in kept_by_currency[c]) for c in overall}
    currency = max(sorted(overall), key=lambda c: (weight_of[c], overall[c].comps_used))
    for other in sorted(overall):
        if other != currency:
            excluded.extend(
                Exclusion(listing_key=p.listing_key, reason="other_currency",
                          detail=f"priced in {other}, not {currency} (see the {other} band)")
                for p in kept_by_currency[other]
            )
    basis, counted, detail = _basis(kept_by_currency[currency], minimum_comps)
    if basis is PriceBasis.SOLD:
        headline = _band(currency, counted, minimum_comps, sold=True)
        excluded.extend(
            Exclusion(listing_key=p.listing_key, reason="asking_price",
                      detail=f"asking price {p.price}, not a sale (see the asking band)"
                      if p.sold is False else f"{p.price}, not known to have sold")
            for p in kept_by_currency[currency] if p.sold is not True
        )
    else:
        headline = overall[currency]
    return PriceEstimate(
        status=headline.status,
        currency=currency,
        estimate=headline.estimate,
        low=headline.low,
        high=headline.high,
        comps_used=headline.comps_used,
        effective_weight=headline.effective_weight,
        minimum_comps=minimum_comps,
        counted=tuple(counted),
        exclusions=_ordered(excluded),
        bands=tuple(bands),
        basis=basis,
        basis_detail=detail,
        half_life_days=float(half_life_days),
        as_of=as_of if aged else None,
    )


def _basis(
    kept: list[PricedComp], minimum_comps: int
) -> tuple[PriceBasis, list[PricedComp], str]:
    """What the headline of one currency rests on, its comps, and why, in words."""
    sold = [p for p in kept if p.sold is True]
    asking = len(kept) - len(sold)
    if len(sold) >= minimum_comps:
        apart = f"; {_count(asking, 'unsold comp')} left out" if asking else ""
        return PriceBasis.SOLD, sold, f"{_count(len(sold), 'sold comp')}{apart}"
    if sold:
        return PriceBasis.MIXED, kept, (
            f"only {_count(len(sold), 'sold comp')} ({minimum_comps} needed for a sold "
            f"price), so mixed with {_count(asking, 'asking price')}"
        )
    return PriceBasis.ASKING, kept, (
        "no sold comps: asking prices only, which run above what items sell for"
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _ordered(exclusions: list[Exclusion]) -> tuple[Exclusion, ...]:
    return tuple(sorted(exclusions, key=lambda e: (e.reason, e.listing_key, e.detail)))

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
   (a sale without a date is not aged; asking prices never are). There is no
   floor: a sale one half-life older weighs half as much at any age. Only
   past about 1,075 half-lives does the factor reach a float's 0, and a band
   whose comps all weigh 0 has no estimate.
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
import numbers
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from typing import TypeVar

import numpy as np

from restyle._errors import ConfigurationError
from restyle._types import (
    MAXIMUM_PRICE,
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

__all__ = [
    "MAXIMUM_HALF_LIFE_DAYS",
    "MAXIMUM_MINIMUM_COMPS",
    "MAXIMUM_PRICE",
    "MINIMUM_COMPS",
    "MINIMUM_HALF_LIFE_DAYS",
    "UNSEEN_WEIGHT",
    "check_half_life_days",
    "check_minimum_comps",
    "estimate_price",
    "weighted_quantile",
]

#: Fewest comps an estimate may rest on.
MINIMUM_COMPS = 3
#: Weight of a comp whose image could not be compared with the photo.
UNSEEN_WEIGHT = 0.25
#: Days after which a sold comp weighs half what a sale of today would.
DEFAULT_HALF_LIFE_DAYS = 30.0
#: The half-lives ``estimate_price`` accepts, in days: an hour to a century
#: (beyond a century, sales of any real catalog weigh about the same).
MINIMUM_HALF_LIFE_DAYS = 1 / 24
MAXIMUM_HALF_LIFE_DAYS = 36_525.0
#: The largest ``minimum_comps``: far more comps than any search returns.
MAXIMUM_MINIMUM_COMPS = 10_000
#: Fewest prices before outliers are looked for: with three, the fences say nothing.
_OUTLIER_MINIMUM = 4


_CENT = Decimal("0.01")
# The arithmetic runs in its own context: a caller's decimal.getcontext()
# (a lower precision, other traps) must not change or break an estimate.
_CONTEXT = decimal.Context(prec=34, rounding=ROUND_HALF_UP)
_N = TypeVar("_N", float, Decimal)


def weighted_quantile(values: Sequence[_N], weights: Sequence[float], q: float) -> _N:
    """The smallest value whose cumulative weight reaches ``q`` of the total
    (the lower weighted quantile; the midpoint when exactly on a boundary).

    Pairs are sorted by value and then weight, so the answer does not depend
    on the order the values come in. Values of weight 0 play no part.
    """
    if not values or len(values) != len(weights):
        raise ValueError("weighted_quantile needs as many weights as values, and at least one")
    pairs = sorted((v, w) for v, w in zip(values, weights, strict=True) if w > 0)
    if not pairs:
        raise ValueError("weighted_quantile needs at least one positive weight")
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
    if len(priced) < minimum_comps or not any(p.weight > 0 for p in priced):
        # Too few comps, or only sales so old that they weigh nothing (rule 8).
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
    top = max(weights, default=0.0)
    if not top > 0:
        return 0.0
    # Scaled to the largest weight (the ratio does not change): squares of the
    # tiny weights of old sales would underflow to 0.
    scaled = [w / top for w in weights]
    total = math.fsum(scaled)
    return round(total * total / math.fsum(w * w for w in scaled), 3)


def _sort_key(priced: PricedComp) -> tuple[Decimal, float, str]:
    return (priced.price.amount, -priced.weight, priced.listing_key)


def recency_factor(sold_at: datetime, now: datetime, half_life_days: float) -> float:
    """``0.5 ** (age_days / half_life_days)``: 1 for a sale at ``now`` (or
    after it), one half ``half_life_days`` before it, a quarter two half-lives
    before it, and so on at any age.

    There is deliberately no floor: with one, every sale past the floor would
    weigh the same, and the oldest of them would pull an estimate as hard as
    the most recent. Without it a sale 40 half-lives old still weighs half one
    39 half-lives old. The factor loses precision past about 1,022 half-lives
    and is 0.0 past about 1,075 (a float's limit): such a sale weighs nothing.
    """
    age_days = max(0.0, (_aware(now) - _aware(sold_at)).total_seconds() / 86400.0)
    return float(0.5 ** (age_days / half_life_days))


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

    ``comps`` is a list or tuple of :class:`~restyle.Comp`; ``minimum_comps`` a
    whole number from 1 to :data:`MAXIMUM_MINIMUM_COMPS`; ``half_life_days`` a
    number of days from :data:`MINIMUM_HALF_LIFE_DAYS` (an hour) to
    :data:`MAXIMUM_HALF_LIFE_DAYS` (a century). ``now`` is the moment sold
    comps' ages are counted from (the current time by default; a naive time is
    taken as UTC). Any other argument is a :class:`~restyle.ConfigurationError`
    naming it, raised before any comp is looked at.
    """
    comps = _checked_comps(comps)
    minimum_comps = check_minimum_comps(minimum_comps)
    half_life_days = check_half_life_days(half_life_days)
    if now is not None and not isinstance(now, datetime):
        raise ConfigurationError(
            f"now must be a datetime or None, got {type(now).__name__}")
    as_of = datetime.now(timezone.utc) if now is None else _aware(now)
    with decimal.localcontext(_CONTEXT):
        return _estimate(comps, minimum_comps, half_life_days, as_of)


def _checked_comps(comps: object) -> Sequence[Comp]:
    if isinstance(comps, (str, bytes, bytearray)) or not isinstance(comps, Sequence):
        raise ConfigurationError(
            f"comps must be a list or tuple of Comp, got {type(comps).__name__}")
    for position, item in enumerate(comps):
        if not isinstance(item, Comp):
            raise ConfigurationError(
                f"comps must be a list or tuple of Comp; comps[{position}] is a "
                f"{type(item).__name__}")
    return comps


def _not_a(what: str, value: object, name: str) -> ConfigurationError:
    """The error for a setting ``name`` given ``value``, which is not ``what``."""
    return ConfigurationError(f"{name} must be {what}, got {type(value).__name__} {value!r}")


def check_minimum_comps(value: object, name: str = "minimum_comps") -> int:
    """``value`` as the fewest comps a price may rest on, or a ConfigurationError
    naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise _not_a("a whole number", value, name)
    count = int(value)
    if not 1 <= count <= MAXIMUM_MINIMUM_COMPS:
        raise ConfigurationError(
            f"{name} must be from 1 to {MAXIMUM_MINIMUM_COMPS}, got {value!r}")
    return count


def check_half_life_days(value: object, name: str = "half_life_days") -> float:
    """``value`` as a sold comp's half-life in days, or a ConfigurationError
    naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise _not_a("a number of days", value, name)
    try:
        days = float(value)
    except OverflowError:  # an int past a float's range
        days = math.inf
    if not (math.isfinite(days) and MINIMUM_HALF_LIFE_DAYS <= days <= MAXIMUM_HALF_LIFE_DAYS):
        raise ConfigurationError(
            f"{name} must be a positive number of days from {MINIMUM_HALF_LIFE_DAYS:.4g} "
            f"(an hour) to {MAXIMUM_HALF_LIFE_DAYS:g} (a century), got {value!r}")
    return days


def _estimate(comps: Sequence[Comp], minimum_comps: int, half_life_days: float,
              as_of: datetime) -> PriceEstimate:
    excluded: list[Exclusion] = []
    by_currency = _priced_by_currency(comps, half_life_days, as_of, excluded)
    aged = any(p.recency is not None for group in by_currency.values() for p in group)
    kept_by_currency = {currency: _kept(by_currency[currency], excluded)
                        for currency in sorted(by_currency)}
    overall = {currency: _band(currency, kept, minimum_comps)
               for currency, kept in kept_by_currency.items()}
    if not overall:
        return PriceEstimate(
            status=PriceStatus.NOT_ENOUGH_DATA, minimum_comps=minimum_comps,
            exclusions=_ordered(excluded), half_life_days=float(half_life_days),
        )
    currency = _chosen_currency(kept_by_currency, overall, excluded)
    kept = kept_by_currency[currency]
    basis, counted, detail = _basis(kept, minimum_comps)
    if basis is PriceBasis.SOLD:
        headline = _band(currency, counted, minimum_comps, sold=True)
        excluded.extend(_asking_exclusions(kept))
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
        bands=_bands(kept_by_currency, overall, minimum_comps),
        basis=basis,
        basis_detail=detail,
        half_life_days=float(half_life_days),
        as_of=as_of if aged else None,
    )


def _priced_by_currency(
    comps: Sequence[Comp], half_life_days: float, as_of: datetime,
    excluded: list[Exclusion],
) -> dict[str, list[PricedComp]]:
    """The priced comps, weighed and aged, by currency; the others go to
    ``excluded``."""
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
    return by_currency


def _kept(priced: list[PricedComp], excluded: list[Exclusion]) -> list[PricedComp]:
    """One currency's comps less their outliers (which go to ``excluded``),
    trimmed apart for sold prices and the others: two markets."""
    kept = []
    for sold in (True, False):
        part, outliers = _trim_outliers([p for p in priced if (p.sold is True) is sold])
        kept.extend(part)
        excluded.extend(outliers)
    kept.sort(key=_sort_key)
    return kept


def _bands(
    kept_by_currency: dict[str, list[PricedComp]], overall: dict[str, PriceBand],
    minimum_comps: int,
) -> tuple[PriceBand, ...]:
    """Each currency's overall band, then one a condition and one for sold and
    for unsold comps, where there are any."""
    bands: list[PriceBand] = []
    for currency, kept in kept_by_currency.items():
        bands.append(overall[currency])
        for condition in Condition:
            group = [p for p in kept if p.condition is condition]
            if group:
                bands.append(_band(currency, group, minimum_comps, condition=condition))
        for sold in (True, False):
            group = [p for p in kept if p.sold is sold]
            if group:
                bands.append(_band(currency, group, minimum_comps, sold=sold))
    return tuple(bands)


def _chosen_currency(
    kept_by_currency: dict[str, list[PricedComp]], overall: dict[str, PriceBand],
    excluded: list[Exclusion],
) -> str:
    """The currency with the most weight (then the most comps, then the first
    by name); the comps in the others go to ``excluded``."""
    weight_of = {c: math.fsum(p.weight for p in kept_by_currency[c]) for c in overall}
    currency = max(sorted(overall), key=lambda c: (weight_of[c], overall[c].comps_used))
    for other in sorted(overall):
        if other != currency:
            excluded.extend(
                Exclusion(listing_key=p.listing_key, reason="other_currency",
                          detail=f"priced in {other}, not {currency} (see the {other} band)")
                for p in kept_by_currency[other]
            )
    return currency


def _asking_exclusions(kept: list[PricedComp]) -> list[Exclusion]:
    """Why the comps not known to have sold are left out of a price on sales."""
    return [
        Exclusion(listing_key=p.listing_key, reason="asking_price",
                  detail=f"asking price {p.price}, not a sale (see the asking band)"
                  if p.sold is False else f"{p.price}, not known to have sold")
        for p in kept if p.sold is not True
    ]


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

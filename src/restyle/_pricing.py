"""The price estimate: a similarity-weighted median with outliers trimmed.

Rules, in order:

1. A comp counts only if it has a price and a positive score.
2. Only the currency carrying the most weight is used; comps in other
   currencies are excluded (never converted: rates would be a guess).
3. With at least four prices, prices outside Tukey's fences
   (Q1 - 1.5 IQR, Q3 + 1.5 IQR) are excluded as outliers.
4. The estimate is the weighted median, the range the weighted 25th to 75th
   percentile, each comp weighted by its score.
5. Fewer than ``minimum_comps`` (default :data:`MINIMUM_COMPS`) comps left:
   the answer is ``not_enough_data``, with no amounts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal

import numpy as np

from restyle._types import Comp, PriceEstimate, PriceStatus

__all__ = ["MINIMUM_COMPS", "estimate_price", "weighted_quantile"]

#: Fewest usable comps an estimate may rest on.
MINIMUM_COMPS = 3

_CENT = Decimal("0.01")


def weighted_quantile(
    values: Sequence[float] | np.ndarray, weights: Sequence[float] | np.ndarray, q: float
) -> float:
    """The smallest value whose cumulative weight reaches ``q`` of the total
    (the lower weighted quantile; midpoint when exactly on a boundary)."""
    order = np.argsort(values, kind="stable")
    v = np.asarray(values, dtype=float)[order]
    w = np.asarray(weights, dtype=float)[order]
    cumulative = np.cumsum(w)
    target = q * cumulative[-1]
    i = int(np.searchsorted(cumulative, target - 1e-12 * cumulative[-1]))
    i = min(i, len(v) - 1)
    if np.isclose(cumulative[i], target) and i + 1 < len(v):
        return float((v[i] + v[i + 1]) / 2)
    return float(v[i])


def estimate_price(comps: Sequence[Comp], *, minimum_comps: int = MINIMUM_COMPS) -> PriceEstimate:
    """Estimate a price from ``comps`` following the module's rules."""
    excluded: list[str] = []
    by_currency: dict[str, list[Comp]] = defaultdict(list)
    for comp in comps:
        key = comp.listing.key
        if comp.listing.price is None:
            excluded.append(f"{key}: no price")
        elif comp.score <= 0:
            excluded.append(f"{key}: does not look like the photo (score {comp.score:.2f})")
        else:
            by_currency[comp.listing.price.currency].append(comp)
    if not by_currency:
        return PriceEstimate(
            status=PriceStatus.NOT_ENOUGH_DATA, minimum_comps=minimum_comps,
            excluded=tuple(excluded),
        )
    currency = max(
        sorted(by_currency),
        key=lambda c: (sum(x.score for x in by_currency[c]), len(by_currency[c])),
    )
    for other, group in sorted(by_currency.items()):
        if other != currency:
            excluded.extend(f"{c.listing.key}: priced in {other}, not {currency}" for c in group)
    used = by_currency[currency]
    prices = np.array([float(c.listing.price.amount) for c in used])  # type: ignore[union-attr]
    if len(used) >= 4:
        q1, q3 = np.percentile(prices, [25, 75])
        fence = 1.5 * (q3 - q1)
        keep = (prices >= q1 - fence) & (prices <= q3 + fence)
        excluded.extend(
            f"{c.listing.key}: outlier price {c.listing.price}"  # type: ignore[union-attr]
            for c, k in zip(used, keep, strict=True)
            if not k
        )
        used = [c for c, k in zip(used, keep, strict=True) if k]
        prices = prices[keep]
    if len(used) < minimum_comps:
        return PriceEstimate(
            status=PriceStatus.NOT_ENOUGH_DATA, currency=currency, comps_used=len(used),
            minimum_comps=minimum_comps, excluded=tuple(excluded),
        )
    weights = np.array([c.score for c in used])
    effective = float(weights.sum() ** 2 / (weights**2).sum())

    def money(x: float) -> Decimal:
        return Decimal(repr(x)).quantize(_CENT, rounding=ROUND_HALF_UP)

    return PriceEstimate(
        status=PriceStatus.OK,
        currency=currency,
        estimate=money(weighted_quantile(prices, weights, 0.5)),
        low=money(weighted_quantile(prices, weights, 0.25)),
        high=money(weighted_quantile(prices, weights, 0.75)),
        comps_used=len(used),
        effective_weight=round(effective, 3),
        minimum_comps=minimum_comps,
        excluded=tuple(excluded),
    )

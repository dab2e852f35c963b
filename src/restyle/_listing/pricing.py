"""The asking price: where in the estimate's range the strategy puts it,
rounded as resellers price (docs/listing.md, "The price")."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from restyle._listing.values import DraftPrice, PriceStrategy
from restyle._types import Money, PriceEstimate

__all__ = ["STRATEGY_POINTS", "asking_price", "reseller_round"]

#: How far each strategy goes from the estimate: towards the low end
#: (negative, a share of estimate - low) or the high end (a share of high - estimate).
STRATEGY_POINTS: dict[PriceStrategy, Decimal] = {
    PriceStrategy.QUICK: Decimal("-0.75"),
    PriceStrategy.MARKET: Decimal(0),
    PriceStrategy.PATIENT: Decimal("0.5"),
}

_CENT = Decimal("0.01")


def reseller_round(amount: Decimal) -> Decimal:
    """``amount`` to the nearest whole step (1 below 100, 5 below 1000, else
    10), less a cent: 23.40 gives 22.99, 143 gives 144.99. Never below 0.99."""
    step = Decimal(1) if amount < 100 else Decimal(5) if amount < 1000 else Decimal(10)
    whole = (amount / step).quantize(Decimal(1), rounding=ROUND_HALF_UP) * step
    return max(step, whole) - _CENT


def asking_price(price: PriceEstimate, strategy: PriceStrategy, *,
                 currency: str | None = None) -> tuple[DraftPrice, list[str]]:
    """The draft's price for ``strategy``, only when the estimate is ok and in
    ``currency`` (the marketplace's, when given); otherwise None and why."""
    if not price.ok or price.estimate is None or price.currency is None:
        why = (f"no price: not enough comparable listings ({price.comps_used} usable, "
               f"{price.minimum_comps} needed); price it by hand")
        return DraftPrice(amount=None, strategy=strategy, basis=""), [why]
    if currency is not None and price.currency != currency:
        why = (f"no price: the estimate is in {price.currency}, the marketplace lists in "
               f"{currency}")
        return DraftPrice(amount=None, strategy=strategy, basis=""), [why]
    estimate = price.estimate
    low = price.low if price.low is not None else estimate
    high = price.high if price.high is not None else estimate
    point = STRATEGY_POINTS[strategy]
    raw = estimate + point * (estimate - low) if point < 0 else estimate + point * (high - estimate)
    amount = reseller_round(raw)
    basis = (f"{strategy.value}: {raw.quantize(_CENT)} from the estimate {estimate} "
             f"(range {low}-{high}, {price.comps_used} comps"
             f"{', ' + price.basis.value + ' prices' if price.basis else ''}), rounded")
    return DraftPrice(amount=Money(amount=amount, currency=price.currency), strategy=strategy,
                      basis=basis), []

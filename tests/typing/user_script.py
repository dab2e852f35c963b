"""What an application writes against restyle's public API; checked with mypy --strict."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import restyle
from restyle import (
    Analysis,
    BuildReport,
    Comp,
    CompFlag,
    Engine,
    Identification,
    Listing,
    Money,
    PriceEstimate,
    RestyleError,
)
from restyle.cli import main


def cheapest_alike(analysis: Analysis) -> Comp | None:
    alike = [c for c in analysis.comps if CompFlag.BELOW_CUTOFF not in c.flags]
    priced = [c for c in alike if c.listing.price is not None]
    return min(priced, key=lambda c: c.listing.price.amount if c.listing.price else Decimal(0),
               default=None)


def headline(price: PriceEstimate) -> str:
    if not price.ok or price.estimate is None:
        return "not enough data"
    return f"{price.estimate} {price.currency} ({price.low} to {price.high})"


def run(photos: list[Path]) -> int:
    engine = Engine(deadline=20.0, max_comps=20)
    report: BuildReport = engine.build_catalog(Path("listings.jsonl"), progress=False)
    print(report.added)
    results: list[Analysis | RestyleError] = engine.analyze_many(photos, return_exceptions=True)
    for result in results:
        if isinstance(result, RestyleError):
            print(f"failed: {result}")
            continue
        ident: Identification = result.identification
        best = cheapest_alike(result)
        listing: Listing | None = best.listing if best is not None else None
        print(ident.brand, headline(result.price), listing.title if listing else "-")
    money = Money(amount=Decimal("12.50"), currency="USD")
    print(money, restyle.__version__)
    return main(["plugins", "--json"])

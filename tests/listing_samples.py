"""Analyses to make drafts of: an identification with its evidence, the
item's photos and their roles, and a price estimate."""

from __future__ import annotations

from decimal import Decimal

from restyle import (
    Analysis,
    Attribute,
    Evidence,
    Identification,
    Observation,
    Opinion,
    PhotoInfo,
    PhotoRole,
    PriceEstimate,
    PriceStatus,
)
from restyle._types import PriceBasis

FIELDS = {"brand": "Levi's", "product_name": "Trucker Jacket", "category": "jacket",
          "color": "blue", "material": "denim", "size": "M"}


def identification(fields: dict[str, str] | None = None, *, backed: bool = True
                   ) -> Identification:
    """An identification of ``fields``, each backed by an expert's evidence
    when ``backed``."""
    fields = dict(FIELDS if fields is None else fields)
    main = {k: fields.pop(k) for k in ("brand", "product_name", "category") if k in fields}
    evidence = tuple(
        Evidence(field=name, value=value, expert="google-vision", score=0.9, photo=0)
        for name, value in {**main, **fields}.items()) if backed else ()
    return Identification(
        **main, attributes=tuple(Attribute(name=k, value=v, confidence=0.8)
                                 for k, v in fields.items()),
        confidence=0.8, evidence=evidence, synthesizer="consensus")


def photo(index: int, role: PhotoRole) -> PhotoInfo:
    return PhotoInfo(sha256=f"{index:064x}", width=800, height=600, format="JPEG",
                     index=index, role=role)


def estimate(ok: bool = True, currency: str = "USD") -> PriceEstimate:
    if not ok:
        return PriceEstimate(status=PriceStatus.NOT_ENOUGH_DATA, comps_used=1)
    return PriceEstimate(status=PriceStatus.OK, currency=currency, estimate=Decimal("42.10"),
                         low=Decimal("30.00"), high=Decimal("60.00"), comps_used=7,
                         basis=PriceBasis.SOLD)


def analysis(ident: Identification | None = None, *, flaw: str | None = "a brown stain",
             price: PriceEstimate | None = None, opinions: tuple[Opinion, ...] = ()
             ) -> Analysis:
    """An analysis of three photos (whole, tag, and a flaw that shows ``flaw``;
    only two photos when ``flaw`` is None)."""
    photos = [photo(0, PhotoRole.WHOLE), photo(1, PhotoRole.TAG)]
    found = list(opinions)
    if flaw is not None:
        photos.append(photo(2, PhotoRole.FLAW))
        found.append(Opinion(expert="google-vision", photo=2,
                             labels=(Observation(text=flaw, score=0.7),)))
    return Analysis(photo=photos[0], photos=tuple(photos), opinions=tuple(found),
                    identification=ident or identification(), query=None, comps=(),
                    price=price or estimate())

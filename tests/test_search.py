"""Query relaxation per marketplace, and merging results across marketplaces, through the Engine."""

from __future__ import annotations

import time
from decimal import Decimal

import numpy as np
import pytest
from PIL import Image

from restyle import Attribute, Engine, Identification, Listing, Money, load_photo, relaxed_queries
from restyle._pipeline.search import search_marketplaces
from tests.fakes.components import ColorEncoder
from tests.fakes.marketplaces import StepMarketplace

IDENT = Identification(
    brand="Schott", product_name="Perfecto", category="jacket",
    attributes=(Attribute(name="model_number", value="618"),
                Attribute(name="color", value="black")),
)
IMAGE = Image.new("RGB", (48, 48), (20, 20, 20))
VECTOR = ColorEncoder().encode_images([IMAGE])[0]


def listings(market: str, *ids: str, image: str | None = None) -> list[Listing]:
    return [
        Listing(marketplace=market, listing_id=i, title=f"jacket {i}",
                price=Money(amount=Decimal("100"), currency="USD"),
                image_url=image or f"https://img.example/{market}/{i}.jpg")
        for i in ids
    ]


def engine(*markets: StepMarketplace, wanted: int = 5, max_comps: int = 30) -> Engine:
    return Engine(experts=[], marketplaces=list(markets), encoder=ColorEncoder(),
                  load_entrypoints=False, comps_wanted=wanted, max_comps=max_comps)


def test_relaxation_drops_model_number_then_attributes_then_product() -> None:
    steps = [(q.step, q.text) for q in relaxed_queries(IDENT)]
    assert steps == [
        ("full", "Schott Perfecto 618 black"),
        ("no-model-number", "Schott Perfecto black"),
        ("no-attributes", "Schott Perfecto"),
        ("brand-category", "Schott jacket"),
        ("category", "jacket"),
        ("any", ""),
    ]
    first = next(relaxed_queries(IDENT))
    assert first.model_number == "618" and first.attributes == ("black",)
    # without a model number the step that drops it would repeat "full" and is skipped
    plain = Identification(brand="Schott", product_name="Perfecto", category="jacket")
    assert [q.step for q in relaxed_queries(plain)][:2] == ["full", "brand-category"]


def test_each_comp_records_the_step_that_found_it() -> None:
    market = StepMarketplace("a", {
        "full": listings("a", "1"),
        "no-model-number": listings("a", "1", "2"),
        "no-attributes": [],
        "brand-category": listings("a", "3", "4", "5", "6"),
        "category": listings("a", "7"),
    }, vector=VECTOR)
    comps = engine(market).find_comps(IMAGE, IDENT)
    assert market.steps == ["full", "no-model-number", "no-attributes", "brand-category"]
    steps = {c.listing.listing_id: c.query_step for c in comps}
    assert steps == {"1": "full", "2": "no-model-number", "3": "brand-category",
                     "4": "brand-category", "5": "brand-category", "6": "brand-category"}
    assert all(c.similarity == pytest.approx(1.0) for c in comps)


def test_each_marketplace_relaxes_on_its_own() -> None:
    plenty = StepMarketplace("a", {"full": listings("a", *"12345")}, vector=VECTOR)
    sparse = StepMarketplace("b", {"category": listings("b", "x", "y")}, vector=VECTOR)
    comps = engine(plenty, sparse).find_comps(IMAGE, IDENT)
    assert plenty.steps == ["full"]
    assert sparse.steps == ["full", "no-model-number", "no-attributes", "brand-category",
                            "category", "any"]
    assert {c.listing.key for c in comps} == {*(f"a:{i}" for i in "12345"), "b:x", "b:y"}
    assert {c.query_step for c in comps if c.listing.marketplace == "b"} == {"category"}


def test_merge_drops_repeated_items_and_images() -> None:
    shared = "https://img.example/same-photo.jpg"
    a = StepMarketplace("a", {"full": listings("a", "2", image=shared) + listings("a", "1")},
                        vector=VECTOR)
    b = StepMarketplace("b", {"full": listings("b", "9", image=shared) + listings("b", "8")},
                        vector=VECTOR)
    comps = engine(a, b, wanted=2).find_comps(IMAGE, IDENT)
    keys = sorted(c.listing.key for c in comps)
    assert keys == ["a:1", "a:2", "b:8"]


def test_merge_interleaves_marketplaces_within_the_limit() -> None:
    a = StepMarketplace("a", {"full": listings("a", *"123456")}, vector=VECTOR)
    b = StepMarketplace("b", {"full": listings("b", *"123456")}, vector=VECTOR)
    result = search_marketplaces(
        [a, b], load_photo(IMAGE), IDENT, embedding=VECTOR, model_id="m", wanted=5, limit=6,
        deadline=time.monotonic() + 10,
    )
    found, query = result.found, result.query
    assert [f.listing.key for f in found] == ["a:1", "b:1", "a:2", "b:2", "a:3", "b:3"]
    assert query is not None and query.step == "full"


def test_a_failing_marketplace_keeps_what_it_found_and_warns() -> None:
    a = StepMarketplace("a", {"full": listings("a", "1")}, vector=VECTOR,
                        fail_at="no-model-number")
    b = StepMarketplace("b", {"full": listings("b", "1"), "no-attributes": listings("b", "2")},
                        vector=VECTOR)
    result = search_marketplaces(
        [a, b], load_photo(IMAGE), IDENT, embedding=VECTOR, model_id="m", wanted=2, limit=10,
        deadline=time.monotonic() + 10,
    )
    assert [f.listing.key for f in result.found] == ["a:1", "b:1", "b:2"]
    assert result.warnings == ("marketplace a failed: RuntimeError: a is down",)
    assert a.steps == ["full", "no-model-number"]


def test_analysis_prices_the_merged_comps() -> None:
    a = StepMarketplace("a", {"full": listings("a", "1", "2")}, vector=VECTOR)
    b = StepMarketplace("b", {"brand-category": listings("b", "3")}, vector=VECTOR)
    comps = engine(a, b, wanted=2).find_comps(IMAGE, IDENT)
    from restyle import estimate_price

    price = estimate_price(comps)
    assert price.ok and price.estimate == Decimal("100.00") and price.comps_used == 3
    assert np.isclose(price.effective_weight, 3.0)

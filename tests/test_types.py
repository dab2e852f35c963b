"""Pipeline values: validation and JSON round trips."""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal

import pytest

from restyle import (
    Analysis,
    Attribute,
    Box,
    Comp,
    Condition,
    Evidence,
    Identification,
    Listing,
    Money,
    Observation,
    Opinion,
    OpinionStatus,
    PhotoInfo,
    PriceEstimate,
    PriceStatus,
    Query,
)


def sample_analysis() -> Analysis:
    listing = Listing(
        marketplace="ebay", listing_id="v1|123|0", title="Levi's 501 jeans <b>W32</b>",
        price=Money(amount="24.99", currency="usd"), image_url="https://i.example/1.jpg",
        brand="Levi's", condition=Condition.USED, shipping=Money(amount=Decimal("5"),
                                                                  currency="USD"), sold=True,
    )
    return Analysis(
        photo=PhotoInfo(sha256="ab" * 32, width=640, height=480, format="JPEG", source="j.jpg"),
        opinions=(
            Opinion(expert="clip", labels=(Observation(text="jeans", score=0.8, facet="category",
                                                       box=Box(left=0.1, top=0.2, width=0.5,
                                                               height=0.5), raw_score=0.31),)),
            Opinion.failure("google-vision", "HTTP 429", status=OpinionStatus.TIMEOUT,
                            latency=1.5),
        ),
        identification=Identification(
            brand="Levi's", category="jeans", attributes=(Attribute(name="color", value="blue",
                                                                    confidence=0.4),),
            confidence=0.7, evidence=(Evidence(field="brand", value="Levi's", expert="catalog",
                                               score=0.9),),
            synthesizer="consensus", suggested_photos=("the inside tag",),
        ),
        query=Query(text="Levi's jeans", brand="Levi's", min_price=Decimal("10"),
                    condition=Condition.USED),
        comps=(Comp(listing=listing, score=0.9, similarity=0.9, flags=("x",)),),
        price=PriceEstimate(status=PriceStatus.OK, currency="USD", estimate=Decimal("24.99"),
                            low=Decimal("20"), high=Decimal("30"), comps_used=3),
        warnings=("marketplace ebay failed",),
    )


def test_analysis_round_trips_through_json() -> None:
    analysis = sample_analysis()
    text = analysis.to_json()
    assert json.loads(text)["comps"][0]["listing"]["price"] == {"amount": "24.99",
                                                                "currency": "USD"}
    again = Analysis.from_json(text)
    assert again == analysis
    assert isinstance(again.comps[0].listing.price.amount, Decimal)
    assert again.opinions[1].status is OpinionStatus.TIMEOUT
    assert again.failed_experts == {"google-vision": "HTTP 429"}


def test_values_are_frozen_and_keyword_only() -> None:
    money = Money(amount="1.50", currency="EUR")
    with pytest.raises(dataclasses.FrozenInstanceError):
        money.amount = Decimal(2)  # type: ignore[misc]
    with pytest.raises(TypeError):
        Money("1", "EUR")  # type: ignore[misc]


@pytest.mark.parametrize("amount", ["-1", "NaN", "Infinity", "abc", None])
def test_money_rejects_bad_amounts(amount: object) -> None:
    with pytest.raises(ValueError):
        Money(amount=amount, currency="USD")  # type: ignore[arg-type]


@pytest.mark.parametrize("currency", ["US", "usdx", "12$", ""])
def test_money_rejects_bad_currencies(currency: str) -> None:
    with pytest.raises(ValueError):
        Money(amount="1", currency=currency)


def test_money_from_float_keeps_the_written_value() -> None:
    assert Money(amount=0.1, currency="USD").amount == Decimal("0.1")  # type: ignore[arg-type]


@pytest.mark.parametrize("score", [-0.01, 1.01, float("nan"), float("inf")])
def test_scores_must_lie_in_unit_interval(score: float) -> None:
    with pytest.raises(ValueError):
        Observation(text="x", score=score)
    with pytest.raises(ValueError):
        Identification(confidence=score)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("New with tags", Condition.NEW), ("Pre-owned", Condition.USED),
     ("For parts or not working", Condition.FOR_PARTS), ("Like New", Condition.LIKE_NEW),
     ("", Condition.UNKNOWN), ("mystery", Condition.UNKNOWN), ("Open box", Condition.LIKE_NEW)],
)
def test_condition_parse(text: str, expected: Condition) -> None:
    assert Condition.parse(text) is expected


def test_from_dict_rejects_wrong_types() -> None:
    data = sample_analysis().to_dict()
    data["identification"]["confidence"] = "high"
    with pytest.raises((TypeError, ValueError)):
        Analysis.from_dict(data)


def test_secrets_never_show_themselves() -> None:
    from restyle._secrets import REDACTED, Secret, redact

    secret = Secret("sk-sentinel-123")
    assert "sk-sentinel" not in repr(secret) and "sk-sentinel" not in str(secret)
    assert "sk-sentinel" not in f"{secret!r} {[secret]}"
    assert secret.reveal() == "sk-sentinel-123"
    message = "bad key sk-sentinel-123 for id app-42"
    assert redact(message, secret, "app-42") == f"bad key {REDACTED} for id {REDACTED}"
    assert redact("a b c", "b", None) == "a b c"  # too short to be a secret worth hiding

"""The consensus synthesizer: votes, calibrated confidence, evidence and suggested photos."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from restyle import Observation, Opinion, OpinionStatus
from restyle._taxonomy import (
    clean_text,
    map_category,
    map_facet_term,
    model_numbers,
    sizes,
)
from restyle.synthesizers.consensus import SUGGESTIONS, ConsensusSynthesizer, supporters


def obs(text: str, score: float = 0.9, facet: str | None = None) -> Observation:
    return Observation(text=text, score=score, facet=facet)


def google(**groups: tuple[Observation, ...]) -> Opinion:
    return Opinion(expert="google-vision", **groups)


def synthesize(*opinions: Opinion):
    return ConsensusSynthesizer().synthesize(list(opinions))


GOOGLE = google(
    entities=(obs("Nike", 0.92), obs("Nike Air Max 90", 0.81), obs("Sneakers", 0.7),
              obs("Shoe", 0.6)),
    logos=(obs("Nike", 0.95),),
    objects=(obs("Shoe", 0.9),),
    texts=(obs("NIKE AIR\nCW2288-111  US 9.5", 0.0),),
    pages=(obs("Nike Air Max 90 White - Size 9.5 | eBay", 0.0),),
)
AWS = Opinion(
    expert="aws-rekognition",
    labels=(obs("Sneaker", 0.97), obs("Footwear", 0.99), obs("White", 0.8, "color")),
    texts=(obs("NIKE", 0.88),),
)
CATALOG = Opinion(
    expert="catalog",
    entities=(obs("Nike", 0.8, "brand"), obs("Nike Air Max 90 white, size 9.5", 0.8, "product"),
              obs("sneakers", 0.8, "category")),
)


def test_one_expert_alone_never_reaches_high_confidence() -> None:
    ident = synthesize(GOOGLE)
    assert ident.brand == "Nike"
    assert ident.product_name == "Nike Air Max 90"
    assert ident.category == "sneakers"
    assert 0 < ident.confidence <= 0.5


def test_agreement_between_independent_experts_raises_confidence() -> None:
    alone = synthesize(GOOGLE).confidence
    two = synthesize(GOOGLE, AWS).confidence
    three = synthesize(GOOGLE, AWS, CATALOG).confidence
    assert alone < two < three
    assert three > 0.7


def test_evidence_lists_every_supporting_expert_with_its_score() -> None:
    ident = synthesize(GOOGLE, AWS, CATALOG)
    brand = {e.expert: e.score for e in ident.evidence_for("brand")}
    assert brand == {"google-vision": 0.95, "aws-rekognition": 0.88, "catalog": 0.8}
    assert all(e.value == "Nike" for e in ident.evidence_for("brand"))
    category = {e.expert for e in ident.evidence_for("category")}
    assert category == {"google-vision", "aws-rekognition", "catalog"}
    assert {e.expert for e in ident.evidence_for("color")} == {"aws-rekognition"}


def test_attributes_are_read_from_text_on_the_item() -> None:
    ident = synthesize(GOOGLE, AWS)
    assert ident.attribute("model_number") == "CW2288-111"
    assert ident.attribute("size") == "US 9.5"
    assert ident.attribute("color") == "white"


def test_conflicting_brands_ask_for_a_photo_of_the_label() -> None:
    adidas = Opinion(expert="catalog", entities=(obs("Adidas", 0.9, "brand"),))
    nike = Opinion(expert="google-vision", logos=(obs("Nike", 0.9),))
    ident = synthesize(nike, adidas)
    assert ident.brand in {"Nike", "Adidas"}
    assert SUGGESTIONS["brand"] in ident.suggested_photos
    assert ident.confidence <= 0.5


def test_conflicting_model_numbers_ask_for_a_photo_of_the_tag() -> None:
    one = google(texts=(obs("CW2288-111", 0.9),), logos=(obs("Nike", 0.9),))
    other = Opinion(expert="aws-rekognition", texts=(obs("DD1391-100", 0.9),),
                    labels=(obs("Nike", 0.9, "brand"),))
    ident = synthesize(one, other)
    assert ident.brand == "Nike"
    assert ident.suggested_photos == (SUGGESTIONS["product_name"],)


def test_agreement_asks_for_nothing_and_a_weak_runner_up_is_no_conflict() -> None:
    weak = Opinion(expert="catalog", entities=(obs("Adidas", 0.3, "brand"),))
    ident = synthesize(GOOGLE, AWS, weak)
    assert ident.brand == "Nike"
    assert SUGGESTIONS["brand"] not in ident.suggested_photos


def test_no_brand_at_all_asks_for_the_label() -> None:
    ident = synthesize(Opinion(expert="clip", labels=(obs("jacket", 0.6, "category"),)))
    assert ident.brand is None
    assert ident.suggested_photos == (SUGGESTIONS["brand"],)


def test_failed_experts_are_ignored() -> None:
    failed = Opinion.failure("aws-rekognition", "ThrottlingException", status=OpinionStatus.ERROR)
    with_failure, without = synthesize(GOOGLE, failed), synthesize(GOOGLE)
    assert replace(with_failure, summary="") == replace(without, summary="")
    assert "from 1 of 2 experts" in with_failure.summary
    assert synthesize(failed).brand is None
    assert synthesize().confidence == 0.0


def test_same_answer_whatever_the_order_of_opinions() -> None:
    opinions = [GOOGLE, AWS, CATALOG]
    expected = ConsensusSynthesizer().synthesize(opinions).to_dict()
    rng = random.Random(7)
    for _ in range(5):
        rng.shuffle(opinions)
        assert ConsensusSynthesizer().synthesize(opinions).to_dict() == expected


def test_entities_are_told_apart_as_brands_products_and_categories() -> None:
    ident = synthesize(google(entities=(obs("Levi Strauss & Co.", 0.8),
                                        obs("Levi Strauss & Co. 501 Original", 0.7),
                                        obs("Jeans", 0.9), obs("Denim", 0.6))))
    assert ident.brand == "Levi Strauss & Co."
    assert ident.product_name == "Levi Strauss & Co. 501 Original"
    assert ident.category == "jeans"
    assert ident.attribute("material") == "denim"


def test_a_product_line_beside_a_logo_is_not_a_brand() -> None:
    ident = synthesize(google(entities=(obs("Nike Air Max", 1.0), obs("Nike Air Max 90", 0.25)),
                              logos=(obs("Nike", 0.88, "brand"),)))
    assert ident.brand == "Nike"
    assert ident.product_name == "Nike Air Max"


def test_a_brand_read_in_the_text_by_another_expert_counts_as_agreement() -> None:
    logo_only = google(logos=(obs("Patagonia", 0.9),))
    reader = Opinion(expert="aws-rekognition", texts=(obs("PATAGONIA  MADE IN VIETNAM", 0.95),))
    ident = synthesize(logo_only, reader)
    assert {e.expert for e in ident.evidence_for("brand")} == {"google-vision", "aws-rekognition"}
    assert ident.evidence_for("brand")[0].score == 0.95  # aws, sorted by expert name


scores = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
texts = st.sampled_from(["Nike", "Adidas", "Nike Air Max", "jacket", "Sneakers", "blue",
                         "Leather", "CW2288-111", "SIZE M", "Kestrel runner", "Shoe"])
facets = st.sampled_from([None, "brand", "product", "category", "color", "material"])
observations = st.lists(st.builds(Observation, text=texts, score=scores, facet=facets),
                        max_size=8).map(tuple)


@settings(max_examples=60, deadline=None)
@given(labels=observations, entities=observations, logos=observations, texts_=observations)
def test_no_single_expert_can_exceed_half_confidence(labels, entities, logos, texts_) -> None:
    opinion = Opinion(expert="solo", labels=labels, entities=entities, logos=logos, texts=texts_)
    ident = ConsensusSynthesizer().synthesize([opinion])
    assert 0.0 <= ident.confidence <= 0.5
    assert all(a.confidence <= 0.5 for a in ident.attributes)
    assert all(e.expert == "solo" for e in ident.evidence)


def test_supporters_checks_a_value_against_what_experts_saw() -> None:
    found = supporters([GOOGLE, AWS, CATALOG], "brand", "Nike")
    assert {e.expert for e in found} == {"google-vision", "aws-rekognition", "catalog"}
    assert supporters([GOOGLE, AWS], "brand", "Gucci") == []
    assert {e.expert for e in supporters([GOOGLE, AWS], "category", "sneakers")} == {
        "google-vision", "aws-rekognition"}


@pytest.mark.parametrize(
    ("text", "category"),
    [("Sneakers", "sneakers"), ("sneaker", "sneakers"), ("Trainers", "sneakers"),
     ("blue denim jacket", "jacket"), ("T-Shirt", "t-shirt"), ("Purse", "handbag"),
     ("Footwear", None), ("Clothing", None), ("", None)],
)
def test_map_category(text: str, category: str | None) -> None:
    assert map_category(text) == category


def test_map_facet_term() -> None:
    assert map_facet_term("Gray") == ("color", "grey")
    assert map_facet_term("Leather") == ("material", "leather")
    assert map_facet_term("Shoe") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("SIZE: M", ["M"]), ("EU42", ["EU 42"]), ("us 9,5", ["US 9.5"]), ("W32 L34", ["W32 L34"]),
     ("XL", ["XL"]), ("MADE IN ITALY", [])],
)
def test_sizes(text: str, expected: list[str]) -> None:
    assert sizes(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("STYLE CW2288-111", ["CW2288-111"]), ("m990gl6", ["M990GL6"]), ("EU42 US9", []),
     ("RN 54867 CA 12345", []), ("100% COTTON", [])],
)
def test_model_numbers(text: str, expected: list[str]) -> None:
    assert model_numbers(text) == expected


def test_clean_text_strips_controls_and_caps_length() -> None:
    assert clean_text("a\x00b\u202ec\nd\te", limit=50) == "a b c d e"
    assert clean_text("x" * 100, limit=10) == "x" * 9 + "…"

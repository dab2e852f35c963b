"""Listing drafts made offline: the title, the generic item specifics, the
condition from the flaw photos, the price strategies, the description and
its checks, the JSON round trip and the CSV export."""

from __future__ import annotations

import csv
import io
import threading
import time
import unicodedata
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from restyle import Condition, ConfigurationError
from restyle._listing import (
    TITLE_LIMIT,
    AspectMode,
    AspectSpec,
    ListingDraft,
    PriceStrategy,
    build_title,
    drafts_csv,
    make_draft,
    match_value,
)
from restyle._listing.aspects import fill_aspects
from restyle._listing.pricing import reseller_round
from restyle._listing.text import clean, length, word_key
from tests.listing_samples import FIELDS, analysis, estimate, identification


def test_an_offline_draft_has_a_title_specifics_a_price_and_says_what_it_could_not_decide():
    draft = make_draft(analysis())
    assert draft.title == "Levi's Trucker Jacket M blue denim"
    assert draft.aspect("Brand") == ("Levi's",)
    assert draft.aspect("color") == ("blue",)
    assert draft.aspect("Type") == ("jacket",)
    assert draft.condition is Condition.USED  # a photo shows a flaw
    assert draft.condition_id == "3000"
    assert draft.condition_description == "Flaws shown in photo 3: stain."
    assert draft.price.amount is not None and str(draft.price.amount) == "41.99 USD"
    assert draft.category.category_id is None
    assert any("no category" in p and "offline" in p for p in draft.problems)
    assert not draft.ready
    assert "<p>Levi&#x27;s Trucker Jacket M blue denim</p>" in draft.description
    assert "<b>Condition:</b> Used. Flaws shown in photo 3: stain." in draft.description


def test_the_draft_round_trips_through_json_and_renders_in_a_notebook():
    draft = make_draft(analysis(), price="patient")
    again = ListingDraft.from_json(draft.to_json())
    assert again == draft
    html = draft._repr_html_()
    assert "Trucker Jacket" in html and "no category" in html
    assert "&lt;p&gt;Levi" in html  # the description is shown as text, never as live HTML


def test_words_the_evidence_does_not_support_stay_out_of_the_title_and_specifics():
    ident = identification({"brand": "Gucci", "category": "jacket"}, backed=False)
    draft = make_draft(analysis(ident))
    assert draft.title == ""
    assert draft.aspects == ()
    assert any("no title" in p for p in draft.problems)
    assert any("'Brand'" in p and "required" in p for p in draft.problems)


def test_each_strategy_prices_within_the_range_rounded_as_resellers_do():
    prices = {s: make_draft(analysis(), price=s).price.amount for s in PriceStrategy}
    amounts = [prices[s].amount for s in PriceStrategy]  # type: ignore[union-attr]
    assert amounts == [Decimal("32.99"), Decimal("41.99"), Decimal("50.99")]
    assert reseller_round(Decimal("143")) == Decimal("144.99")
    assert reseller_round(Decimal("0.20")) == Decimal("0.99")
    assert reseller_round(Decimal("2345")) == Decimal("2349.99")


def test_no_price_without_an_estimate_or_in_another_currency():
    draft = make_draft(analysis(price=estimate(ok=False)))
    assert draft.price.amount is None
    assert any("not enough comparable listings" in p for p in draft.problems)
    draft = make_draft(analysis(), currency="GBP")
    assert draft.price.amount is None
    assert any("in USD, the marketplace lists in GBP" in p for p in draft.problems)
    with pytest.raises(ConfigurationError, match="quick, market, patient"):
        make_draft(analysis(), price="cheap")


def test_a_given_condition_wins_and_a_new_item_says_no_flaws():
    draft = make_draft(analysis(flaw=None), condition="new with tags")
    assert draft.condition is Condition.NEW and draft.condition_id == "1000"
    assert draft.title.endswith(" New")
    assert draft.condition_description == ""
    unknown = make_draft(analysis(flaw=None))
    assert unknown.condition is Condition.UNKNOWN and unknown.condition_id is None
    assert any("condition is not known" in p for p in unknown.problems)


def test_selection_only_aspects_get_an_allowed_value_or_nothing():
    specs = [
        AspectSpec(name="Colour", mode=AspectMode.SELECTION_ONLY, values=("Gray", "Blue")),
        AspectSpec(name="Material", mode=AspectMode.SELECTION_ONLY, values=("Cotton",),
                   required=True),
        AspectSpec(name="Size", max_length=1),
        AspectSpec(name="Type", max_length=3),
        AspectSpec(name="Department", required=True, values=("Men", "Women")),
    ]
    aspects, problems = fill_aspects(identification(), specs)
    assert {a.name: a.values for a in aspects} == {"Colour": ("Blue",), "Size": ("M",)}
    assert any("'jacket' is longer than the 3 characters" in p for p in problems)
    assert any("'denim' is not one of the values" in p for p in problems)
    assert any("'Department'" in p and "required" in p for p in problems)
    assert any("'Material'" in p and "required" in p for p in problems)
    assert not any("'Size'" in p and "required" in p for p in problems)


def test_the_matching_rule():
    assert match_value("grey", ["Gray", "Blue"]) == "Gray"
    assert match_value("T shirt", ["T-Shirt"]) == "T-Shirt"
    assert match_value("jackets", ["Jacket"]) == "Jacket"
    assert match_value("LEVIS", ["Levi's"]) == "Levi's"
    assert match_value("navy", ["Blue"]) is None
    assert match_value("", ["Blue"]) is None


def test_multi_valued_aspects_take_each_allowed_part():
    ident = identification({"brand": "Acme", "material": "cotton, polyester / silk"})
    specs = [AspectSpec(name="Material", mode=AspectMode.SELECTION_ONLY, multi=True,
                        values=("Cotton", "Polyester"))]
    aspects, problems = fill_aspects(ident, specs)
    assert aspects[0].values == ("Cotton", "Polyester")
    assert any("'silk'" in p for p in problems)


def _written(answer: dict[str, Any]) -> Any:
    def writer(facts: Any) -> dict[str, Any]:
        assert facts["item_specifics"]["Brand"] == ["Levi's"]
        return answer
    return writer


def test_a_written_description_is_checked_against_the_evidence():
    answer = {"paragraphs": [
        "A classic blue denim trucker jacket in size M. Made of soft silk lining. "
        "Authentic vintage piece, see https://evil.example/x for more.",
        "<script>alert(1)</script> Fits true to size.",
    ], "highlights": ["Brand new with tags", "Size XL"]}
    draft = make_draft(analysis(), writer=_written(answer))
    assert draft.description_source == "written"
    assert "classic blue denim" in draft.description
    assert "silk" not in draft.description and "Authentic" not in draft.description
    assert "<script>" not in draft.description and "&lt;script&gt;" in draft.description
    assert "evil.example" not in draft.description and "href" not in draft.description
    removed = " ".join(draft.removed)
    for reason in ("material 'silk'", "claim 'authentic'", "a link", "claim 'brand new'",
                   "size 'XL'"):
        assert reason in removed


def test_a_writer_that_fails_or_answers_off_schema_leaves_the_template():
    def broken(facts: Any) -> Any:
        raise ConfigurationError("no key")

    draft = make_draft(analysis(), writer=broken)
    assert draft.description_source == "template"
    assert any("could not be written" in p for p in draft.problems)
    draft = make_draft(analysis(), writer=_written({"paragraphs": "x", "html": "<a>"}))
    assert draft.description_source == "template"


def test_a_stuck_writer_is_abandoned_at_the_deadline():
    release = threading.Event()

    def stuck(facts: Any) -> Any:
        release.wait(10)
        return {"paragraphs": ["late"]}

    started = time.monotonic()
    try:
        draft = make_draft(analysis(), writer=stuck, deadline=0.5)
    finally:
        release.set()
    assert time.monotonic() - started < 0.5 + 2.0
    assert draft.description_source == "template"


def test_csv_export_is_flat_and_safe_in_a_spreadsheet():
    drafts = [make_draft(analysis()),
              make_draft(analysis(identification({"brand": "=HYPERLINK(1)", "size": "L"})))]
    text = drafts_csv(drafts, labels=["SKU-1", "SKU-2"],
                      picture_urls=[["https://i.example/1.jpg", "https://i.example/2.jpg"], []])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows[0]["*Title"] == "Levi's Trucker Jacket M blue denim"
    assert rows[0]["*StartPrice"] == "41.99" and rows[0]["*ConditionID"] == "3000"
    assert rows[0]["C:Brand"] == "Levi's" and rows[0]["C:Color"] == "blue"
    assert rows[0]["PicURL"] == "https://i.example/1.jpg|https://i.example/2.jpg"
    assert rows[1]["C:Brand"] == "'=HYPERLINK(1)"


_TEXT = st.text(st.characters(codec="utf-8"), max_size=120)


@settings(max_examples=150, deadline=None)
@given(fields=st.dictionaries(st.sampled_from(sorted({*FIELDS, "pattern", "style",
                                                      "model_number"})), _TEXT),
       condition=st.sampled_from(list(Condition)),
       allowed=st.lists(_TEXT, max_size=6))
def test_titles_and_aspects_stay_within_ebay_s_rules_whatever_the_identification(
        fields: dict[str, str], condition: Condition, allowed: list[str]) -> None:
    ident = identification(fields)
    title = build_title(ident, condition)
    assert length(title) <= TITLE_LIMIT
    assert title == unicodedata.normalize("NFC", title)
    assert not any(unicodedata.category(c).startswith("C") for c in title)
    keys = [word_key(w) for w in title.split()]
    assert len(keys) == len(set(keys))
    said = " ".join(clean(v) for v in fields.values()).split()
    assert all(w in said or w in ("New", "Like", "For", "Parts") for w in title.split())
    specs = [AspectSpec(name=name, mode=AspectMode.SELECTION_ONLY, values=tuple(allowed),
                        multi=True) for name in ("Brand", "Color", "Size", "Material", "Type")]
    aspects, _ = fill_aspects(ident, specs)
    for aspect in aspects:
        assert set(aspect.values) <= set(allowed)

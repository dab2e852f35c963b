"""Listing drafts with eBay: the category, item specifics and conditions from
the Taxonomy and Metadata APIs of a loopback fake serving eBay's payload
shapes, the cache, failures within the deadline, and the Inventory API
payloads checked against eBay's contract and sent by the publisher."""

from __future__ import annotations

import time

import pytest

from restyle import ConfigurationError, MarketplaceAuthError
from restyle._listing import AspectMode, ListingDraft, make_draft
from restyle.marketplaces.ebay import EbayPublisher, EbayTaxonomy, SellerSettings
from restyle.marketplaces.ebay.inventory import inventory_item, offer, validate
from restyle.marketplaces.ebay.taxonomy import parse_aspects
from tests.fakes.ebay import SCOPE, TOKEN_PATH
from tests.fakes.ebay_taxonomy import (
    ASPECTS_PATH,
    CONDITIONS_PATH,
    SUGGESTIONS_PATH,
    TREE_PATH,
    FakeEbaySeller,
    fixture,
)
from tests.listing_samples import analysis, estimate, identification

USER_TOKEN = "v^1.1#i^1#r^1#user-token-7f3c9e"
SETTINGS = SellerSettings(fulfillment_policy_id="6196932000", payment_policy_id="6196938000",
                          return_policy_id="6196944000", merchant_location_key="warehouse-1")


def taxonomy(fake: FakeEbaySeller, **kwargs: object) -> EbayTaxonomy:
    return EbayTaxonomy(client_id=fake.client_id, client_secret=fake.client_secret,
                        base_url=fake.base_url, sleep=lambda s: None, **kwargs)  # type: ignore[arg-type]


def test_the_aspects_answer_is_read_with_its_modes_limits_and_allowed_values():
    specs = {s.name: s for s in parse_aspects(fixture("item_aspects"))}
    assert specs["Department"].mode is AspectMode.SELECTION_ONLY
    assert specs["Department"].required and specs["Department"].values == ("Men",
                                                                           "Unisex Adults")
    assert specs["Brand"].mode is AspectMode.FREE_TEXT and specs["Brand"].max_length == 65
    assert specs["Outer Shell Material"].multi and not specs["Type"].multi
    assert specs["Model"].values == () and not specs["Model"].required


def test_a_draft_takes_ebay_s_leaf_category_aspects_and_condition():
    with FakeEbaySeller() as fake:
        draft = make_draft(analysis(), taxonomy=taxonomy(fake), currency="USD")
        paths = [r.path for r in fake.requests]
        token_scopes = [r.body.decode() for r in fake.requests if r.path == TOKEN_PATH]
    assert draft.category.category_id == "57988" and draft.category.tree_id == "0"
    assert draft.category.path == ("Clothing, Shoes & Accessories", "Men", "Men's Clothing")
    assert draft.aspect("Brand") == ("Levi's",)
    assert draft.aspect("Type") == ("Jacket",)  # SELECTION_ONLY: eBay's spelling
    assert draft.aspect("Color") == ("Blue",)
    assert draft.aspect("Outer Shell Material") == ("Denim",)
    assert draft.aspect("Size") == ("M",)
    assert draft.aspect("Model") == ("Trucker Jacket",)
    required = [p for p in draft.problems if "required item specific" in p]
    assert len(required) == 2 and "'Department'" in required[0] and "'Size Type'" in required[1]
    assert (draft.condition_id, draft.condition_name) == ("3000", "Pre-owned - Good")
    assert not any("no category" in p for p in draft.problems)
    assert paths.count(TREE_PATH) == paths.count(SUGGESTIONS_PATH) == 1
    assert "scope=" in token_scopes[0] and "api_scope" in token_scopes[0]
    assert SCOPE.endswith("api_scope")


def test_selection_only_aspects_never_get_a_value_ebay_does_not_list():
    with FakeEbaySeller() as fake:
        ident = identification({"brand": "Levi's", "category": "jacket", "style": "shacket",
                                "pattern": "paisley", "material": "denim, hemp"})
        draft = make_draft(analysis(ident), taxonomy=taxonomy(fake))
    specs = {s.name: s for s in parse_aspects(fake.aspects)}
    for aspect in draft.aspects:
        spec = specs[aspect.name]
        if spec.mode is AspectMode.SELECTION_ONLY:
            assert set(aspect.values) <= set(spec.values)
    assert draft.aspect("Style") == () and draft.aspect("Pattern") == ()
    assert draft.aspect("Outer Shell Material") == ("Denim",)
    assert any("'paisley' is not one of the values" in p for p in draft.problems)


def test_tree_ids_aspects_and_conditions_are_cached_bounded_and_aged():
    now = [1000.0]
    with FakeEbaySeller() as fake:
        service = taxonomy(fake, clock=lambda: now[0], max_age=3600.0, cache_size=1)
        for _ in range(3):
            make_draft(analysis(), taxonomy=service)
        calls = {p: len(fake.calls(p)) for p in (TREE_PATH, ASPECTS_PATH, CONDITIONS_PATH)}
        assert calls == {TREE_PATH: 1, ASPECTS_PATH: 1, CONDITIONS_PATH: 1}
        now[0] += 3601.0  # past their age (and the token's margin is its own affair)
        make_draft(analysis(), taxonomy=service)
        assert len(fake.calls(ASPECTS_PATH)) == 2 and len(fake.calls(TREE_PATH)) == 2
        service.item_aspects("0", "63862", deadline=time.monotonic() + 5)
        assert len(service._aspects) == 1  # bounded: the older category went


def test_a_failing_taxonomy_leaves_an_offline_draft_that_says_why():
    with FakeEbaySeller() as fake:
        fake.script(SUGGESTIONS_PATH, 500, {"errors": [{"errorId": 62000, "message":
                    "There was a problem with an eBay internal system."}]}, times=5)
        draft = make_draft(analysis(), taxonomy=taxonomy(fake, max_retries=0))
    assert draft.category.category_id is None
    assert draft.aspect("Brand") == ("Levi's",)  # the generic list
    assert any("could not be asked" in p and "HTTP 500" in p for p in draft.problems)


def test_a_stuck_taxonomy_is_abandoned_at_the_draft_s_deadline():
    with FakeEbaySeller() as fake:
        fake.script(SUGGESTIONS_PATH, 200, fixture("category_suggestions"), delay=3.0)
        started = time.monotonic()
        draft = make_draft(analysis(), taxonomy=taxonomy(fake), deadline=0.5)
        elapsed = time.monotonic() - started
    assert elapsed < 0.5 + 2.0
    assert draft.category.category_id is None and draft.title


def _draft(fake: FakeEbaySeller) -> ListingDraft:
    return make_draft(analysis(), taxonomy=taxonomy(fake), currency="USD")


def test_the_inventory_payloads_validate_against_ebay_s_contract():
    with FakeEbaySeller() as fake:
        draft = _draft(fake)
    item = inventory_item(draft, image_urls=["https://i.example/1.jpg"])
    body = offer(draft, sku="RESTYLE-1", settings=SETTINGS)
    assert validate(item, "InventoryItem") == []
    assert validate(body, "EbayOfferDetailsWithKeys") == []
    assert item["condition"] == "USED_EXCELLENT"
    assert item["product"]["aspects"]["Type"] == ["Jacket"]
    assert body["pricingSummary"]["price"] == {"value": "41.99", "currency": "USD"}
    assert body["categoryId"] == "57988" and body["format"] == "FIXED_PRICE"
    wrong = {**item, "product": {**item["product"], "titel": "x", "imageUrls": "one"}}
    problems = validate(wrong, "InventoryItem")
    assert any("titel" in p for p in problems) and any("imageUrls" in p for p in problems)
    assert validate({**body, "sku": "a b/c"}, "EbayOfferDetailsWithKeys")


def test_the_publisher_creates_the_item_and_an_unpublished_offer_and_publishes_when_asked():
    with FakeEbaySeller(user_tokens=(USER_TOKEN,)) as fake:
        draft = _draft(fake)
        publisher = EbayPublisher(user_token=USER_TOKEN, base_url=fake.base_url,
                                  settings=SETTINGS, sleep=lambda s: None)
        done = publisher.publish(draft, sku="RESTYLE-1", image_urls=["https://i.example/1.jpg"])
        assert (done.offer_id, done.listing_id) == ("5005317010", None)
        assert fake.published == []
        assert fake.inventory["RESTYLE-1"]["product"]["title"] == draft.title
        assert fake.offers["5005317010"]["listingPolicies"]["returnPolicyId"] == "6196944000"
        put = next(r for r in fake.requests if r.method == "PUT")
        assert put.headers["Content-Language"] == "en-US"
        live = publisher.publish(draft, sku="RESTYLE-1", publish=True)
        assert live.listing_id == "110553451234" and fake.published == ["5005317010"]
    assert USER_TOKEN not in repr(publisher)


def test_a_refused_user_token_is_an_auth_error_that_never_shows_it():
    with FakeEbaySeller(user_tokens=()) as fake:
        draft = _draft(fake)
        publisher = EbayPublisher(user_token=USER_TOKEN, base_url=fake.base_url,
                                  settings=SETTINGS, sleep=lambda s: None)
        with pytest.raises(MarketplaceAuthError) as caught:
            publisher.publish(draft, sku="RESTYLE-2")
    assert "HTTP 401" in str(caught.value) and USER_TOKEN not in str(caught.value)
    assert USER_TOKEN not in repr(caught.value)


def test_a_draft_without_a_price_or_category_is_not_sent():
    with FakeEbaySeller(user_tokens=(USER_TOKEN,)) as fake:
        draft = make_draft(analysis(price=estimate(ok=False)))
        publisher = EbayPublisher(user_token=USER_TOKEN, base_url=fake.base_url,
                                  settings=SETTINGS)
        with pytest.raises(ConfigurationError, match="no a category; it has no a price"):
            publisher.publish(draft, sku="RESTYLE-3")
        assert not any(r.path.startswith("/sell/inventory") for r in fake.requests)

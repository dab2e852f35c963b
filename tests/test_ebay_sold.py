"""The ebay-sold marketplace's real HTTP code against a fake Marketplace Insights API."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from urllib.parse import parse_qs

import pytest
from PIL import Image

from restyle import (
    Analysis,
    Condition,
    ConfigurationError,
    Engine,
    MarketplaceAuthError,
    MarketplaceRateLimitError,
    Money,
    Query,
    load_photo,
)
from restyle.marketplaces.ebay import EbayMarketplace, EbaySoldMarketplace
from restyle.testing import ColorEncoder, ScriptedExpert
from tests.fakes.ebay import (
    INSIGHTS_SCOPE,
    RATE_LIMITED,
    SALES_PATH,
    SCOPE,
    SEARCH_PATH,
    TOKEN_PATH,
    FakeEbay,
    item,
    sale,
)

CLIENT_ID = "restyle-test-PRD-0123456789"
SECRET = "PRD-sentinel-s3cr3t-0f-the-app"


@pytest.fixture
def fake() -> Iterator[FakeEbay]:
    with FakeEbay(client_id=CLIENT_ID, client_secret=SECRET,
                  items=[item(i) for i in range(5)],
                  sales=[sale(i) for i in range(4)]) as server:
        yield server


@pytest.fixture
def sleeps() -> list[float]:
    return []


def sold_market(fake: FakeEbay, sleeps: list[float], **kwargs: object) -> EbaySoldMarketplace:
    options: dict[str, object] = {"client_id": CLIENT_ID, "client_secret": SECRET,
                                  "base_url": fake.base_url, "sleep": sleeps.append,
                                  "timeout": (2.0, 5.0)}
    options.update(kwargs)
    return EbaySoldMarketplace(**options)


def active_market(fake: FakeEbay, sleeps: list[float]) -> EbayMarketplace:
    return EbayMarketplace(client_id=CLIENT_ID, client_secret=SECRET, base_url=fake.base_url,
                           sleep=sleeps.append, timeout=(2.0, 5.0))


def scope_of(call: object) -> str:
    body = call.body.decode()  # type: ignore[attr-defined]
    return parse_qs(body)["scope"][0]


def test_sold_items_are_listings_that_sold(fake: FakeEbay, sleeps: list[float]) -> None:
    fake.sales = [
        sale(1, price="41.50", sold="2025-05-20T17:43:21.000Z", quantity=3, condition_id="1000"),
        sale(2, auction=True, bids=9, price="38.00"),
        sale(3, price=None, sold=None, quantity=None),
        {"title": "no id"},
    ]
    ebay = sold_market(fake, sleeps, marketplace_id="EBAY_GB")
    query = Query(text="Schott Perfecto leather jacket", condition=Condition.NEW,
                  min_price=Decimal("10"), max_price=Decimal("90"), limit=10)
    listings = {x.listing_id: x for x in ebay.search(query)}
    assert len(listings) == 3
    first = listings["v1|120000000001|0"]
    assert first.marketplace == "ebay-sold" and first.key == "ebay-sold:v1|120000000001|0"
    assert first.sold is True
    assert first.price == Money(amount=Decimal("41.50"), currency="USD")
    assert first.sold_at == datetime(2025, 5, 20, 17, 43, 21, tzinfo=timezone.utc)
    assert first.quantity_sold == 3 and first.condition is Condition.NEW
    assert first.url == "https://www.ebay.com/itm/120000000001"
    assert first.image_url == "https://i.ebayimg.com/images/g/s1/s-l225.jpg"
    assert first.seller == "seller1" and first.seller_feedback_score == 801
    auction = listings["v1|120000000002|0"]
    assert auction.auction is True and auction.bid_count == 9 and auction.sold is True
    bare = listings["v1|120000000003|0"]
    assert bare.price is None and bare.sold_at is None and bare.quantity_sold is None
    assert type(first).from_dict(first.to_dict()) == first

    (call,) = fake.calls(SALES_PATH)
    assert call.method == "GET"
    assert call.query["q"] == "Schott Perfecto leather jacket"
    assert call.query["limit"] == "10" and call.query["offset"] == "0"
    assert "price:[10..90]" in call.query["filter"]
    assert "priceCurrency:GBP" in call.query["filter"]
    assert "conditionIds:{1000}" in call.query["filter"]
    assert "sort" not in call.query
    assert call.headers["X-EBAY-C-MARKETPLACE-ID"] == "EBAY_GB"
    assert call.headers["Authorization"] == "Bearer v^1.1#i^1#fake-token-1"
    assert fake.calls(SEARCH_PATH) == []


def test_each_api_gets_a_token_of_its_own_scope(fake: FakeEbay, sleeps: list[float]) -> None:
    sold, active = sold_market(fake, sleeps), active_market(fake, sleeps)
    sold.search(Query(text="jacket"))
    active.search(Query(text="jacket"))
    sold.search(Query(text="jacket"))
    assert [scope_of(c) for c in fake.calls(TOKEN_PATH)] == [INSIGHTS_SCOPE, SCOPE]
    (browse,) = fake.calls(SEARCH_PATH)
    assert browse.headers["Authorization"].endswith("-2")
    assert [c.headers["Authorization"][-1] for c in fake.calls(SALES_PATH)] == ["1", "1"]


def test_sales_are_paged(fake: FakeEbay, sleeps: list[float]) -> None:
    fake.sales = [sale(i) for i in range(130)]
    listings = sold_market(fake, sleeps, page_size=50, max_comps=120).search(
        Query(text="jacket", limit=200))
    assert len(listings) == 120 and len({x.listing_id for x in listings}) == 120
    assert [c.query["offset"] for c in fake.calls(SALES_PATH)] == ["0", "50", "100"]
    fake.sales = [sale(i) for i in range(70)]
    assert len(sold_market(fake, sleeps, page_size=50).search(Query(text="x", limit=100))) == 50


def test_repeated_pages_of_sales_end_the_search(fake: FakeEbay, sleeps: list[float]) -> None:
    # Three sales, and a next link on every page: before, 333 requests.
    page = {"itemSales": [sale(i) for i in range(3)], "next": f"{fake.base_url}/more",
            "limit": 30}
    fake.script(SALES_PATH, 200, page, times=400)
    listings = sold_market(fake, sleeps, page_size=30).search(Query(text="jacket", limit=50))
    assert len(listings) == 3 and all(x.sold for x in listings)
    assert len(fake.calls(SALES_PATH)) == 2


def test_not_enabled_is_a_clear_auth_error_asked_once(
    fake: FakeEbay, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    fake.insights_allowed = False
    ebay = sold_market(fake, sleeps)
    with caplog.at_level(logging.WARNING, logger="restyle"):
        with pytest.raises(MarketplaceAuthError, match="not enabled for this application") as info:
            ebay.search(Query(text="jacket"))
        assert info.value.status == 403 and info.value.error_ids == (1100,)
        assert "Marketplace Insights" in str(info.value)
        with pytest.raises(MarketplaceAuthError, match="not enabled for this application"):
            ebay.search(Query(text="jacket"))
    assert len(fake.calls(SALES_PATH)) == 1  # the refusal is remembered: no second request
    assert ebay.enabled is False and sleeps == []
    assert sum("not enabled" in r.getMessage() for r in caplog.records) == 1


def test_a_scope_the_application_lacks_is_not_enabled_either(
    fake: FakeEbay, sleeps: list[float]
) -> None:
    fake.scopes = (SCOPE,)
    with pytest.raises(MarketplaceAuthError, match="not enabled for this application") as info:
        sold_market(fake, sleeps).search(Query(text="jacket"))
    assert info.value.status == 400
    assert fake.calls(SALES_PATH) == []


def test_429_is_retried_with_and_without_retry_after(fake: FakeEbay, sleeps: list[float]) -> None:
    fake.script(SALES_PATH, 429, RATE_LIMITED, {"Retry-After": "3"})
    fake.script(SALES_PATH, 429, RATE_LIMITED)
    assert len(sold_market(fake, sleeps, backoff=0.25).search(Query(text="jacket"))) == 4
    assert sleeps == [3.0, 0.5]
    fake.script(SALES_PATH, 429, RATE_LIMITED, times=3)
    with pytest.raises(MarketplaceRateLimitError, match="errorId 2001") as info:
        sold_market(fake, sleeps, max_retries=2).search(Query(text="jacket"))
    assert info.value.status == 429 and info.value.marketplace == "ebay-sold"


def test_options_that_do_not_apply_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="by image"):
        EbaySoldMarketplace(image_search=True)
    with pytest.raises(ConfigurationError, match="sort"):
        EbaySoldMarketplace(sort="price")
    assert EbaySoldMarketplace().image_search_status == "disabled"


def test_engine_selects_ebay_sold_by_name_without_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EBAY_CLIENT_ID", raising=False)
    engine = Engine(experts=[], marketplaces=["ebay", "ebay-sold"], encoder=ColorEncoder(),
                    load_entrypoints=False)
    assert [m.name for m in engine.marketplaces] == ["ebay", "ebay-sold"]


# -- in an analysis ------------------------------------------------------------------


def engine_for(fake: FakeEbay, sleeps: list[float]) -> Engine:
    for listing in [*fake.items, *fake.sales]:
        listing.pop("image", None)  # keep the re-ranker from fetching anything
    tags = ScriptedExpert("tags", entities=[("Schott", 0.9, "brand"),
                                            ("jacket", 0.8, "category")])
    return Engine(experts=[tags], marketplaces=[active_market(fake, sleeps),
                                                sold_market(fake, sleeps)],
                  encoder=ColorEncoder(), load_entrypoints=False, comps_wanted=3)


def photo():  # type: ignore[no-untyped-def]
    return load_photo(Image.new("RGB", (48, 48), (200, 30, 30)))


def test_analysis_prices_from_sales_and_shows_asking_prices_apart(
    fake: FakeEbay, sleeps: list[float]
) -> None:
    fake.sales = [sale(i, price=p, sold=f"2025-05-2{i}T10:00:00.000Z")
                  for i, p in enumerate(("30.00", "32.00", "34.00", "36.00"))]
    analysis = engine_for(fake, sleeps).analyze(photo())
    price = analysis.price
    assert {c.listing.marketplace for c in analysis.comps} == {"ebay", "ebay-sold"}
    assert price.basis == "sold" and price.comps_used == 4
    assert {c.listing_key.split(":")[0] for c in price.counted} == {"ebay-sold"}
    assert {e.reason for e in price.exclusions} == {"asking_price"}
    assert all(c.recency is not None and 0 < c.recency <= 1 for c in price.counted)
    assert price.as_of is not None and price.half_life_days == 30.0
    asking = next(b for b in price.bands if b.sold is False and b.condition is None)
    assert asking.estimate == Decimal("25.00")
    assert Analysis.from_json(analysis.to_json()) == analysis
    sold = next(c.listing for c in analysis.comps if c.listing.sold)
    assert sold.sold_at is not None and sold.quantity_sold == 1


def test_analysis_goes_on_with_asking_prices_when_sales_are_not_enabled(
    fake: FakeEbay, sleeps: list[float]
) -> None:
    fake.insights_allowed = False
    analysis = engine_for(fake, sleeps).analyze(photo())
    assert [w for w in analysis.warnings if "ebay-sold" in w and "not enabled" in w]
    assert analysis.price.ok and analysis.price.basis == "asking"
    assert "no sold comps" in analysis.price.basis_detail
    assert {c.listing.marketplace for c in analysis.comps} == {"ebay"}

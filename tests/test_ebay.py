"""The ebay marketplace's real HTTP code against a fake eBay Browse API."""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Iterator
from decimal import Decimal

import numpy as np
import pytest
from PIL import Image

from restyle import (
    Condition,
    ConfigurationError,
    Engine,
    Identification,
    MarketplaceAuthError,
    MarketplaceRateLimitError,
    MarketplaceResponseError,
    MarketplaceUnavailableError,
    Money,
    Query,
    load_photo,
)
from restyle.marketplaces.ebay import MAX_PAGES, EbayMarketplace, ImageSearchStatus
from tests.fakes.components import ColorEncoder
from tests.fakes.ebay import (
    IMAGE_PATH,
    RATE_LIMITED,
    SEARCH_PATH,
    SERVER_ERROR,
    TOKEN_PATH,
    FakeEbay,
    ebay_error,
    item,
)

CLIENT_ID = "restyle-test-PRD-0123456789"
SECRET = "PRD-sentinel-s3cr3t-0f-the-app"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake() -> Iterator[FakeEbay]:
    with FakeEbay(client_id=CLIENT_ID, client_secret=SECRET,
                  items=[item(i) for i in range(5)]) as server:
        yield server


@pytest.fixture
def sleeps() -> list[float]:
    return []


def market(fake: FakeEbay, sleeps: list[float], **kwargs: object) -> EbayMarketplace:
    options: dict[str, object] = {"client_id": CLIENT_ID, "client_secret": SECRET,
                                  "base_url": fake.base_url, "sleep": sleeps.append,
                                  "timeout": (2.0, 5.0)}
    options.update(kwargs)
    return EbayMarketplace(**options)  # type: ignore[arg-type]


def photo():
    return load_photo(Image.new("RGB", (48, 48), (200, 30, 30)))


# -- requests ------------------------------------------------------------------


def test_search_sends_query_filters_and_marketplace(fake: FakeEbay, sleeps: list[float]) -> None:
    ebay = market(fake, sleeps, marketplace_id="EBAY_GB", sort="price",
                  category_ids={"Jacket": "57988"})
    query = Query(text="Schott Perfecto leather jacket", category="jacket",
                  condition=Condition.USED, min_price=Decimal("10"), max_price=Decimal("50.5"),
                  limit=5)
    listings = ebay.search(query)
    assert len(listings) == 5
    (token_call,) = fake.calls(TOKEN_PATH)
    form = dict(part.split("=", 1) for part in token_call.body.decode().split("&"))
    assert form["grant_type"] == "client_credentials"
    assert token_call.headers["Authorization"].startswith("Basic ")
    (call,) = fake.calls(SEARCH_PATH)
    assert call.query["q"] == "Schott Perfecto leather jacket"
    assert call.query["category_ids"] == "57988"
    assert call.query["sort"] == "price"
    assert call.query["limit"] == "5" and call.query["offset"] == "0"
    filters = call.query["filter"]
    assert "price:[10..50.5]" in filters and "priceCurrency:GBP" in filters
    assert "conditionIds:{2990|3000|3010|4000|5000|6000}" in filters
    assert "buyingOptions:{FIXED_PRICE|AUCTION}" in filters
    assert call.headers["X-EBAY-C-MARKETPLACE-ID"] == "EBAY_GB"
    assert call.headers["Authorization"] == "Bearer v^1.1#i^1#fake-token-1"


def test_long_words_are_cut_between_words_and_empty_queries_ask_nothing(
    fake: FakeEbay, sleeps: list[float]
) -> None:
    ebay = market(fake, sleeps)
    ebay.search(Query(text=" ".join(["word"] * 40)))
    q = fake.calls(SEARCH_PATH)[0].query["q"]
    assert len(q) <= 100 and q.endswith("word")
    assert ebay.search(Query(text="", category="unmapped")) == []
    assert len(fake.calls(SEARCH_PATH)) == 1


# -- normalisation ---------------------------------------------------------------


def test_listings_are_normalised(fake: FakeEbay, sleeps: list[float]) -> None:
    fake.items = [
        item(1, price="1249.99", shipping="15.50", condition_id="1000", condition="New with tags"),
        item(2, auction=True, price=None, bid="41.00", bids=7),
        item(3, price=None, image=False, seller=False, condition_id=None, condition=None),
        item(4, condition_id="9999", condition="For parts or not working", shipping="0.00"),
        {"title": "no id"},
        "not an object",
        {**item(5), "price": {"value": "twelve", "currency": "USD"},
         "seller": {"username": "x", "feedbackPercentage": "not a number"}},
    ]
    listings = {x.listing_id: x for x in market(fake, sleeps).search(Query(text="jacket"))}
    assert len(listings) == 5
    first = listings["v1|110000000001|0"]
    assert first.price == Money(amount=Decimal("1249.99"), currency="USD")
    assert isinstance(first.price.amount, Decimal)
    assert first.shipping == Money(amount=Decimal("15.50"), currency="USD")
    assert first.delivered_price == Money(amount=Decimal("1265.49"), currency="USD")
    assert first.condition is Condition.NEW and first.sold is False and first.auction is False
    assert first.url == "https://www.ebay.com/itm/110000000001"
    assert first.image_url == "https://i.ebayimg.com/images/g/1/s-l225.jpg"
    assert first.seller == "seller1" and first.seller_feedback_percent == 99.6
    assert first.seller_feedback_score == 1501
    bid = listings["v1|110000000002|0"]
    assert bid.auction is True and bid.bid_count == 7
    assert bid.price == Money(amount=Decimal("41.00"), currency="USD")
    bare = listings["v1|110000000003|0"]
    assert bare.price is None and bare.image_url is None and bare.seller is None
    assert bare.condition is Condition.UNKNOWN and bare.shipping is None
    assert bare.delivered_price is None
    no_shipping_given = listings["v1|110000000005|0"]
    assert no_shipping_given.shipping is None and no_shipping_given.delivered_price is None
    assert no_shipping_given.price is None and no_shipping_given.seller_feedback_percent is None
    parts = listings["v1|110000000004|0"]
    assert parts.condition is Condition.FOR_PARTS
    assert parts.delivered_price == parts.price  # free shipping only when eBay says so
    assert type(parts).from_dict(parts.to_dict()) == parts


# -- pagination ------------------------------------------------------------------


def test_pages_until_enough_comps(fake: FakeEbay, sleeps: list[float]) -> None:
    fake.items = [item(i) for i in range(130)]
    ebay = market(fake, sleeps, page_size=50, max_comps=120)
    listings = ebay.search(Query(text="jacket", limit=200))
    assert len(listings) == 120
    assert [c.query["offset"] for c in fake.calls(SEARCH_PATH)] == ["0", "50", "100"]
    assert len({x.listing_id for x in listings}) == 120


def test_close_ends_connections_and_search_still_works(
    fake: FakeEbay, sleeps: list[float]
) -> None:
    ebay = market(fake, sleeps)
    ebay.search(Query(text="jacket"))
    ebay.close()
    assert len(ebay.search(Query(text="jacket"))) == 5
    ebay.close()


def test_pages_stop_at_the_last_page(fake: FakeEbay, sleeps: list[float]) -> None:
    fake.items = [item(i) for i in range(70)]
    listings = market(fake, sleeps, page_size=50, max_comps=100).search(
        Query(text="jacket", limit=100)
    )
    assert len(listings) == 70
    assert [c.query["offset"] for c in fake.calls(SEARCH_PATH)] == ["0", "50"]
    fake.items = []
    assert market(fake, sleeps).search(Query(text="nothing")) == []


def test_a_page_with_nothing_new_ends_the_search_whatever_next_says(
    fake: FakeEbay, sleeps: list[float]
) -> None:
    # eBay keeps answering the same three items with a next link: before, the loop
    # went on to offset 10,000 (333 requests of 30).
    page = {"itemSummaries": [item(i) for i in range(3)], "next": f"{fake.base_url}/more"}
    fake.script(SEARCH_PATH, 200, page, times=400)
    listings = market(fake, sleeps, page_size=30, max_comps=50).search(
        Query(text="jacket", limit=50))
    assert sorted(x.listing_id for x in listings) == sorted(item(i)["itemId"] for i in range(3))
    assert [c.query["offset"] for c in fake.calls(SEARCH_PATH)] == ["0", "30"]


def test_a_search_reads_at_most_max_pages_pages(fake: FakeEbay, sleeps: list[float]) -> None:
    # Every page brings one new item and a next link, with no total.
    for n in range(400):
        fake.script(SEARCH_PATH, 200, {"itemSummaries": [item(n)], "next": "more"})
    listings = market(fake, sleeps, page_size=1, max_comps=200).search(
        Query(text="jacket", limit=200))
    assert len(fake.calls(SEARCH_PATH)) == MAX_PAGES == len(listings)


def test_unusable_items_still_count_as_new_so_paging_goes_on(
    fake: FakeEbay, sleeps: list[float]
) -> None:
    # A page whose items are all skipped (no title) is not a repeated page.
    fake.items = [{**item(i), "title": " "} for i in range(2)] + [item(i) for i in range(2, 4)]
    listings = market(fake, sleeps, page_size=2, max_comps=2).search(
        Query(text="jacket", limit=2))
    assert len(listings) == 2
    assert [c.query["offset"] for c in fake.calls(SEARCH_PATH)] == ["0", "2"]


# -- tokens ----------------------------------------------------------------------


def test_token_is_cached_and_renewed_before_expiry(fake: FakeEbay, sleeps: list[float]) -> None:
    clock = Clock()
    ebay = market(fake, sleeps, clock=clock)
    ebay.search(Query(text="jacket"))
    clock.now += 3000
    ebay.search(Query(text="jacket"))
    assert len(fake.calls(TOKEN_PATH)) == 1
    clock.now += 7200 - 3000 - 60  # inside the safety margin before expiry
    ebay.search(Query(text="jacket"))
    assert len(fake.calls(TOKEN_PATH)) == 2
    tokens = [c.headers["Authorization"] for c in fake.calls(SEARCH_PATH)]
    assert tokens[0] == tokens[1] != tokens[2]


def test_token_rejected_mid_run_is_renewed_once(fake: FakeEbay, sleeps: list[float]) -> None:
    fake.items = [item(i) for i in range(100)]
    ebay = market(fake, sleeps, page_size=50, max_comps=100)
    ebay.search(Query(text="jacket", limit=50))
    fake.revoke_tokens()  # expired at eBay although our clock says otherwise
    listings = ebay.search(Query(text="jacket", limit=100))
    assert len(listings) == 100
    assert len(fake.calls(TOKEN_PATH)) == 2
    statuses = [c.headers["Authorization"][-1] for c in fake.calls(SEARCH_PATH)]
    assert statuses == ["1", "1", "2", "2"]


def test_token_rejected_twice_is_an_auth_error(fake: FakeEbay, sleeps: list[float]) -> None:
    fake.script(SEARCH_PATH, 401, ebay_error(1001, "Invalid access token"), times=2)
    with pytest.raises(MarketplaceAuthError, match="errorId 1001") as info:
        market(fake, sleeps).search(Query(text="jacket"))
    assert info.value.status == 401 and info.value.error_ids == (1001,)
    assert len(fake.calls(TOKEN_PATH)) == 2


def test_concurrent_searches_share_one_token(fake: FakeEbay, sleeps: list[float]) -> None:
    ebay = market(fake, sleeps)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            ebay.search(Query(text="jacket"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not errors
    assert len(fake.calls(TOKEN_PATH)) == 1
    assert len(fake.calls(SEARCH_PATH)) == 8


def test_wrong_keys_are_an_auth_error(fake: FakeEbay, sleeps: list[float]) -> None:
    ebay = market(fake, sleeps, client_secret="wrong")
    with pytest.raises(MarketplaceAuthError, match="invalid_client") as info:
        ebay.search(Query(text="jacket"))
    assert "EBAY_CLIENT_SECRET" in str(info.value) and "wrong" not in str(info.value)
    assert fake.calls(SEARCH_PATH) == []


def test_keys_come_from_the_environment(
    fake: FakeEbay, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EBAY_CLIENT_ID", raising=False)
    monkeypatch.delenv("EBAY_CLIENT_SECRET", raising=False)
    ebay = EbayMarketplace(base_url=fake.base_url, sleep=sleeps.append)  # cheap, no keys needed
    with pytest.raises(ConfigurationError, match="EBAY_CLIENT_ID"):
        ebay.search(Query(text="jacket"))
    monkeypatch.setenv("EBAY_CLIENT_ID", CLIENT_ID)
    monkeypatch.setenv("EBAY_CLIENT_SECRET", SECRET)
    monkeypatch.setenv("EBAY_MARKETPLACE_ID", "EBAY_DE")
    assert len(ebay.search(Query(text="jacket"))) == 5
    assert fake.calls(SEARCH_PATH)[0].headers["X-EBAY-C-MARKETPLACE-ID"] == "EBAY_DE"


def test_bad_options_are_refused_at_construction() -> None:
    with pytest.raises(ConfigurationError, match="EBAY_ZZ"):
        EbayMarketplace(marketplace_id="EBAY_ZZ")
    with pytest.raises(ConfigurationError, match="buying options"):
        EbayMarketplace(buying_options=("SWAP",))
    with pytest.raises(ConfigurationError, match="both"):
        EbayMarketplace(client_id="only-the-id")


# -- retries and errors ------------------------------------------------------------


def test_429_honours_retry_after(fake: FakeEbay, sleeps: list[float]) -> None:
    fake.script(SEARCH_PATH, 429, RATE_LIMITED, {"Retry-After": "3"})
    fake.script(SEARCH_PATH, 429, RATE_LIMITED)  # eBay often sends no Retry-After
    fake.script(SEARCH_PATH, 429, RATE_LIMITED, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert len(market(fake, sleeps, backoff=0.25).search(Query(text="jacket"))) == 5
    assert sleeps == [3.0, 0.5, 0.0]


def test_429_that_persists_is_a_rate_limit_error(fake: FakeEbay, sleeps: list[float]) -> None:
    fake.script(SEARCH_PATH, 429, RATE_LIMITED, times=4)
    with pytest.raises(MarketplaceRateLimitError, match="errorId 2001") as info:
        market(fake, sleeps, max_retries=3).search(Query(text="jacket"))
    assert info.value.error_ids == (2001,) and info.value.status == 429
    assert sleeps == [0.5, 1.0, 2.0]
    assert len(fake.calls(SEARCH_PATH)) == 4


def test_a_long_retry_after_is_reported_not_waited(fake: FakeEbay, sleeps: list[float]) -> None:
    fake.script(SEARCH_PATH, 429, RATE_LIMITED, {"Retry-After": "3600"})
    with pytest.raises(MarketplaceRateLimitError) as info:
        market(fake, sleeps).search(Query(text="jacket"))
    assert info.value.retry_after == 3600.0 and sleeps == []


def test_server_errors_are_retried_then_reported(fake: FakeEbay, sleeps: list[float]) -> None:
    fake.script(SEARCH_PATH, 500, SERVER_ERROR)
    fake.script(SEARCH_PATH, 503, b"<html>Service Unavailable</html>",
                {"Content-Type": "text/html"})
    assert len(market(fake, sleeps).search(Query(text="jacket"))) == 5
    assert len(sleeps) == 2
    fake.script(SEARCH_PATH, 500, SERVER_ERROR, times=3)
    with pytest.raises(MarketplaceUnavailableError, match="errorId 10001"):
        market(fake, sleeps, max_retries=2).search(Query(text="jacket"))


def test_token_endpoint_server_errors_are_retried(fake: FakeEbay, sleeps: list[float]) -> None:
    fake.script(TOKEN_PATH, 502, b"bad gateway", {"Content-Type": "text/plain"})
    assert len(market(fake, sleeps).search(Query(text="jacket"))) == 5
    assert len(fake.calls(TOKEN_PATH)) == 2


def test_request_errors_map_to_typed_errors(fake: FakeEbay, sleeps: list[float]) -> None:
    fake.script(SEARCH_PATH, 400, ebay_error(12001, "The value of filter is invalid."))
    with pytest.raises(MarketplaceResponseError, match=r"filter is invalid.*12001"):
        market(fake, sleeps).search(Query(text="jacket"))
    fake.script(SEARCH_PATH, 403, ebay_error(1100, "Access denied"))
    with pytest.raises(MarketplaceAuthError, match="HTTP 403"):
        market(fake, sleeps).search(Query(text="jacket"))
    assert sleeps == []


@pytest.mark.parametrize("body", [
    b"<html>not json</html>",
    b"[1, 2, 3]",
    json.dumps({"total": 1, "itemSummaries": {"itemId": "x"}}).encode(),
])
def test_malformed_answers_are_response_errors(
    fake: FakeEbay, sleeps: list[float], body: bytes
) -> None:
    fake.script(SEARCH_PATH, 200, body)
    with pytest.raises(MarketplaceResponseError):
        market(fake, sleeps).search(Query(text="jacket"))


def test_malformed_token_answer_is_a_response_error(fake: FakeEbay, sleeps: list[float]) -> None:
    fake.script(TOKEN_PATH, 200, {"token_type": "Application Access Token"})
    with pytest.raises(MarketplaceResponseError, match="access_token"):
        market(fake, sleeps).search(Query(text="jacket"))


def test_a_slow_answer_times_out(fake: FakeEbay, sleeps: list[float]) -> None:
    fake.script(SEARCH_PATH, 200, {"total": 0}, delay=0.5, times=2)
    ebay = market(fake, sleeps, timeout=(1.0, 0.1), max_retries=1)
    with pytest.raises(MarketplaceUnavailableError, match="ReadTimeout"):
        ebay.search(Query(text="jacket"))
    assert len(sleeps) == 1
    ebay.close()


def test_no_server_is_unavailable_after_retries(sleeps: list[float]) -> None:
    with FakeEbay(client_id=CLIENT_ID, client_secret=SECRET) as closed:
        url = closed.base_url
    ebay = EbayMarketplace(client_id=CLIENT_ID, client_secret=SECRET, base_url=url,
                           sleep=sleeps.append, max_retries=2, timeout=(1.0, 1.0))
    with pytest.raises(MarketplaceUnavailableError, match="3 tries"):
        ebay.search(Query(text="jacket"))
    assert len(sleeps) == 2


# -- search by image -------------------------------------------------------------------


def test_search_by_image_is_off_unless_enabled(fake: FakeEbay, sleeps: list[float]) -> None:
    ebay = market(fake, sleeps)
    assert ebay.image_search_status == ImageSearchStatus.DISABLED
    assert ebay.search_by_image(photo(), Query(text="x"), embedding=np.zeros(3),
                                model_id="m") is None
    assert fake.requests == []


def test_search_by_image_posts_the_photo(fake: FakeEbay, sleeps: list[float]) -> None:
    ebay = market(fake, sleeps, image_search=True)
    listings = ebay.search_by_image(photo(), Query(text="words are ignored"),
                                    embedding=np.zeros(3), model_id="m")
    assert listings is not None and len(listings) == 5
    (call,) = fake.calls(IMAGE_PATH)
    assert "q" not in call.query and call.query["limit"] == "50"
    assert base64.b64decode(json.loads(call.body)["image"])[:2] == b"\xff\xd8"
    # the next relaxation step changes only the words: answered without a new request
    again = ebay.search_by_image(photo(), Query(text="other words"), embedding=np.zeros(3),
                                 model_id="m")
    assert again == listings and len(fake.calls(IMAGE_PATH)) == 1


def test_search_by_image_403_means_not_enabled(
    fake: FakeEbay, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    fake.image_search_allowed = False
    ebay = market(fake, sleeps, image_search=True)
    assert ebay.image_search_status == ImageSearchStatus.ENABLED
    with caplog.at_level(logging.WARNING, logger="restyle"):
        assert ebay.search_by_image(photo(), Query(text="x"), embedding=np.zeros(3),
                                    model_id="m") is None
        assert ebay.search_by_image(photo(), Query(text="y"), embedding=np.zeros(3),
                                    model_id="m") is None
    assert ebay.image_search_status == ImageSearchStatus.NOT_ENABLED_FOR_APPLICATION
    assert len(fake.calls(IMAGE_PATH)) == 1
    assert [r.getMessage() for r in caplog.records].count(
        next(r.getMessage() for r in caplog.records if "not enabled" in r.getMessage())) == 1


def test_engine_falls_back_to_words_when_image_search_is_refused(
    fake: FakeEbay, sleeps: list[float]
) -> None:
    fake.image_search_allowed = False
    for listing in fake.items:
        listing.pop("image")  # keep the re-ranker from fetching anything
    ebay = market(fake, sleeps, image_search=True)
    engine = Engine(experts=[], marketplaces=[ebay], encoder=ColorEncoder(),
                    load_entrypoints=False, comps_wanted=3)
    comps = engine.find_comps(photo(), Identification(brand="Schott", category="jacket"))
    assert len(comps) == 5 and all(c.query_step == "full" for c in comps)
    assert len(fake.calls(IMAGE_PATH)) == 1 and len(fake.calls(SEARCH_PATH)) == 1


def test_engine_can_select_ebay_by_name_without_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EBAY_CLIENT_ID", raising=False)
    engine = Engine(experts=[], marketplaces=["ebay"], encoder=ColorEncoder(),
                    load_entrypoints=False)
    assert engine.marketplaces[0].name == "ebay"


# -- secrets -----------------------------------------------------------------------------


def test_the_secret_never_shows(
    fake: FakeEbay, sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[str] = []
    with caplog.at_level(logging.DEBUG):
        ebay = market(fake, sleeps)
        seen += [repr(ebay), str(ebay), repr(vars(ebay))]
        ebay.search(Query(text="jacket"))
        fake.revoke_tokens()
        fake.script(SEARCH_PATH, 429, RATE_LIMITED)
        ebay.search(Query(text="jacket"))
        # an answer that echoes the keys back must not carry them into a message
        fake.script(TOKEN_PATH, 401, {"error": "invalid_client",
                                      "error_description": f"bad secret {SECRET} for {CLIENT_ID}"})
        fake.revoke_tokens()
        with pytest.raises(MarketplaceAuthError) as info:
            market(fake, sleeps).search(Query(text="jacket"))
        seen += [str(info.value), repr(info.value)]
        fake.script(TOKEN_PATH, 500, ebay_error(10001, f"echo {SECRET}"), times=4)
        with pytest.raises(MarketplaceUnavailableError) as info2:
            market(fake, sleeps).search(Query(text="jacket"))
        seen += [str(info2.value), repr(info2.value)]
    seen += [r.getMessage() for r in caplog.records]
    seen += [str(r.args) for r in caplog.records]
    assert caplog.records  # the run did log something
    for text in seen:
        assert SECRET not in text
        assert base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode() not in text

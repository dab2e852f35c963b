"""The price estimate: its rules, its explanation, and properties that must always hold."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from restyle import (
    Comp,
    Condition,
    ConfigurationError,
    Listing,
    Money,
    PriceBasis,
    PriceEstimate,
    PriceStatus,
    estimate_price,
)
from restyle._pipeline.pricing import (
    DEFAULT_HALF_LIFE_DAYS,
    MAXIMUM_HALF_LIFE_DAYS,
    MAXIMUM_MINIMUM_COMPS,
    MINIMUM_HALF_LIFE_DAYS,
    UNSEEN_WEIGHT,
    recency_factor,
    weighted_quantile,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=timezone.utc)

_counter = iter(range(10**9))


def comp(
    price: str | Decimal | None,
    *,
    currency: str = "USD",
    score: float = 0.8,
    flags: tuple[str, ...] = (),
    condition: Condition = Condition.USED,
    sold: bool | None = None,
    auction: bool | None = None,
    bids: int | None = None,
    key: str | None = None,
    days_ago: float | None = None,
) -> Comp:
    listing = Listing(
        marketplace="m", listing_id=key or f"id{next(_counter)}", title="jacket",
        price=None if price is None else Money(amount=Decimal(price), currency=currency),
        condition=condition, sold=sold, auction=auction, bid_count=bids,
        sold_at=None if days_ago is None else NOW - timedelta(days=days_ago),
    )
    similarity = None if "image_unavailable" in flags else score
    return Comp(listing=listing, score=score, similarity=similarity, flags=flags)


def test_weighted_median_and_range() -> None:
    price = estimate_price([comp(p) for p in ("10", "20", "30", "40", "50")])
    assert price.status is PriceStatus.OK and price.currency == "USD"
    assert (price.low, price.estimate, price.high) == (Decimal("20.00"), Decimal("30.00"),
                                                      Decimal("40.00"))
    assert price.comps_used == 5 and price.effective_weight == pytest.approx(5.0)
    assert [c.weight for c in price.counted] == [0.8] * 5


def test_weights_pull_the_median_towards_the_alike_comps() -> None:
    comps = [comp("10", score=0.1), comp("20", score=0.1), comp("30", score=0.1),
             comp("40", score=0.9), comp("41", score=0.9)]
    price = estimate_price(comps)
    assert price.estimate == Decimal("40.00")
    assert price.effective_weight < 5


def test_every_exclusion_is_explained() -> None:
    comps = [
        comp(p, key=f"ok{i}") for i, p in enumerate(("100", "105", "110", "95", "102"))
    ] + [
        comp(None, key="noprice"),
        comp("100", key="cut", flags=("below_cutoff",), score=0.1),
        comp("100", key="zero", score=0.0),
        comp("1", key="opening-bid", auction=True, bids=0),
        comp("5000", key="gold-plated"),
    ]
    price = estimate_price(comps)
    reasons = {e.listing_key: e.reason for e in price.exclusions}
    assert reasons == {"m:noprice": "no_price", "m:cut": "below_cutoff", "m:zero": "not_alike",
                       "m:opening-bid": "auction_without_bids", "m:gold-plated": "outlier"}
    assert all(e.detail for e in price.exclusions)
    assert "5000.00 USD" in str(next(e for e in price.exclusions if e.reason == "outlier"))
    assert price.excluded == tuple(str(e) for e in price.exclusions)
    assert any("outlier price 5000.00 USD" in text for text in price.excluded)
    assert sorted(c.listing_key for c in price.counted) == [f"m:ok{i}" for i in range(5)]
    assert price.estimate == Decimal("102.00")


def test_comps_without_an_image_are_down_weighted_not_dropped() -> None:
    comps = [comp("50", score=1.0), comp("52", score=1.0),
             comp("10", flags=("image_unavailable",), score=0.0)]
    price = estimate_price(comps)
    assert price.ok and price.comps_used == 3
    unseen = next(c for c in price.counted if c.down_weighted)
    assert unseen.down_weighted == "image_unavailable" and unseen.weight == UNSEEN_WEIGHT
    assert price.estimate == Decimal("50.00")


def test_an_auction_with_bids_counts() -> None:
    price = estimate_price([comp("40", auction=True, bids=3), comp("42"), comp("44")])
    assert price.ok and price.comps_used == 3 and not price.exclusions


def test_not_enough_data_still_shows_the_comps() -> None:
    price = estimate_price([comp("40"), comp("42"), comp(None)], minimum_comps=3)
    assert price.status is PriceStatus.NOT_ENOUGH_DATA and not price.ok
    assert price.estimate is price.low is price.high is None
    assert price.comps_used == 2 and len(price.counted) == 2 and len(price.exclusions) == 1
    assert price.minimum_comps == 3
    empty = estimate_price([])
    assert empty.status is PriceStatus.NOT_ENOUGH_DATA and empty.currency is None


def test_bands_split_by_condition_and_sold() -> None:
    comps = [comp(p, condition=Condition.NEW, sold=True) for p in ("200", "210", "220")]
    comps += [comp(p, condition=Condition.USED, sold=False) for p in ("100", "110", "120")]
    comps += [comp("150", condition=Condition.USED)]
    price = estimate_price(comps)
    bands = {(b.condition, b.sold): b for b in price.bands}
    assert bands[(None, None)].comps_used == 7 and bands[(None, None)].estimate == Decimal("150")
    assert price.basis == "sold" and price.estimate == bands[(None, True)].estimate
    assert bands[(Condition.NEW, None)].estimate == Decimal("210.00")
    assert bands[(Condition.USED, None)].comps_used == 4
    assert bands[(None, True)].estimate == Decimal("210.00")
    assert bands[(None, False)].estimate == Decimal("110.00")
    assert (Condition.FOR_PARTS, None) not in bands


def test_currencies_are_never_mixed() -> None:
    comps = [comp(p, currency="EUR", score=0.9) for p in ("80", "85", "90", "95")]
    comps += [comp(p, currency="USD", score=0.5) for p in ("100", "300")]
    price = estimate_price(comps)
    assert price.currency == "EUR" and price.comps_used == 4
    usd = next(b for b in price.bands if b.currency == "USD" and b.condition is None
               and b.sold is None)
    assert usd.status is PriceStatus.NOT_ENOUGH_DATA and usd.comps_used == 2
    assert {e.reason for e in price.exclusions} == {"other_currency"}
    assert len(price.counted) == 4 and all(c.price.currency == "EUR" for c in price.counted)
    assert any("priced in USD, not EUR" in text for text in price.excluded)


def test_the_estimate_round_trips_through_json() -> None:
    comps = [comp(p, sold=True) for p in ("10", "20", "30")] + [comp(None)]
    price = estimate_price(comps)
    assert PriceEstimate.from_dict(price.to_dict()) == price


def test_sold_comps_make_the_headline_and_asking_prices_are_shown_apart() -> None:
    sold = [comp(p, sold=True, key=f"s{i}") for i, p in enumerate(("40", "42", "44"))]
    asking = [comp(p, sold=False, key=f"a{i}") for i, p in enumerate(("60", "65", "70", "75"))]
    price = estimate_price(sold + asking, now=NOW)
    assert price.basis is PriceBasis.SOLD and price.basis == "sold"
    assert (price.low, price.estimate, price.high) == (Decimal("40.00"), Decimal("42.00"),
                                                      Decimal("44.00"))
    assert price.comps_used == 3
    assert sorted(c.listing_key for c in price.counted) == ["m:s0", "m:s1", "m:s2"]
    assert all(c.sold is True for c in price.counted)
    reasons = {e.listing_key: e.reason for e in price.exclusions}
    assert reasons == {f"m:a{i}": "asking_price" for i in range(4)}
    assert "not a sale" in price.excluded[0]
    assert price.basis_detail == "3 sold comps; 4 unsold comps left out"
    bands = {(b.condition, b.sold): b for b in price.bands}
    assert bands[(None, False)].estimate == Decimal("67.50")  # the asking band, apart
    assert bands[(None, True)].estimate == price.estimate
    assert len(price.counted) + len(price.exclusions) == 7


def test_too_few_sold_comps_mix_with_asking_prices_and_say_so() -> None:
    comps = [comp("40", sold=True), comp("42", sold=True)]
    comps += [comp(p, sold=False) for p in ("60", "65", "70")]
    price = estimate_price(comps, now=NOW)
    assert price.basis is PriceBasis.MIXED and price.ok
    assert price.comps_used == 5 and len(price.counted) == 5 and not price.exclusions
    assert "only 2 sold comps (3 needed" in price.basis_detail
    assert "3 asking prices" in price.basis_detail
    asking = estimate_price([comp(p, sold=False) for p in ("60", "65", "70")], now=NOW)
    assert asking.basis is PriceBasis.ASKING and "no sold comps" in asking.basis_detail
    unknown = estimate_price([comp(p) for p in ("60", "65", "70")], now=NOW)
    assert unknown.basis is PriceBasis.ASKING
    assert estimate_price([]).basis is None


def test_sold_and_asking_prices_are_trimmed_apart() -> None:
    # Asking prices far above what sold are their own market, not the sold ones' outliers.
    comps = [comp(p, sold=True) for p in ("20", "21", "22", "23")]
    comps += [comp(p, sold=False) for p in ("80", "82", "84", "86")]
    price = estimate_price(comps, now=NOW)
    assert not [e for e in price.exclusions if e.reason == "outlier"]
    wild = estimate_price([*comps, comp("400", sold=True, key="wild")], now=NOW)
    assert ("m:wild", "outlier") in {(e.listing_key, e.reason) for e in wild.exclusions}


def test_recency_halves_a_sold_comps_weight_every_half_life() -> None:
    comps = [comp("40", sold=True, score=0.8, days_ago=0, key="today"),
             comp("50", sold=True, score=0.8, days_ago=30, key="month"),
             comp("60", sold=True, score=0.8, days_ago=60, key="two-months"),
             comp("70", sold=False, score=0.8, key="asking")]
    price = estimate_price(comps, now=NOW, half_life_days=30)
    counted = {c.listing_key: c for c in price.counted}
    assert counted["m:today"].recency == pytest.approx(1.0)
    assert counted["m:month"].recency == pytest.approx(0.5)
    assert counted["m:two-months"].recency == pytest.approx(0.25)
    assert counted["m:month"].weight == pytest.approx(0.4)
    assert counted["m:month"].sold_at == NOW - timedelta(days=30)
    assert price.as_of == NOW and price.half_life_days == 30.0
    # The recent sale outweighs the two older ones together: the median moves to it.
    assert price.estimate == Decimal("40.00")
    flat = estimate_price(comps, now=NOW, half_life_days=MAXIMUM_HALF_LIFE_DAYS)
    assert flat.estimate == Decimal("50.00")
    assert PriceEstimate.from_dict(price.to_dict()) == price


def test_sales_without_a_date_and_asking_prices_are_not_aged() -> None:
    price = estimate_price([comp("40", sold=True), comp("41", sold=False),
                            comp("42", sold=True, days_ago=3)], now=NOW)
    recency = {c.price.amount: c.recency for c in price.counted}
    assert recency[Decimal("40")] is None and recency[Decimal("41")] is None
    assert 0 < recency[Decimal("42")] < 1  # type: ignore[operator]
    undated = estimate_price([comp("40", sold=True), comp("41", sold=True)])
    assert undated.as_of is None  # nothing was aged: the estimate does not depend on the day


def test_naive_times_are_utc_and_the_half_life_is_checked() -> None:
    naive_now = NOW.replace(tzinfo=None)
    listing = Listing(marketplace="m", listing_id="x", title="t",
                      sold_at=(NOW - timedelta(days=30)).replace(tzinfo=None))
    assert listing.sold_at is not None and listing.sold_at.tzinfo is timezone.utc
    assert recency_factor(listing.sold_at, naive_now, 30) == pytest.approx(0.5)
    assert recency_factor(NOW + timedelta(days=2), NOW, 30) == 1.0  # a sale "after" now
    assert recency_factor(NOW - timedelta(days=10**5), NOW, 1) == 0.0  # a float's limit
    assert DEFAULT_HALF_LIFE_DAYS == 30.0
    for bad in (0, -1, float("nan"), float("inf"), True):
        with pytest.raises(ConfigurationError, match="half_life_days"):
            estimate_price([], half_life_days=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="quantity_sold"):
        Listing(marketplace="m", listing_id="x", title="t", quantity_sold=-1)


def test_recency_has_no_floor_a_sale_40_half_lives_old_weighs_half_one_39_old() -> None:
    # Five sales, all older than the 30 half-lives where a floor of 1e-9 used
    # to make every sale weigh the same: three at 40 half-lives for 10, two at
    # 38 for 100. The two newer ones weigh 4 times each older one (8 against 3):
    # the estimate follows them, as it would for sales of 8 and 10 half-lives.
    days = DEFAULT_HALF_LIFE_DAYS
    comps = ([comp("10", sold=True, score=1.0, days_ago=40 * days) for _ in range(3)]
             + [comp("100", sold=True, score=1.0, days_ago=38 * days) for _ in range(2)])
    price = estimate_price(comps, now=NOW)
    recency = sorted(p.recency for p in price.counted if p.recency is not None)
    assert recency[0] == pytest.approx(0.5**40) and recency[-1] == pytest.approx(0.5**38)
    assert recency[-1] / recency[0] == pytest.approx(4.0)
    assert price.estimate == Decimal("100.00")
    younger = ([comp("10", sold=True, score=1.0, days_ago=10 * days) for _ in range(3)]
               + [comp("100", sold=True, score=1.0, days_ago=8 * days) for _ in range(2)])
    same = estimate_price(younger, now=NOW)
    assert (same.estimate, same.low, same.high, same.effective_weight) == (
        price.estimate, price.low, price.high, price.effective_weight)
    # Past a float's range (0.5 ** 1100 is 0.0) a sale weighs nothing: no estimate
    # rests on weightless sales alone, and nothing divides by zero.
    ancient = estimate_price([comp(p, sold=True, days_ago=1100 * days)
                              for p in ("10", "20", "30")], now=NOW)
    assert ancient.status is PriceStatus.NOT_ENOUGH_DATA and ancient.effective_weight == 0.0
    assert [p.recency for p in ancient.counted] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize(("arguments", "named"), [
    ({"comps": None}, "comps must be a list or tuple of Comp, got NoneType"),
    ({"comps": 5}, "comps must be a list or tuple of Comp, got int"),
    ({"comps": "abc"}, "comps must be a list or tuple of Comp, got str"),
    ({"comps": (c for c in ())}, "comps must be a list or tuple of Comp, got generator"),
    ({"comps": {"a": 1}}, "comps must be a list or tuple of Comp, got dict"),
    ({"comps": [None]}, r"comps\[0\] is a NoneType"),
    ({"comps": ["x"]}, r"comps\[0\] is a str"),
    ({"comps": [[1]]}, r"comps\[0\] is a list"),
    ({"minimum_comps": 0}, "minimum_comps must be from 1 to"),
    ({"minimum_comps": -3}, "minimum_comps must be from 1 to"),
    ({"minimum_comps": 10**30}, "minimum_comps must be from 1 to"),
    ({"minimum_comps": MAXIMUM_MINIMUM_COMPS + 1}, "minimum_comps must be from 1 to"),
    ({"minimum_comps": 2.5}, "minimum_comps must be a whole number"),
    ({"minimum_comps": 3.0}, "minimum_comps must be a whole number"),
    ({"minimum_comps": "3"}, "minimum_comps must be a whole number"),
    ({"minimum_comps": None}, "minimum_comps must be a whole number"),
    ({"minimum_comps": True}, "minimum_comps must be a whole number"),
    ({"half_life_days": "30"}, "half_life_days must be a number of days"),
    ({"half_life_days": None}, "half_life_days must be a number of days"),
    ({"half_life_days": Decimal("30")}, "half_life_days must be a number of days"),
    ({"half_life_days": -1.0}, "half_life_days must be a positive number of days from"),
    ({"half_life_days": 1e-300}, "half_life_days must be a positive number of days from"),
    ({"half_life_days": 1e300}, "half_life_days must be a positive number of days from"),
    ({"half_life_days": 10**400}, "half_life_days must be a positive number of days from"),
    ({"half_life_days": float("nan")}, "half_life_days must be a positive number of days"),
    ({"now": "2025-06-01"}, "now must be a datetime or None, got str"),
    ({"now": 1717243200}, "now must be a datetime or None, got int"),
])
def test_garbage_arguments_are_configuration_errors_naming_the_argument(
    arguments: dict[str, object], named: str,
) -> None:
    call: dict[str, object] = {"comps": [comp("10"), comp("20"), comp("30")]}
    call.update(arguments)
    comps = call.pop("comps")
    with pytest.raises(ConfigurationError, match=named):
        estimate_price(comps, **call)  # type: ignore[arg-type]


def test_arguments_at_the_edges_of_their_ranges_are_accepted() -> None:
    import numpy as np

    comps = (comp("10"), comp("20"), comp("30"))  # a tuple is a sequence too
    for half_life in (MINIMUM_HALF_LIFE_DAYS, MAXIMUM_HALF_LIFE_DAYS, 7, np.float64(7.5)):
        assert estimate_price(comps, half_life_days=half_life).ok  # type: ignore[arg-type]
    assert estimate_price(list(comps), minimum_comps=np.int64(3)).ok  # type: ignore[arg-type]
    assert estimate_price(comps, minimum_comps=MAXIMUM_MINIMUM_COMPS).status is (
        PriceStatus.NOT_ENOUGH_DATA)
    assert estimate_price(comps, now=NOW.replace(tzinfo=None)).ok


def test_weighted_quantile_midpoint_and_validation() -> None:
    assert weighted_quantile([1.0, 3.0], [1.0, 1.0], 0.5) == 2.0
    assert weighted_quantile([3.0, 1.0, 2.0], [1.0, 1.0, 1.0], 0.5) == 2.0
    assert weighted_quantile([3.0, 1.0, 2.0], [0.1, 0.1, 5.0], 0.25) == 2.0
    assert weighted_quantile([Decimal("1"), Decimal("2")], [1.0, 1.0], 0.5) == Decimal("1.5")
    with pytest.raises(ValueError):
        weighted_quantile([], [], 0.5)


# -- properties ----------------------------------------------------------------

prices = st.decimals(min_value=Decimal("1"), max_value=Decimal("1000"), places=2)
scores = st.floats(min_value=0.05, max_value=1.0)
conditions = st.sampled_from(list(Condition))
solds = st.sampled_from([None, True, False])
comp_args = st.tuples(prices, scores, conditions, solds)


def build(args: list[tuple[Decimal, float, Condition, bool | None]], currency: str = "USD",
          prefix: str = "c") -> list[Comp]:
    return [comp(p, score=s, condition=c, sold=sold, currency=currency, key=f"{prefix}{i}")
            for i, (p, s, c, sold) in enumerate(args)]


@settings(max_examples=150, deadline=None)
@given(st.lists(comp_args, min_size=0, max_size=15), st.randoms(use_true_random=False))
def test_order_does_not_matter(args, rng) -> None:  # type: ignore[no-untyped-def]
    comps = build(args)
    shuffled = list(comps)
    rng.shuffle(shuffled)
    assert estimate_price(shuffled) == estimate_price(comps)


ages = st.floats(min_value=0.0, max_value=3650.0, allow_nan=False)
half_lives = st.floats(min_value=0.5, max_value=3650.0, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(ages, ages, half_lives, scores, prices, st.lists(comp_args, max_size=8))
def test_a_newer_sale_never_weighs_less_than_an_older_one(  # type: ignore[no-untyped-def]
    age_a, age_b, half_life, score, price, others
) -> None:
    newer, older = sorted((age_a, age_b))
    comps = [*build(others),
             comp(price, score=score, sold=True, days_ago=newer, key="newer"),
             comp(price, score=score, sold=True, days_ago=older, key="older")]
    estimate = estimate_price(comps, now=NOW, half_life_days=half_life)
    weights = {p.listing_key: p.weight for p in estimate.counted}
    # Both count or, as outliers of the same price, neither does.
    assert ("m:newer" in weights) == ("m:older" in weights)
    if "m:newer" in weights:
        assert weights["m:newer"] >= weights["m:older"]
    assert recency_factor(NOW - timedelta(days=newer), NOW, half_life) >= recency_factor(
        NOW - timedelta(days=older), NOW, half_life)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.decimals(min_value=Decimal("10"), max_value=Decimal("100"), places=2),
                       scores), min_size=4, max_size=15),
    st.decimals(min_value=Decimal("10000"), max_value=Decimal("1000000"), places=2),
    scores,
)
def test_one_wild_price_is_trimmed(base, wild, wild_score) -> None:  # type: ignore[no-untyped-def]
    comps = [comp(p, score=s, key=f"b{i}") for i, (p, s) in enumerate(base)]
    comps.append(comp(wild, score=wild_score, key="wild"))
    price = estimate_price(comps)
    assert ("m:wild", "outlier") in {(e.listing_key, e.reason) for e in price.exclusions}
    assert price.ok
    low, high = min(p for p, _ in base), max(p for p, _ in base)
    assert low <= price.estimate <= high  # type: ignore[operator]
    assert price.low <= price.estimate <= price.high  # type: ignore[operator]


@settings(max_examples=150, deadline=None)
@given(st.lists(comp_args, min_size=1, max_size=10), st.lists(comp_args, min_size=1, max_size=10))
def test_currencies_are_estimated_apart(eur_args, usd_args) -> None:  # type: ignore[no-untyped-def]
    eur = build(eur_args, currency="EUR", prefix="e")
    usd = build(usd_args, currency="USD", prefix="u")
    both = estimate_price(eur + usd)
    alone = estimate_price(eur)
    assert [b for b in both.bands if b.currency == "EUR"] == list(alone.bands)
    assert both.currency in {"EUR", "USD"}
    if both.currency == "EUR":
        assert both.counted == alone.counted and both.estimate == alone.estimate


@settings(max_examples=150, deadline=None)
@given(st.lists(comp_args, min_size=0, max_size=15))
def test_estimate_lies_within_the_counted_prices(args) -> None:  # type: ignore[no-untyped-def]
    price = estimate_price(build(args))
    if price.ok:
        amounts = [c.price.amount for c in price.counted if c.price.currency == price.currency]
        assert min(amounts) <= price.low <= price.estimate <= price.high <= max(amounts)
        assert price.comps_used >= price.minimum_comps
        assert 0 < price.effective_weight <= price.comps_used + 1e-9
    assert len(price.counted) + len(price.exclusions) == len(args)


def test_an_absurd_price_from_any_marketplace_is_excluded_not_an_error() -> None:
    comps = [comp(p) for p in ("10", "20", "30")] + [
        comp("1e30", key="typo"), comp("99999999999999999999999999999", key="overflow"),
    ]
    price = estimate_price(comps)
    assert price.status is PriceStatus.OK and price.estimate == Decimal("20.00")
    absurd = {e.listing_key: e.detail for e in price.exclusions if e.reason == "absurd_price"}
    assert set(absurd) == {"m:typo", "m:overflow"}
    assert absurd["m:typo"] == "absurd price 1E+30 USD"


def test_a_price_just_below_the_maximum_still_computes_in_cents() -> None:
    import decimal

    from restyle._pipeline.pricing import MAXIMUM_PRICE

    top = MAXIMUM_PRICE - 1
    with decimal.localcontext(decimal.Context(prec=6)):  # a caller's context does not matter
        price = estimate_price([comp(str(top)) for _ in range(3)])
    assert price.estimate == top

"""Reading eBay's answers: a page of items, and the fields every item answer
shares (ids, title, prices, condition, picture, seller, auction), each checked
and dropped when unusable rather than trusted."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from restyle._errors import MarketplaceResponseError
from restyle._types import Condition, Money
from restyle.marketplaces.ebay.config import CONDITION_IDS

logger = logging.getLogger("restyle.marketplaces.ebay")


def _item_fields(item: Any, marketplace: str, what: str) -> dict[str, Any] | None:
    """The Listing fields every eBay item answer has (``auction`` and
    ``bid_count`` among them), or None (and a log line) when ``item``, an
    ``what`` of eBay's answer, is unusable."""
    if not isinstance(item, dict):
        logger.debug("skipping an eBay %s that is not an object", what)
        return None
    item_id, title = _text(item.get("itemId")), _text(item.get("title"))
    if item_id is None or title is None:
        logger.debug("skipping an eBay %s without itemId or title", what)
        return None
    options = item.get("buyingOptions")
    options = [o for o in options if isinstance(o, str)] if isinstance(options, list) else []
    # A pure auction; with "Buy It Now" beside it, the fixed price is the asking price.
    auction = "AUCTION" in options and "FIXED_PRICE" not in options
    seller: dict[str, Any] = item["seller"] if isinstance(item.get("seller"), dict) else {}
    return {
        "marketplace": marketplace,
        "listing_id": item_id,
        "title": title,
        "url": _text(item.get("itemWebUrl")),
        "image_url": _image_url(item),
        "condition": _condition(item),
        "seller": _text(seller.get("username")),
        "seller_feedback_percent": _feedback_percent(seller.get("feedbackPercentage")),
        "seller_feedback_score": _integer(seller.get("feedbackScore")),
        "auction": auction,
        "bid_count": _integer(item.get("bidCount")) if auction else None,
    }


def _parse_page(
    data: Mapping[str, Any], what: str, field: str, marketplace: str
) -> tuple[list[Any], int | None, bool]:
    """The items of one page (under ``field``), eBay's ``total`` and whether a
    next page exists."""
    items = data.get(field, [])
    if not isinstance(items, list):
        raise MarketplaceResponseError(
            f"eBay {what} answer has {field} that is not a list", marketplace=marketplace
        )
    total = data.get("total")
    if isinstance(total, bool) or not isinstance(total, int):
        total = None
    return items, total, bool(data.get("next"))


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _amount(value: Any) -> Money | None:
    """eBay's ``{"value": "12.99", "currency": "USD"}`` as Money, or None if unusable."""
    if not isinstance(value, dict):
        return None
    raw, currency = value.get("value"), value.get("currency")
    if isinstance(raw, bool) or not isinstance(raw, (str, int, float)):
        return None
    if not isinstance(currency, str):
        return None
    try:
        return Money(amount=Decimal(str(raw).strip()), currency=currency)
    except (InvalidOperation, ValueError):
        return None


def _integer(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _condition(item: Mapping[str, Any]) -> Condition:
    condition_id = _integer(item.get("conditionId"))
    if condition_id is not None and condition_id in CONDITION_IDS:
        return CONDITION_IDS[condition_id]
    return Condition.parse(_text(item.get("condition")))


def _image_url(item: Mapping[str, Any]) -> str | None:
    candidates = [item.get("image")]
    thumbs = item.get("thumbnailImages")
    if isinstance(thumbs, list):
        candidates.extend(thumbs)
    for candidate in candidates:
        if isinstance(candidate, dict):
            url = _text(candidate.get("imageUrl"))
            if url and url.startswith(("https://", "http://")):
                return url
    return None


def _shipping(item: Mapping[str, Any], price: Money | None) -> Money | None:
    """The cheapest stated shipping cost, in the price's currency; None when not stated."""
    options = item.get("shippingOptions")
    if not isinstance(options, list):
        return None
    costs = [_amount(o.get("shippingCost")) for o in options if isinstance(o, dict)]
    usable = [c for c in costs if c is not None and (price is None or c.currency == price.currency)]
    return min(usable, key=lambda m: m.amount) if usable else None


def _feedback_percent(value: Any) -> float | None:
    try:
        number = float(value) if isinstance(value, (str, int, float)) else None
    except ValueError:
        return None
    if isinstance(value, bool) or number is None or not 0.0 <= number <= 100.0:
        return None
    return number


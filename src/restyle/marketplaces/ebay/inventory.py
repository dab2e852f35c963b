"""A listing draft as eBay Sell Inventory API payloads (an ``InventoryItem``
for createOrReplaceInventoryItem, an offer for createOffer), checked against
eBay's published contract (:mod:`.inventory_contract`), and the publisher
that sends them with a seller's user token (scope ``sell.inventory``):
the inventory item and an unpublished offer, published only when asked."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from restyle import _settings
from restyle._errors import ConfigurationError, MarketplaceError, MarketplaceResponseError
from restyle._listing import TITLE_LIMIT, ListingDraft
from restyle._secrets import Secret
from restyle.marketplaces.ebay.client import _EbayClient
from restyle.marketplaces.ebay.config import PRODUCTION_URL
from restyle.marketplaces.ebay.inventory_contract import SCHEMAS

__all__ = [
    "CONDITION_ENUMS",
    "INVENTORY_PATH",
    "INVENTORY_SCOPE",
    "EbayPublisher",
    "Published",
    "SellerSettings",
    "inventory_item",
    "offer",
    "validate",
]

INVENTORY_PATH = "/sell/inventory/v1"
INVENTORY_SCOPE = "https://api.ebay.com/oauth/api_scope/sell.inventory"
ENV_USER_TOKEN = "EBAY_USER_TOKEN"

#: The Inventory API's ``ConditionEnum`` of each eBay condition id.
CONDITION_ENUMS: dict[str, str] = {
    "1000": "NEW", "1500": "NEW_OTHER", "1750": "NEW_WITH_DEFECTS", "2000": "CERTIFIED_REFURBISHED",
    "2010": "EXCELLENT_REFURBISHED", "2020": "VERY_GOOD_REFURBISHED",
    "2030": "GOOD_REFURBISHED", "2500": "SELLER_REFURBISHED", "2750": "LIKE_NEW",
    "2990": "PRE_OWNED_EXCELLENT", "3000": "USED_EXCELLENT", "3010": "PRE_OWNED_FAIR",
    "4000": "USED_VERY_GOOD", "5000": "USED_GOOD", "6000": "USED_ACCEPTABLE",
    "7000": "FOR_PARTS_OR_NOT_WORKING",
}
#: The Content-Language of each marketplace's payloads.
LANGUAGES: dict[str, str] = {
    "EBAY_US": "en-US", "EBAY_GB": "en-GB", "EBAY_AU": "en-AU", "EBAY_CA": "en-CA",
    "EBAY_IE": "en-IE", "EBAY_DE": "de-DE", "EBAY_AT": "de-AT", "EBAY_CH": "de-CH",
    "EBAY_FR": "fr-FR", "EBAY_IT": "it-IT", "EBAY_ES": "es-ES", "EBAY_NL": "nl-NL",
    "EBAY_BE": "nl-BE", "EBAY_PL": "pl-PL",
}
_SKU = re.compile(r"^[A-Za-z0-9_-]{1,50}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class SellerSettings:
    """The seller's business policies and inventory location, by id, as eBay's
    Account API gives them; each read from its ``EBAY_*`` variable when not given."""

    fulfillment_policy_id: str | None = None
    payment_policy_id: str | None = None
    return_policy_id: str | None = None
    merchant_location_key: str | None = None

    @classmethod
    def from_environment(cls) -> SellerSettings:
        return cls(
            fulfillment_policy_id=_settings.env_str("EBAY_FULFILLMENT_POLICY_ID"),
            payment_policy_id=_settings.env_str("EBAY_PAYMENT_POLICY_ID"),
            return_policy_id=_settings.env_str("EBAY_RETURN_POLICY_ID"),
            merchant_location_key=_settings.env_str("EBAY_MERCHANT_LOCATION_KEY"),
        )


def inventory_item(draft: ListingDraft, *, image_urls: Sequence[str] = (), quantity: int = 1
                   ) -> dict[str, Any]:
    """The draft as createOrReplaceInventoryItem's ``InventoryItem``."""
    product: dict[str, Any] = {
        "title": draft.title,
        "description": draft.description,
        "aspects": {a.name: list(a.values) for a in draft.aspects},
    }
    brand = next((a.values[0] for a in draft.aspects if a.field == "brand"), None)
    if brand:
        product["brand"] = brand
    if image_urls:
        product["imageUrls"] = list(image_urls)
    item: dict[str, Any] = {
        "availability": {"shipToLocationAvailability": {"quantity": quantity}},
        "product": product,
    }
    if draft.condition_id in CONDITION_ENUMS:
        item["condition"] = CONDITION_ENUMS[draft.condition_id]
    if draft.condition_description:
        item["conditionDescription"] = draft.condition_description
    return item


def offer(draft: ListingDraft, *, sku: str, settings: SellerSettings, quantity: int = 1
          ) -> dict[str, Any]:
    """The draft as createOffer's ``EbayOfferDetailsWithKeys``: a fixed price,
    good till cancelled, in the draft's category, with the seller's policies."""
    body: dict[str, Any] = {
        "sku": sku, "marketplaceId": draft.marketplace_id, "format": "FIXED_PRICE",
        "availableQuantity": quantity, "listingDuration": "GTC",
        "listingDescription": draft.description,
    }
    if draft.category.category_id:
        body["categoryId"] = draft.category.category_id
    if draft.price.amount is not None:
        body["pricingSummary"] = {"price": {"value": f"{draft.price.amount.amount:.2f}",
                                            "currency": draft.price.amount.currency}}
    policies = {"fulfillmentPolicyId": settings.fulfillment_policy_id,
                "paymentPolicyId": settings.payment_policy_id,
                "returnPolicyId": settings.return_policy_id}
    if any(policies.values()):
        body["listingPolicies"] = {k: v for k, v in policies.items() if v}
    if settings.merchant_location_key:
        body["merchantLocationKey"] = settings.merchant_location_key
    return body


def _closed(schema: Any) -> Any:
    """``schema`` with every object closed to the properties it names."""
    if isinstance(schema, dict):
        closed = {k: _closed(v) for k, v in schema.items()}
        if closed.get("type") == "object" and "properties" in closed:
            closed.setdefault("additionalProperties", False)
        return closed
    if isinstance(schema, list):
        return [_closed(v) for v in schema]
    return schema


def validate(payload: Mapping[str, Any], schema: str) -> list[str]:
    """What is wrong with ``payload`` by the contract's schema ``schema``
    (``"InventoryItem"`` or ``"EbayOfferDetailsWithKeys"``), every object
    closed so a misspelt field is caught too, and by eBay's documented limits
    the contract states only in words (an 80-character title, a SKU of at
    most 50 letters, digits, ``-`` and ``_``). Empty when it is right."""
    try:
        import jsonschema
    except ImportError as exc:  # pragma: no cover - the [listing] extra
        raise ConfigurationError("checking payloads needs jsonschema: "
                                 "pip install 'restyle[listing]'") from exc
    closed = _closed(SCHEMAS)
    root = {**closed[schema], "components": {"schemas": closed}}
    validator = jsonschema.Draft7Validator(root)
    problems = [f"{'/'.join(str(p) for p in error.absolute_path) or schema}: {error.message}"
                for error in validator.iter_errors(dict(payload))]
    title = payload.get("product", {}).get("title") if schema == "InventoryItem" else None
    if isinstance(title, str) and len(title) > TITLE_LIMIT:
        problems.append(f"product/title: longer than {TITLE_LIMIT} characters")
    sku = payload.get("sku")
    if isinstance(sku, str) and not _SKU.match(sku):
        problems.append("sku: at most 50 letters, digits, '-' and '_'")
    return problems


@dataclass(frozen=True, slots=True)
class Published:
    """What the publisher did: the SKU, the offer's id, and the listing's id
    when it was published (None for an unpublished offer)."""

    sku: str
    offer_id: str
    listing_id: str | None = None


class EbayPublisher(_EbayClient):
    """Creates a draft's inventory item and offer in a seller's eBay account.

    ``user_token`` is a user access token the seller granted the
    ``sell.inventory`` scope (or ``EBAY_USER_TOKEN``); it is held as a Secret,
    so no message, log line or repr shows it. Sends with the retries and the
    error mapping of the other eBay components.
    """

    name = "ebay-publisher"
    error_type = MarketplaceError

    def __init__(
        self, *, user_token: str | None = None, base_url: str | None = None,
        settings: SellerSettings | None = None,
        timeout: float | tuple[float, float] = (5.0, 30.0), max_retries: int = 2,
        backoff: float = 0.5, max_backoff: float = 4.0, max_retry_after: float = 10.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__()
        token = user_token or _settings.env_str(ENV_USER_TOKEN)
        if not token:
            raise ConfigurationError(
                f"publishing needs a seller's user access token with the {INVENTORY_SCOPE} "
                f"scope: pass user_token or set {ENV_USER_TOKEN} (see docs/listing.md)")
        self._user_token = Secret(token)
        self.base_url = (base_url or _settings.env_str("EBAY_BASE_URL") or PRODUCTION_URL
                         ).rstrip("/")
        self.settings = settings or SellerSettings.from_environment()
        self.request_timeout, self.max_retries = timeout, max_retries
        self.backoff, self.max_backoff, self.max_retry_after = backoff, max_backoff, max_retry_after
        self._sleep = sleep
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<EbayPublisher {self.base_url}>"

    def _request(self, method: str, path: str, body: Mapping[str, Any] | None, *,
                 language: str, what: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {self._user_token.reveal()}",
                   "Accept": "application/json", "Content-Language": language}
        response = self._send(method, self.base_url + INVENTORY_PATH + path, what=what,
                              headers=headers, json=body)
        if not response.ok:
            raise self._http_error(response, what)
        if response.status_code == 204 or not response.content:
            return {}
        return self._json_object(response, what)

    def payloads(self, draft: ListingDraft, *, sku: str, image_urls: Sequence[str] = ()
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
        """The inventory item and the offer, checked; ConfigurationError, naming
        every problem, when the draft or the payloads would not do."""
        missing = [what for what, absent in (
            ("a category", draft.category.category_id is None),
            ("a price", draft.price.amount is None),
            ("a condition", draft.condition_id is None),
            ("a title", not draft.title)) if absent]
        item = inventory_item(draft, image_urls=image_urls)
        body = offer(draft, sku=sku, settings=self.settings)
        wrong = [*validate(item, "InventoryItem"), *validate(body, "EbayOfferDetailsWithKeys")]
        if missing or wrong:
            raise ConfigurationError(
                "the draft cannot be published yet: "
                + "; ".join([*(f"it has no {m}" for m in missing), *wrong]))
        return item, body

    def publish(self, draft: ListingDraft, *, sku: str, image_urls: Sequence[str] = (),
                publish: bool = False) -> Published:
        """Create (or replace) the inventory item ``sku`` and an offer for it;
        publish the offer as a live listing only when ``publish`` is True."""
        item, body = self.payloads(draft, sku=sku, image_urls=image_urls)
        language = LANGUAGES.get(draft.marketplace_id, "en-US")
        with self._lock:
            self._request("PUT", f"/inventory_item/{quote(sku, safe='')}", item,
                          language=language, what="createOrReplaceInventoryItem")
            created = self._request("POST", "/offer", body, language=language,
                                    what="createOffer")
            offer_id = created.get("offerId")
            if not isinstance(offer_id, str) or not offer_id:
                self._fail("eBay createOffer answered without an offerId",
                           error_type=MarketplaceResponseError, marketplace=self.name)
            if not publish:
                return Published(sku=sku, offer_id=offer_id)
            listed = self._request("POST", f"/offer/{quote(offer_id, safe='')}/publish", None,
                                   language=language, what="publishOffer")
        listing_id = listed.get("listingId")
        return Published(sku=sku, offer_id=offer_id,
                         listing_id=listing_id if isinstance(listing_id, str) else None)

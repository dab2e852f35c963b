"""A fake eBay for listing drafts, on 127.0.0.1: the Taxonomy API's
getDefaultCategoryTreeId, getCategorySuggestions and getItemAspectsForCategory,
the Metadata API's getItemConditionPolicies (with an application token of
scope api_scope), and the Inventory API's createOrReplaceInventoryItem,
createOffer and publishOffer (with a seller's user token). The answers are the
JSON files of tests/fakes/ebay_seller/ (see PROVENANCE.md there); the OAuth
token endpoint and the scripted failures are those of tests/fakes/ebay.py."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from restyle.testing import Reply, Request
from tests.fakes.ebay import (
    ACCESS_DENIED,
    INVALID_TOKEN,
    SCOPE,
    FakeEbay,
    Recorded,
    _reply,
    ebay_error,
)

FIXTURES = Path(__file__).parent / "ebay_seller"
TAXONOMY = "/commerce/taxonomy/v1"
TREE_PATH = f"{TAXONOMY}/get_default_category_tree_id"
SUGGESTIONS_PATH = f"{TAXONOMY}/category_tree/0/get_category_suggestions"
ASPECTS_PATH = f"{TAXONOMY}/category_tree/0/get_item_aspects_for_category"
CONDITIONS_PATH = "/sell/metadata/v1/marketplace/EBAY_US/get_item_condition_policies"
INVENTORY = "/sell/inventory/v1"
OFFER_PATH = f"{INVENTORY}/offer"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


class FakeEbaySeller(FakeEbay):
    """:class:`FakeEbay` that also answers the draft's and the publisher's calls.

    ``aspects`` replaces the category's aspects answer; ``user_tokens`` are the
    sellers' tokens the Inventory API takes. What was PUT and POSTed is kept
    in :attr:`inventory` (by SKU) and :attr:`offers` (by offer id).
    """

    def __init__(self, *, aspects: Mapping[str, Any] | None = None,
                 user_tokens: tuple[str, ...] = (), **kwargs: Any) -> None:
        kwargs.setdefault("client_id", "fake-taxonomy-id")
        kwargs.setdefault("client_secret", "fake-taxonomy-secret-83a1")
        super().__init__(**kwargs)
        self.aspects = dict(aspects or fixture("item_aspects"))
        self.user_tokens = set(user_tokens)
        self.inventory: dict[str, Any] = {}
        self.offers: dict[str, Any] = {}
        self.published: list[str] = []

    def _respond(self, request: Request) -> Reply:
        parts = urlsplit(request.path)
        if not parts.path.startswith((TAXONOMY, "/sell/")):
            return super()._respond(request)
        recorded, scripted = self._record(request)
        if scripted is not None:
            return scripted
        query = recorded.query
        if parts.path.startswith(INVENTORY):
            return self._inventory(recorded)
        refused = self._application_token(recorded)
        if refused is not None:
            return refused
        if parts.path == TREE_PATH:
            if query.get("marketplace_id") != "EBAY_US":
                return _reply(400, ebay_error(62004, "The specified marketplace ID was not found.",
                                              domain="API_TAXONOMY"))
            return _reply(200, fixture("default_category_tree_id"))
        if parts.path == SUGGESTIONS_PATH:
            return _reply(200, fixture("category_suggestions") if query.get("q") else
                          ebay_error(62003, "Missing keyword", domain="API_TAXONOMY"))
        if parts.path == ASPECTS_PATH:
            return _reply(200, self.aspects if query.get("category_id") in ("57988", "63862")
                          else ebay_error(62005, "The specified category ID was not found.",
                                          domain="API_TAXONOMY"))
        if parts.path == CONDITIONS_PATH:
            return _reply(200, fixture("item_condition_policies"))
        return _reply(404, ebay_error(2002, "Resource not found"))

    def _application_token(self, recorded: Recorded) -> Reply | None:
        auth = recorded.headers.get("Authorization", "")
        with self._lock:
            scope = self.valid_tokens.get(auth[len("Bearer "):]) if auth.startswith(
                "Bearer ") else None
        if scope is None:
            return _reply(401, INVALID_TOKEN)
        return None if scope == SCOPE else _reply(403, ACCESS_DENIED)

    def _inventory(self, recorded: Recorded) -> Reply:
        auth = recorded.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or auth[len("Bearer "):] not in self.user_tokens:
            return _reply(401, INVALID_TOKEN)
        if not recorded.headers.get("Content-Language"):
            return _reply(400, ebay_error(25709, "Invalid value for header Content-Language.",
                                          domain="API_INVENTORY"))
        path = recorded.path[len(INVENTORY):]
        if recorded.method == "PUT" and path.startswith("/inventory_item/"):
            self.inventory[path.rsplit("/", 1)[1]] = json.loads(recorded.body)
            return Reply(status=204)
        if recorded.method == "POST" and path == "/offer":
            answer = fixture("create_offer")
            self.offers[answer["offerId"]] = json.loads(recorded.body)
            return _reply(201, answer)
        if recorded.method == "POST" and path.endswith("/publish"):
            offer_id = path.split("/")[2]
            if offer_id not in self.offers:
                return _reply(404, ebay_error(25713, "This Offer is not available.",
                                              domain="API_INVENTORY"))
            self.published.append(offer_id)
            return _reply(200, fixture("publish_offer"))
        return _reply(404, ebay_error(2002, "Resource not found"))

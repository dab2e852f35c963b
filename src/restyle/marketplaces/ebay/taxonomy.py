"""eBay's Taxonomy API (the category tree of a marketplace, the categories it
suggests for some words, a leaf category's aspects) and its Metadata API (the
conditions a category allows), with the application's token (scope
``https://api.ebay.com/oauth/api_scope``), answering restyle's
:class:`~restyle._listing.Taxonomy` for listing drafts.

eBay asks clients to cache what changes rarely: the tree id and a category's
aspects and conditions are kept, a bounded number of them, each for at most
``max_age`` seconds."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote

from restyle._errors import MarketplaceError, MarketplaceResponseError
from restyle._listing import (
    AspectMode,
    AspectSpec,
    CategorySuggestion,
    ConditionOption,
)
from restyle._taxonomy import clean_text
from restyle.marketplaces.ebay.auth import _Credentials, _EbayAuth
from restyle.marketplaces.ebay.config import SCOPE, _check_marketplace_id, _resolve_config

__all__ = ["CONDITION_POLICIES_PATH", "TAXONOMY_PATH", "EbayTaxonomy"]

TAXONOMY_PATH = "/commerce/taxonomy/v1"
CONDITION_POLICIES_PATH = "/sell/metadata/v1/marketplace/{}/get_item_condition_policies"

#: The most aspects of a category, and values of an aspect, that are kept.
MAX_ASPECTS = 300
MAX_VALUES = 5000
#: The longest name or value kept (eBay's own limit on aspect values is 65).
MAX_TEXT = 200

V = TypeVar("V")


class _AgedCache:
    """At most ``size`` answers, each for at most ``max_age`` seconds; the
    least recently used goes first."""

    def __init__(self, size: int, max_age: float, clock: Callable[[], float]) -> None:
        self.size, self.max_age, self._clock = size, max_age, clock
        self._items: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], V]) -> V:
        now = self._clock()
        with self._lock:
            held = self._items.get(key)
            if held is not None and now - held[0] < self.max_age:
                self._items.move_to_end(key)
                value: V = held[1]
                return value
        value = make()  # outside the lock: one slow answer does not hold up the others
        with self._lock:
            self._items[key] = (now, value)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return value

    def __len__(self) -> int:
        return len(self._items)


def _text(value: Any) -> str:
    return clean_text(value, limit=MAX_TEXT) if isinstance(value, str) else ""


def _list(data: Mapping[str, Any], name: str) -> list[Any]:
    value = data.get(name)
    return value if isinstance(value, list) else []


def parse_suggestions(data: Mapping[str, Any]) -> tuple[CategorySuggestion, ...]:
    """``getCategorySuggestions``' answer: the leaves, most relevant first,
    each with its ancestors' names from the top down (the root left out)."""
    found: list[CategorySuggestion] = []
    for entry in _list(data, "categorySuggestions"):
        category = entry.get("category") if isinstance(entry, dict) else None
        if not isinstance(category, dict):
            continue
        category_id, name = _text(category.get("categoryId")), _text(category.get("categoryName"))
        if not category_id or not name:
            continue
        ancestors = [a for a in _list(entry, "categoryTreeNodeAncestors") if isinstance(a, dict)]
        path = tuple(_text(a.get("categoryName")) for a in reversed(ancestors)
                     if a.get("categoryTreeNodeLevel") != 0 and _text(a.get("categoryName")))
        level = entry.get("categoryTreeNodeLevel")
        found.append(CategorySuggestion(
            category_id=category_id, name=name, path=path,
            level=level if isinstance(level, int) and not isinstance(level, bool) else 0))
    return tuple(found)


def parse_aspects(data: Mapping[str, Any]) -> tuple[AspectSpec, ...]:
    """``getItemAspectsForCategory``' answer as aspect specs."""
    specs: list[AspectSpec] = []
    for entry in _list(data, "aspects")[:MAX_ASPECTS]:
        if not isinstance(entry, dict):
            continue
        name = _text(entry.get("localizedAspectName"))
        constraint = entry.get("aspectConstraint")
        constraint = constraint if isinstance(constraint, dict) else {}
        if not name:
            continue
        mode = (AspectMode.SELECTION_ONLY if constraint.get("aspectMode") == "SELECTION_ONLY"
                else AspectMode.FREE_TEXT)
        limit = constraint.get("aspectMaxLength")
        values = tuple(dict.fromkeys(
            v for v in (_text(value.get("localizedValue")) for value in
                        _list(entry, "aspectValues")[:MAX_VALUES] if isinstance(value, dict))
            if v))
        specs.append(AspectSpec(
            name=name, mode=mode, required=constraint.get("aspectRequired") is True,
            multi=constraint.get("itemToAspectCardinality") == "MULTI",
            max_length=limit if isinstance(limit, int) and not isinstance(limit, bool)
            and limit > 0 else None,
            values=values, usage=_text(constraint.get("aspectUsage"))))
    return tuple(specs)


def parse_conditions(data: Mapping[str, Any], category_id: str
                     ) -> tuple[ConditionOption, ...] | None:
    """``getItemConditionPolicies``' conditions of ``category_id``; None when it has no policy."""
    for policy in _list(data, "itemConditionPolicies"):
        if not isinstance(policy, dict) or _text(policy.get("categoryId")) != category_id:
            continue
        return tuple(
            ConditionOption(condition_id=_text(c.get("conditionId")),
                            name=_text(c.get("conditionDescription")))
            for c in _list(policy, "itemConditions")
            if isinstance(c, dict) and _text(c.get("conditionId")))
    return None


class EbayTaxonomy(_EbayAuth):
    """eBay's categories, aspects and conditions for listing drafts.

    Cheap to make and needs no keys until first asked; they are read from
    ``client_id``/``client_secret`` or ``EBAY_CLIENT_ID``/``EBAY_CLIENT_SECRET``.
    ``base_url`` (or ``EBAY_BASE_URL``) points it at the sandbox or a fake.
    """

    name = "ebay-taxonomy"
    error_type = MarketplaceError
    api: ClassVar[str] = "Taxonomy API"
    scope: ClassVar[str] = SCOPE

    def __init__(
        self, *, client_id: str | None = None, client_secret: str | None = None,
        base_url: str | None = None, timeout: float | tuple[float, float] = (5.0, 20.0),
        max_retries: int = 2, backoff: float = 0.5, max_backoff: float = 4.0,
        max_retry_after: float = 10.0, cache_size: int = 256, max_age: float = 24 * 3600.0,
        sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._credentials = (_Credentials(client_id, client_secret)
                             if client_id is not None and client_secret is not None else None)
        self._base_url = base_url
        self.request_timeout, self.max_retries = timeout, max_retries
        self.backoff, self.max_backoff, self.max_retry_after = backoff, max_backoff, max_retry_after
        self._sleep, self._clock = sleep, clock
        self._token, self._token_lock, self._scope_refused = None, threading.Lock(), False
        self._trees = _AgedCache(64, max_age, clock)
        self._aspects = _AgedCache(cache_size, max_age, clock)
        self._conditions = _AgedCache(cache_size, max_age, clock)

    def __repr__(self) -> str:
        return f"<EbayTaxonomy cached={len(self._aspects)} aspect lists>"

    def _get(self, path: str, params: Mapping[str, str], marketplace_id: str, what: str
             ) -> dict[str, Any]:
        config = _resolve_config(marketplace_id, self._base_url, False)
        return self._call("GET", path, params, config, what=what)

    def tree_id(self, marketplace_id: str) -> str:
        """The marketplace's default category tree id (cached)."""
        _check_marketplace_id(marketplace_id)

        def ask() -> str:
            data = self._get(f"{TAXONOMY_PATH}/get_default_category_tree_id",
                             {"marketplace_id": marketplace_id}, marketplace_id,
                             "category tree request")
            tree = _text(data.get("categoryTreeId"))
            if not tree:
                self._fail("eBay answered without a categoryTreeId",
                           error_type=MarketplaceResponseError, marketplace=self.name)
            return tree

        return self._trees.get(marketplace_id, ask)

    def category_suggestions(self, query: str, *, marketplace_id: str, deadline: float
                             ) -> tuple[str, tuple[CategorySuggestion, ...]]:
        tree = self.tree_id(marketplace_id)
        data = self._get(f"{TAXONOMY_PATH}/category_tree/{quote(tree, safe='')}"
                         "/get_category_suggestions", {"q": query}, marketplace_id,
                         "category suggestions")
        return tree, parse_suggestions(data)

    def item_aspects(self, tree_id: str, category_id: str, *, deadline: float
                     ) -> tuple[AspectSpec, ...]:
        def ask() -> tuple[AspectSpec, ...]:
            data = self._get(f"{TAXONOMY_PATH}/category_tree/{quote(tree_id, safe='')}"
                             "/get_item_aspects_for_category", {"category_id": category_id},
                             "EBAY_US", "item aspects request")
            return parse_aspects(data)

        return self._aspects.get((tree_id, category_id), ask)

    def item_conditions(self, category_id: str, *, marketplace_id: str, deadline: float
                        ) -> tuple[ConditionOption, ...] | None:
        _check_marketplace_id(marketplace_id)

        def ask() -> tuple[ConditionOption, ...] | None:
            data = self._get(CONDITION_POLICIES_PATH.format(marketplace_id),
                             {"filter": f"categoryIds:{{{category_id}}}"}, marketplace_id,
                             "condition policies request")
            return parse_conditions(data, category_id)

        return self._conditions.get((marketplace_id, category_id), ask)

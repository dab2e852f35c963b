"""The values of a listing draft: frozen, typed, keyword-only, each with
``to_dict()``/``from_dict()`` as every restyle value has.

The marketplace's side (what a category allows: :class:`AspectSpec`,
:class:`CategorySuggestion`, :class:`ConditionOption`) and the draft's side
(:class:`ListingDraft` and its parts) live here together, so that a
marketplace plugin can answer in these types without knowing the rest.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

from restyle._serde import redacting_repr
from restyle._types import Condition, Money, PhotoInfo, Value

__all__ = [
    "AspectMode",
    "AspectSpec",
    "CategoryChoice",
    "CategorySuggestion",
    "ConditionOption",
    "DraftAspect",
    "DraftPrice",
    "ListingDraft",
    "PriceStrategy",
]


class AspectMode(str, enum.Enum):
    """How a marketplace takes an aspect's value (eBay's ``aspectMode``)."""

    #: Only one of the listed values.
    SELECTION_ONLY = "SELECTION_ONLY"
    #: Any text within the length limit; the listed values are suggestions.
    FREE_TEXT = "FREE_TEXT"


class PriceStrategy(str, enum.Enum):
    """Where in the estimate's range the asking price sits (see docs/listing.md)."""

    #: Sell fast: a quarter of the way from the low end to the estimate.
    QUICK = "quick"
    #: The estimate itself.
    MARKET = "market"
    #: Wait for the right buyer: half way from the estimate to the high end.
    PATIENT = "patient"


@dataclass(frozen=True, slots=True, kw_only=True)
class AspectSpec(Value):
    """One aspect (item specific) a category takes: its name as the marketplace
    spells it, whether a listing must have it, how its value is given, whether
    it takes several, the longest value (None: no limit said) and the values
    the marketplace lists (the only ones allowed when ``mode`` is SELECTION_ONLY)."""

    name: str
    mode: AspectMode = AspectMode.FREE_TEXT
    required: bool = False
    multi: bool = False
    max_length: int | None = None
    values: tuple[str, ...] = ()
    usage: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CategorySuggestion(Value):
    """A leaf category the marketplace suggests for some words, its ancestors'
    names from the root down, and its level in the tree."""

    category_id: str
    name: str
    path: tuple[str, ...] = ()
    level: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ConditionOption(Value):
    """A condition a category allows: the marketplace's id and name."""

    condition_id: str
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CategoryChoice(Value):
    """The category a draft is listed in; all None when none could be chosen.
    ``tree_id`` is the marketplace's category tree, ``path`` the ancestors'
    names, ``source`` who chose it (``"ebay"``, or ``"none"``)."""

    category_id: str | None = None
    name: str | None = None
    tree_id: str | None = None
    path: tuple[str, ...] = ()
    source: str = "none"


@dataclass(frozen=True, slots=True, kw_only=True)
class DraftAspect(Value):
    """An item specific of the draft: the aspect's name, its value(s), and the
    identification field they came from (``brand``, ``color``, ...)."""

    name: str
    values: tuple[str, ...]
    field: str


@dataclass(frozen=True, slots=True, kw_only=True)
class DraftPrice(Value):
    """The asking price (None when the estimate could not give one), the
    strategy that chose it, and how, in words."""

    amount: Money | None
    strategy: PriceStrategy
    basis: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ListingDraft(Value):
    """A listing a reseller can post, built from an analysis (see docs/listing.md).

    Every word of ``title``, every aspect value and the ``description`` comes
    from the identification and its evidence. ``condition`` is restyle's
    scale; ``condition_id``/``condition_name`` the marketplace's condition the
    category allows. ``problems`` says, in words, what the marketplace needs
    that the analysis does not know (a required aspect, the category, the
    price) and what was left out; ``removed`` what was struck out of a
    written description because the evidence does not support it.
    """

    title: str
    marketplace_id: str
    category: CategoryChoice
    aspects: tuple[DraftAspect, ...]
    condition: Condition
    condition_id: str | None
    condition_name: str | None
    condition_description: str
    price: DraftPrice
    description: str
    photos: tuple[PhotoInfo, ...] = ()
    problems: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    description_source: str = "template"

    def aspect(self, name: str) -> tuple[str, ...]:
        """The value(s) of aspect ``name`` (case-insensitive), or ``()``."""
        wanted = name.casefold()
        for aspect in self.aspects:
            if aspect.name.casefold() == wanted:
                return aspect.values
        return ()

    @property
    def ready(self) -> bool:
        """True when nothing stands in the way of posting it."""
        return not self.problems

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> ListingDraft:
        return cls.from_dict(json.loads(text))

    def _repr_html_(self) -> str:
        from restyle._listing.view import draft_html

        return draft_html(self)


for _cls in (AspectSpec, CategorySuggestion, ConditionOption, CategoryChoice, DraftAspect,
             DraftPrice, ListingDraft):
    redacting_repr(_cls)

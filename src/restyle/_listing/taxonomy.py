"""What a draft asks a marketplace, as a small interface: the categories it
suggests for some words, a category's aspects and the conditions it allows.
``restyle.marketplaces.ebay.EbayTaxonomy`` answers it from eBay's Taxonomy
and Metadata APIs; without one the draft is made offline."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from restyle._listing.values import AspectSpec, CategorySuggestion, ConditionOption

__all__ = ["Taxonomy"]


@runtime_checkable
class Taxonomy(Protocol):
    """A marketplace's categories, their aspects and their conditions.

    Each method ends by ``deadline`` (a :func:`time.monotonic` value) or
    raises a RestyleError; the draft runs each under that deadline in any case.
    """

    name: str

    def category_suggestions(self, query: str, *, marketplace_id: str, deadline: float
                             ) -> tuple[str, tuple[CategorySuggestion, ...]]:
        """The marketplace's category tree id and its leaf categories for
        ``query``, the most relevant first."""
        ...

    def item_aspects(self, tree_id: str, category_id: str, *, deadline: float
                     ) -> tuple[AspectSpec, ...]:
        """The aspects leaf category ``category_id`` of tree ``tree_id`` takes."""
        ...

    def item_conditions(self, category_id: str, *, marketplace_id: str, deadline: float
                        ) -> tuple[ConditionOption, ...] | None:
        """The conditions the category allows; None when it does not say."""
        ...

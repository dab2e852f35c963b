"""From an analysis to a listing draft: the title, the category and its
item specifics (asked of a :class:`Taxonomy` when there is one, a generic
list offline), the condition, the price and the description, each call to
the marketplace or a writer answered by one deadline."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from restyle._errors import ConfigurationError, RestyleError
from restyle._listing.aspects import GENERIC_ASPECTS, fill_aspects
from restyle._listing.condition import (
    choose_condition,
    condition_description,
    draft_condition,
    flaw_photos,
)
from restyle._listing.description import Writer, facts_of, template_html, written_html
from restyle._listing.pricing import asking_price
from restyle._listing.taxonomy import Taxonomy
from restyle._listing.text import clean
from restyle._listing.title import build_title, fit, supported
from restyle._listing.values import (
    AspectSpec,
    CategoryChoice,
    CategorySuggestion,
    ConditionOption,
    DraftAspect,
    ListingDraft,
    PriceStrategy,
)
from restyle._pipeline import budget as _budget
from restyle._secrets import describe
from restyle._types import Analysis, Condition

__all__ = ["DRAFT_DEADLINE", "make_draft"]

logger = logging.getLogger("restyle")

#: Seconds a draft may take, all its marketplace calls together, unless told otherwise.
DRAFT_DEADLINE = 20.0
#: The longest query a category suggestion is asked with.
QUERY_LIMIT = 100


@dataclass(frozen=True, slots=True)
class _Category:
    choice: CategoryChoice
    specs: tuple[AspectSpec, ...]
    conditions: tuple[ConditionOption, ...] | None


def _query(analysis: Analysis) -> str:
    ident = analysis.identification
    words: list[str] = []
    for name in ("brand", "product_name", "category"):
        value = supported(ident, name)
        if value:
            words.extend(value.split())
    return fit(words, QUERY_LIMIT)


def _leaf(suggestions: tuple[CategorySuggestion, ...], category: str | None
          ) -> CategorySuggestion:
    """The first suggestion whose name or ancestors name the identified
    category (its singular or plural), else eBay's first."""
    if category:
        word = category.casefold().rstrip("s")
        for suggestion in suggestions:
            names = " ".join((suggestion.name, *suggestion.path)).casefold()
            if word and word in names:
                return suggestion
    return suggestions[0]


def _ask_category(taxonomy: Taxonomy, analysis: Analysis, marketplace_id: str, end: float,
                  problems: list[str]) -> _Category | None:
    """The category the marketplace suggests, its aspects and conditions; None
    (and why, in ``problems``) when it could not be asked or had none."""
    query = _query(analysis)
    if not query:
        problems.append("no category: the photos identify no brand, product or category "
                        "to ask the marketplace with")
        return None
    label = f"taxonomy {taxonomy.name}"
    try:
        tree_id: str
        suggestions: tuple[CategorySuggestion, ...]
        tree_id, suggestions = _budget.call(taxonomy, label, partial(
            taxonomy.category_suggestions, query, marketplace_id=marketplace_id,
            deadline=end), deadline=end)
        if not suggestions:
            problems.append(f"no category: the marketplace suggests none for {query!r}")
            return None
        leaf = _leaf(suggestions, supported(analysis.identification, "category"))
        specs: tuple[AspectSpec, ...] = _budget.call(taxonomy, label, partial(
            taxonomy.item_aspects, tree_id, leaf.category_id, deadline=end), deadline=end)
    except Exception as exc:  # a failed or stuck marketplace: the draft goes on offline
        problems.append(f"no category: the marketplace could not be asked ({describe(exc)})")
        return None
    conditions: tuple[ConditionOption, ...] | None = None
    try:
        conditions = _budget.call(taxonomy, label, partial(
            taxonomy.item_conditions, leaf.category_id, marketplace_id=marketplace_id,
            deadline=end), deadline=end)
    except Exception as exc:
        problems.append(f"the category's conditions could not be asked ({describe(exc)}): "
                        "the condition is eBay's usual id, unchecked")
    choice = CategoryChoice(category_id=leaf.category_id, name=leaf.name, tree_id=tree_id,
                            path=leaf.path, source=taxonomy.name)
    return _Category(choice, tuple(specs), conditions)


@dataclass(frozen=True, slots=True)
class _Facts:
    """What the description says: the draft's title, specifics and condition."""

    title: str
    aspects: tuple[DraftAspect, ...]
    condition: Condition
    condition_name: str | None
    condition_description: str

    def args(self) -> tuple[str, tuple[DraftAspect, ...], Condition, str | None, str]:
        return (self.title, self.aspects, self.condition, self.condition_name,
                self.condition_description)


def _describe(writer: Writer | None, analysis: Analysis, facts: _Facts, end: float,
              problems: list[str]) -> tuple[str, tuple[str, ...], str]:
    """The description, what was struck out of it, and who wrote it."""
    if writer is not None:
        try:
            answer: Mapping[str, Any] = _budget.call(writer, "description writer", writer,
                                  facts_of(*facts.args()), deadline=end)
            html, removed = written_html(answer, analysis, facts.aspects, facts.condition,
                                         bool(flaw_photos(analysis)))
            if html:
                return html, tuple(removed), "written"
            problems.append("the written description said nothing the evidence backs: "
                            "the template's is used")
        except (RestyleError, ValueError) as exc:
            problems.append(f"the description could not be written ({describe(exc)}): "
                            "the template's is used")
    return template_html(*facts.args()), (), "template"


def make_draft(
    analysis: Analysis, *, price: PriceStrategy | str = PriceStrategy.MARKET,
    marketplace_id: str = "EBAY_US", taxonomy: Taxonomy | None = None,
    condition: Condition | str | None = None, currency: str | None = None,
    writer: Writer | None = None, deadline: float | None = None,
) -> ListingDraft:
    """A listing draft of ``analysis`` (see :meth:`restyle.Engine.draft`, which
    calls this with the Engine's taxonomy, writer and budget).

    ``deadline`` is the seconds every call to ``taxonomy`` and ``writer``
    together may take (:data:`DRAFT_DEADLINE` by default). Without a
    ``taxonomy`` the draft is made offline from a generic list of aspects,
    and ``problems`` says what it could not decide.
    """
    try:
        strategy = PriceStrategy(price)
    except ValueError:
        raise ConfigurationError(
            f"price must be one of {', '.join(s.value for s in PriceStrategy)}, got {price!r}"
        ) from None
    end = time.monotonic() + (DRAFT_DEADLINE if deadline is None else deadline)
    problems: list[str] = []
    chosen = choose_condition(analysis, condition)
    title = build_title(analysis.identification, chosen)
    if not title:
        problems.append("no title: the evidence supports no word of the identification")
    category = None if taxonomy is None else _ask_category(
        taxonomy, analysis, marketplace_id, end, problems)
    if taxonomy is None:
        problems.append("no category: no marketplace taxonomy to ask (offline); the item "
                        "specifics are from a generic list")
    specs = GENERIC_ASPECTS if category is None else category.specs
    aspects, aspect_problems = fill_aspects(analysis.identification, specs)
    problems.extend(aspect_problems)
    flawed = bool(flaw_photos(analysis))
    condition_id, condition_name, condition_problems = draft_condition(
        chosen, None if category is None else category.conditions, flawed=flawed)
    problems.extend(condition_problems)
    draft_price, price_problems = asking_price(analysis.price, strategy, currency=currency)
    problems.extend(price_problems)
    facts = _Facts(title, aspects, chosen, condition_name,
                   condition_description(analysis) if chosen is not Condition.NEW or flawed
                   else "")
    html, removed, source = _describe(writer, analysis, facts, end, problems)
    return ListingDraft(
        title=title, marketplace_id=marketplace_id,
        category=CategoryChoice() if category is None else category.choice,
        aspects=aspects, condition=chosen, condition_id=condition_id,
        condition_name=condition_name,
        condition_description=facts.condition_description, price=draft_price,
        description=html, photos=analysis.photos or (analysis.photo,),
        problems=tuple(dict.fromkeys(clean(p) for p in problems)), removed=removed,
        description_source=source,
    )

"""From an analysis to a listing draft: the draft's values, its title, item
specifics, condition, price and description, the marketplace interface it
asks (:class:`Taxonomy`), its notebook view and its CSV export.

A wing above the pipeline and the plugins, below the Engine: a marketplace
plugin answers :class:`Taxonomy` in these values; :meth:`restyle.Engine.draft`
makes a draft with the Engine's components and budget (docs/listing.md).
"""

from restyle._listing.aspects import GENERIC_ASPECTS, match_value
from restyle._listing.description import DESCRIPTION_SCHEMA, Writer
from restyle._listing.draft import DRAFT_DEADLINE, make_draft
from restyle._listing.export import drafts_csv
from restyle._listing.taxonomy import Taxonomy
from restyle._listing.title import TITLE_LIMIT, build_title
from restyle._listing.values import (
    AspectMode,
    AspectSpec,
    CategoryChoice,
    CategorySuggestion,
    ConditionOption,
    DraftAspect,
    DraftPrice,
    ListingDraft,
    PriceStrategy,
)

__all__ = [
    "DESCRIPTION_SCHEMA",
    "DRAFT_DEADLINE",
    "GENERIC_ASPECTS",
    "TITLE_LIMIT",
    "AspectMode",
    "AspectSpec",
    "CategoryChoice",
    "CategorySuggestion",
    "ConditionOption",
    "DraftAspect",
    "DraftPrice",
    "ListingDraft",
    "PriceStrategy",
    "Taxonomy",
    "Writer",
    "build_title",
    "drafts_csv",
    "make_draft",
    "match_value",
]

"""The ``catalog`` expert: the photo's nearest neighbours in the local catalog.

Reports their brands, titles and categories like web entities, scored by
visual similarity, so the consensus synthesizer can name a brand with no cloud.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Any

from restyle._plugin.components import Expert
from restyle._plugin.hookspecs import hookimpl
from restyle._types import Observation, Opinion, PhotoRole

if TYPE_CHECKING:
    from restyle._input.imaging import Photo

__all__ = ["CatalogExpert"]


class CatalogExpert(Expert):
    """Names what the photo's nearest catalog listings are."""

    name = "catalog"
    timeout = 60.0
    # The catalog's look-alikes of a tag or a label are other tags, not the item.
    photo_roles = frozenset({PhotoRole.WHOLE})

    def __init__(self, *, neighbours: int = 5) -> None:
        self.neighbours = neighbours

    def examine(self, photo: Photo) -> Opinion:
        context = self.context
        catalog = context.catalog
        vector = context.encoder.photo_vector(photo)
        hits = catalog.search_vector(vector, limit=self.neighbours)
        best: dict[tuple[str, str], float] = defaultdict(float)
        for listing, similarity in hits:
            score = max(0.0, min(1.0, similarity))
            for facet, value in (
                ("brand", listing.brand),
                ("product", listing.title),
                ("category", listing.category),
            ):
                if value:
                    best[(facet, value)] = max(best[(facet, value)], score)
        entities = tuple(
            Observation(text=value, score=score, facet=facet)
            for (facet, value), score in sorted(best.items(), key=lambda kv: -kv[1])
        )
        return Opinion(expert=self.name, entities=entities)


@hookimpl
def register_experts(register: Any) -> None:
    register(CatalogExpert())

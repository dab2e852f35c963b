"""A fake marketplace whose answer depends on the relaxation step of the query."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from restyle import Listing, Marketplace, Query


class StepMarketplace(Marketplace):
    """Answers each relaxation step with its own listings; may fail at a given step.

    Every listing gets ``vector`` as its known image embedding, so re-ranking
    fetches nothing.
    """

    def __init__(
        self,
        name: str,
        by_step: Mapping[str, Sequence[Listing]],
        *,
        vector: np.ndarray | None = None,
        fail_at: str | None = None,
    ) -> None:
        self.name = name
        self.by_step = {step: list(listings) for step, listings in by_step.items()}
        self.vector = vector
        self.fail_at = fail_at
        self.queries: list[Query] = []

    def search(self, query: Query) -> Sequence[Listing]:
        self.queries.append(query)
        if query.step == self.fail_at:
            raise RuntimeError(f"{self.name} is down")
        return self.by_step.get(query.step, [])[: query.limit]

    @property
    def steps(self) -> list[str]:
        return [q.step for q in self.queries]

    def image_embeddings(
        self, listings: Sequence[Listing], *, model_id: str
    ) -> Mapping[str, np.ndarray]:
        if self.vector is None:
            return {}
        return {item.key: self.vector for item in listings if item.marketplace == self.name}

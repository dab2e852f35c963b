"""The ``consensus`` synthesizer: a deterministic merge of the experts' opinions.

Each field (brand, category, product name, and the attributes colour,
material, pattern and style) is voted on by the experts that spoke about it:
a value's support is the sum, over experts, of the best score each expert gave
it. A field's confidence is that support divided by the number of experts that
answered, but never by fewer than two: one expert alone cannot reach more than
0.5, however sure it is.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from restyle._components import Synthesizer
from restyle._hookspecs import hookimpl
from restyle._taxonomy import CATEGORIES, FACETS, normalise_category
from restyle._types import Attribute, Evidence, Identification, Observation, Opinion

if TYPE_CHECKING:
    from restyle._imaging import Photo

__all__ = ["ConsensusSynthesizer"]

#: Weight of each main field in the overall confidence.
FIELD_WEIGHTS = {"brand": 0.35, "category": 0.35, "product_name": 0.30}
#: An attribute is reported only when its confidence reaches this.
MIN_ATTRIBUTE_CONFIDENCE = 0.1
#: A runner-up brand or category this close to the winner is a disagreement.
CONFLICT_RATIO = 0.6

_SUGGESTIONS = {
    "brand": "a close-up of the brand label, logo or inside tag",
    "product_name": "a photo of the style or model number (inside tag, box or sole)",
    "category": "a photo of the whole item, front on, on a plain background",
}


@dataclass
class _Vote:
    display: str
    by_expert: dict[str, float] = field(default_factory=dict)

    @property
    def support(self) -> float:
        return sum(self.by_expert.values())


def _field_of(obs: Observation, group: str) -> str | None:
    if obs.facet == "brand" or (group == "logos" and obs.facet is None):
        return "brand"
    if obs.facet in ("product", "product_name") or (group == "entities" and obs.facet is None):
        return "product_name"
    if obs.facet == "category":
        return "category"
    if group in ("objects", "labels") and obs.facet is None:
        category = normalise_category(obs.text)
        return "category" if category in CATEGORIES else None
    if obs.facet in FACETS:
        return obs.facet
    return None


def _groups(opinion: Opinion) -> Iterable[tuple[str, Observation]]:
    for group in ("labels", "entities", "objects", "logos"):
        for obs in getattr(opinion, group):
            yield group, obs


class ConsensusSynthesizer(Synthesizer):
    """Votes across experts; needs no model and gives the same answer every time."""

    name = "consensus"

    def synthesize(
        self, opinions: Sequence[Opinion], *, photo: Photo | None = None
    ) -> Identification:
        answered = [o for o in opinions if o.ok]
        votes: dict[str, dict[str, _Vote]] = defaultdict(dict)
        for opinion in answered:
            for group, obs in _groups(opinion):
                field_name = _field_of(obs, group)
                if field_name is None or not obs.text.strip():
                    continue
                value = obs.text.strip()
                if field_name == "category":
                    value = normalise_category(value) or value
                key = value.lower()
                vote = votes[field_name].setdefault(key, _Vote(display=value))
                previous = vote.by_expert.get(opinion.expert, 0.0)
                vote.by_expert[opinion.expert] = max(previous, obs.score)

        denominator = max(2, len(answered))
        chosen: dict[str, tuple[str, float]] = {}
        evidence: list[Evidence] = []
        suggestions: list[str] = []
        for field_name, candidates in votes.items():
            ranked = sorted(candidates.values(), key=lambda v: (-v.support, v.display))
            winner = ranked[0]
            confidence = min(1.0, winner.support / denominator)
            chosen[field_name] = (winner.display, confidence)
            evidence.extend(
                Evidence(field=field_name, value=winner.display, expert=expert, score=score)
                for expert, score in sorted(winner.by_expert.items())
            )
            if field_name in _SUGGESTIONS and len(ranked) > 1:
                runner_up = ranked[1]
                independent = set(runner_up.by_expert) - set(winner.by_expert)
                if independent and runner_up.support >= CONFLICT_RATIO * winner.support:
                    suggestions.append(_SUGGESTIONS[field_name])

        def winner_of(name: str) -> str | None:
            return chosen[name][0] if name in chosen else None

        confidence = sum(
            weight * chosen[name][1] for name, weight in FIELD_WEIGHTS.items() if name in chosen
        )
        attributes = tuple(
            Attribute(name=facet, value=chosen[facet][0], confidence=chosen[facet][1])
            for facet in FACETS
            if facet in chosen and chosen[facet][1] >= MIN_ATTRIBUTE_CONFIDENCE
        )
        identification = Identification(
            product_name=winner_of("product_name"),
            brand=winner_of("brand"),
            category=winner_of("category"),
            attributes=attributes,
            confidence=round(min(1.0, confidence), 4),
            evidence=tuple(evidence),
            synthesizer=self.name,
            suggested_photos=tuple(suggestions),
        )
        return _with_summary(identification, len(answered), len(opinions))


def _with_summary(ident: Identification, answered: int, asked: int) -> Identification:
    from dataclasses import replace

    what = " ".join(filter(None, [ident.brand, ident.category])) or "an unidentified item"
    summary = f"Most likely {what}"
    if ident.product_name:
        summary += f" ({ident.product_name})"
    summary += f"; confidence {ident.confidence:.2f} from {answered} of {asked} experts."
    return replace(ident, summary=summary)


@hookimpl
def register_synthesizers(register: Any) -> None:
    register(ConsensusSynthesizer())

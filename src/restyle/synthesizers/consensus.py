"""The ``consensus`` synthesizer: a deterministic merge of the experts' opinions.

Each field (brand, category, product name, and the attributes colour,
material, pattern, style, size and model number) is voted on by the experts
that spoke about it, and the value with the most support wins. Its confidence
is calibrated on agreement between independent experts (see
:func:`field_confidence`): one expert alone never gets above 0.5, however sure
it is; each further expert that agrees halves the remaining doubt; experts
that name something else lower it.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from restyle._plugin.components import Synthesizer
from restyle._plugin.hookspecs import hookimpl
from restyle._taxonomy import (
    FACETS,
    clean_text,
    map_category,
    map_facet_term,
    model_numbers,
    sizes,
)
from restyle._types import Attribute, Evidence, Identification, Observation, Opinion

if TYPE_CHECKING:
    from restyle._input.imaging import Photo

__all__ = ["ConsensusSynthesizer", "field_confidence", "supporters"]

#: Weight of each main field in the overall confidence.
FIELD_WEIGHTS = {"brand": 0.35, "category": 0.35, "product_name": 0.30}
#: Attributes reported, in this order.
ATTRIBUTES: tuple[str, ...] = (*FACETS, "size", "model_number")
#: An attribute is reported only when its confidence reaches this.
MIN_ATTRIBUTE_CONFIDENCE = 0.1
#: No field is ever more certain than this, however many experts agree.
MAX_CONFIDENCE = 0.95
#: A runner-up from an independent expert this close to the winner is a disagreement.
CONFLICT_RATIO = 0.6
#: How much a brand named only in passing (a page title, a product name) counts.
MENTION_WEIGHT = 0.5
#: How many more words than the value an observation may have and still back it.
SUPPORT_SLACK_WORDS = 6
#: Score given to a brand read in the photo's text when the reader gave no score.
TEXT_SCORE = 0.5

_PRODUCT_FACETS = {"product", "product_name", "best_guess", "title"}
_MODEL_FACETS = {"model", "model_number", "style_number", "sku"}
_GROUPS = ("labels", "entities", "objects", "logos", "texts", "pages")
_MAX_TEXT = 200

SUGGESTIONS = {
    "brand": "a close-up of the brand label, logo or inside tag",
    "product_name": "a photo of the style or model number (inside tag, box or sole)",
    "category": "a photo of the whole item, front on, on a plain background",
}
_CONFLICT_FIELDS = {
    "brand": "brand", "product_name": "product_name", "model_number": "product_name",
    "category": "category",
}


@dataclass
class _Vote:
    by_expert: dict[str, float] = field(default_factory=dict)
    # Every spelling seen, with its best score, so the display is order-independent.
    spellings: dict[str, float] = field(default_factory=dict)

    @property
    def support(self) -> float:
        return sum(self.by_expert.values())

    @property
    def display(self) -> str:
        return min(self.spellings.items(), key=lambda kv: (-kv[1], kv[0]))[0]


@dataclass
class _Ballot:
    votes: dict[str, dict[str, _Vote]] = field(default_factory=lambda: defaultdict(dict))

    def add(self, field_name: str, value: str, expert: str, score: float) -> None:
        value = value.strip()
        if not value:
            return
        key = _norm(value)
        vote = self.votes[field_name].setdefault(key, _Vote())
        vote.by_expert[expert] = max(vote.by_expert.get(expert, 0.0), score)
        vote.spellings[value] = max(vote.spellings.get(value, 0.0), score)

    def merge_refinements(self, field_name: str) -> None:
        """An expert naming "Nike Air Max 90 white" also backs "Nike Air Max 90"."""
        candidates = self.votes.get(field_name, {})
        for short_key, short in candidates.items():
            if len(short_key.split()) < 2:
                continue
            for long_key, longer in candidates.items():
                if long_key.startswith(short_key + " "):
                    for expert, score in longer.by_expert.items():
                        short.by_expert[expert] = max(short.by_expert.get(expert, 0.0), score)

    def ranked(self, field_name: str) -> list[_Vote]:
        candidates = self.votes.get(field_name, {})
        return sorted(
            candidates.values(), key=lambda v: (-v.support, -len(v.by_expert), _norm(v.display))
        )


def field_confidence(winner: dict[str, float], voters: dict[str, float]) -> float:
    """Confidence in a value backed by ``winner`` (expert -> score) among ``voters``
    (every expert that voted on the field -> its best score for any value).

    The strength of the backing is a noisy-or of the backers' scores, capped at
    1 - 0.5**k for k backers (0.5 for one, 0.75 for two, 0.875 for three, at
    most 0.95), then scaled by the backers' share of all the votes cast.
    """
    if not winner:
        return 0.0
    doubt = 1.0
    for score in winner.values():
        doubt *= 1.0 - score
    ceiling = min(MAX_CONFIDENCE, 1.0 - 0.5 ** len(winner))
    strength = min(ceiling, 1.0 - doubt)
    cast = sum(voters.values())
    share = sum(winner.values()) / cast if cast > 0 else 0.0
    return round(max(0.0, min(1.0, strength * share)), 4)


def _norm(text: str) -> str:
    return re.sub(r"[\s\-_.,;:!'\"]+", " ", text.lower()).strip()


def _mentions(text: str, name: str) -> bool:
    """Whether ``name`` appears in ``text`` as whole words."""
    pattern = r"(?<![\w])" + r"\s+".join(re.escape(w) for w in _norm(name).split()) + r"(?![\w])"
    return bool(re.search(pattern, _norm(text)))


@dataclass
class _Pending:
    """What one opinion said that can only be placed once every opinion is read."""

    entities: list[tuple[str, float]] = field(default_factory=list)
    texts: list[tuple[str, float]] = field(default_factory=list)
    mentions: list[tuple[str, float]] = field(default_factory=list)


def _read(opinion: Opinion, ballot: _Ballot) -> _Pending:
    pending = _Pending()
    expert = opinion.expert
    for group in _GROUPS:
        obs: Observation
        for obs in getattr(opinion, group):
            text = clean_text(obs.text, limit=_MAX_TEXT)
            if not text:
                continue
            facet = (obs.facet or "").lower() or None
            score = obs.score
            if facet == "brand" or group == "logos":
                ballot.add("brand", text, expert, score)
            elif facet in _PRODUCT_FACETS:
                ballot.add("product_name", text, expert, score)
                pending.mentions.append((text, score))
            elif facet == "category":
                ballot.add("category", map_category(text) or text.lower(), expert, score)
            elif facet in FACETS:
                term = map_facet_term(text)
                ballot.add(facet, term[1] if term and term[0] == facet else text.lower(),
                           expert, score)
            elif facet == "size":
                ballot.add("size", text.upper(), expert, score)
            elif facet in _MODEL_FACETS:
                ballot.add("model_number", text.upper(), expert, score)
            elif group == "texts" or facet == "text":
                text_score = score if score > 0 else TEXT_SCORE
                for size in sizes(text):
                    ballot.add("size", size, expert, text_score)
                for number in model_numbers(text):
                    ballot.add("model_number", number, expert, text_score)
                pending.texts.append((text, text_score))
            elif group == "pages":
                pending.mentions.append((text, score))
            else:
                category = map_category(text)
                term = map_facet_term(text)
                # A long web entity ending in a category word is a product name
                # ("Nike Air Max 90 sneaker"), not a vote for the category.
                if category is not None and (group != "entities" or len(text.split()) <= 2):
                    ballot.add("category", category, expert, score)
                elif term is not None:
                    ballot.add(term[0], term[1], expert, score)
                elif group == "entities":
                    pending.entities.append((text, score))
                # Other labels and objects ("Clothing", "Footwear") are too generic to use.
    return pending


def _place_entities(
    opinion: Opinion, pending: _Pending, known_brands: set[str], ballot: _Ballot
) -> None:
    """Web entities are brands or products; the service does not say which.

    An entity is taken for a brand when another expert named it as one, or
    when it is the shortest of this expert's entities that start the same way
    ("Nike" beside "Nike Air Max 90", but not "Nike Air Max 90" beside
    "Nike Air Max 90 Essential", nor "Nike Air Max" when "Nike" is a known
    brand). Other entities of two words or more are product names; single
    generic words ("Shoe") are dropped.
    """
    keys = [_norm(text) for text, _ in pending.entities]
    for text, score in pending.entities:
        key = _norm(text)
        starts_longer = any(other.startswith(key + " ") for other in keys)
        # "Nike Air Max" beside a known brand "Nike" is a product line, not a brand.
        has_prefix = any(key.startswith(other + " ") for other in [*keys, *known_brands])
        if key in known_brands or (len(key.split()) <= 4 and starts_longer and not has_prefix):
            ballot.add("brand", text, opinion.expert, score)
        elif len(key.split()) >= 2:
            ballot.add("product_name", text, opinion.expert, score)
            pending.mentions.append((text, score))


def _corroborate(opinion: Opinion, pending: _Pending, ballot: _Ballot) -> None:
    """Brands this expert read in the photo's text or mentioned in passing count as votes."""
    for key, vote in list(ballot.votes.get("brand", {}).items()):
        name = vote.display
        best = 0.0
        for text, score in pending.texts:
            if _mentions(text, name):
                best = max(best, score)
        for text, score in pending.mentions:
            if _norm(text) != key and _mentions(text, name):
                best = max(best, MENTION_WEIGHT * score)
        if best > 0:
            ballot.add("brand", name, opinion.expert, best)


def supporters(opinions: Sequence[Opinion], field_name: str, value: str | None) -> list[Evidence]:
    """Which experts' observations support ``value`` for ``field_name``, best score each.

    Used to check a value that came from somewhere else (a language model)
    against what the experts actually saw.
    """
    if not value:
        return []
    best: dict[str, float] = {}
    for opinion in opinions:
        if not opinion.ok:
            continue
        for obs in opinion.observations():
            text = clean_text(obs.text, limit=_MAX_TEXT)
            if field_name == "category":
                hit = map_category(text) == value or _norm(text) == _norm(value)
            else:
                # The value must be most of what the observation says: a long
                # text that merely mentions it (planted web text) backs nothing.
                extra_words = len(_norm(text).split()) - len(_norm(value).split())
                hit = _mentions(text, value) and extra_words <= SUPPORT_SLACK_WORDS
            if hit:
                score = obs.score if obs.score > 0 else TEXT_SCORE
                best[opinion.expert] = max(best.get(opinion.expert, 0.0), score)
    return [
        Evidence(field=field_name, value=value, expert=expert, score=score)
        for expert, score in sorted(best.items())
    ]


class ConsensusSynthesizer(Synthesizer):
    """Votes across experts; needs no model and gives the same answer every time."""

    name = "consensus"

    def synthesize(
        self, opinions: Sequence[Opinion], *, photo: Photo | None = None
    ) -> Identification:
        answered = sorted((o for o in opinions if o.ok), key=lambda o: o.expert)
        ballot = _Ballot()
        pending = {o.expert: _read(o, ballot) for o in answered}
        known_brands = set(ballot.votes.get("brand", {}))
        for opinion in answered:
            _place_entities(opinion, pending[opinion.expert], known_brands, ballot)
        for opinion in answered:
            _corroborate(opinion, pending[opinion.expert], ballot)
        ballot.merge_refinements("product_name")

        chosen, evidence, conflicts = _elect(ballot)

        def value(name: str) -> str | None:
            return chosen[name][0] if name in chosen else None

        confidence = sum(
            weight * chosen[name][1] for name, weight in FIELD_WEIGHTS.items() if name in chosen
        )
        attributes = tuple(
            Attribute(name=name, value=chosen[name][0], confidence=chosen[name][1])
            for name in ATTRIBUTES
            if name in chosen
        )
        suggestions = [SUGGESTIONS[name] for name in SUGGESTIONS if name in conflicts]
        if answered and "brand" not in chosen:
            suggestions.insert(0, SUGGESTIONS["brand"])
        identification = Identification(
            product_name=value("product_name"),
            brand=value("brand"),
            category=value("category"),
            attributes=attributes,
            confidence=round(min(1.0, confidence), 4),
            evidence=tuple(evidence),
            synthesizer=self.name,
            suggested_photos=tuple(suggestions),
        )
        return with_summary(identification, answered=len(answered), asked=len(opinions))


def _elect(
    ballot: _Ballot,
) -> tuple[dict[str, tuple[str, float]], list[Evidence], set[str]]:
    """Each field's winning value and confidence (attributes below
    :data:`MIN_ATTRIBUTE_CONFIDENCE` left out), the evidence for the winners,
    and the conflicts worth a suggested photo."""
    chosen: dict[str, tuple[str, float]] = {}
    evidence: list[Evidence] = []
    conflicts: set[str] = set()
    for field_name in ("brand", "category", "product_name", *ATTRIBUTES):
        ranked = ballot.ranked(field_name)
        if not ranked:
            continue
        winner = ranked[0]
        voters: dict[str, float] = {}
        for vote in ranked:
            for expert, score in vote.by_expert.items():
                voters[expert] = max(voters.get(expert, 0.0), score)
        confidence = field_confidence(winner.by_expert, voters)
        if field_name in ATTRIBUTES and confidence < MIN_ATTRIBUTE_CONFIDENCE:
            continue
        chosen[field_name] = (winner.display, confidence)
        evidence.extend(
            Evidence(field=field_name, value=winner.display, expert=expert, score=score)
            for expert, score in sorted(winner.by_expert.items())
        )
        if field_name in _CONFLICT_FIELDS and _disagree(ranked):
            conflicts.add(_CONFLICT_FIELDS[field_name])
    return chosen, evidence, conflicts


def _disagree(ranked: list[_Vote]) -> bool:
    """A runner-up backed by an expert that did not back the winner, and nearly as strong."""
    if len(ranked) < 2:
        return False
    winner = ranked[0]
    for runner_up in ranked[1:]:
        independent = set(runner_up.by_expert) - set(winner.by_expert)
        if independent and runner_up.support >= CONFLICT_RATIO * winner.support:
            return True
    return False


def with_summary(ident: Identification, *, answered: int, asked: int) -> Identification:
    """``ident`` with a one-sentence summary of what it says."""
    what = " ".join(filter(None, [ident.brand, ident.category])) or "an unidentified item"
    summary = f"Most likely {what}"
    if ident.product_name:
        summary += f" ({ident.product_name})"
    summary += f"; confidence {ident.confidence:.2f} from {answered} of {asked} experts."
    return replace(ident, summary=summary)


@hookimpl
def register_synthesizers(register: Any) -> None:
    register(ConsensusSynthesizer())

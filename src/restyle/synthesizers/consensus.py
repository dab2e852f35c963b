"""The ``consensus`` synthesizer: a deterministic merge of the experts' opinions.

Each field (brand, category, product name, and the attributes colour,
material, pattern, style, size and model number) is voted on by the experts
that spoke about it, and the value with the most support wins. Its confidence
is calibrated on agreement between independent experts (see
:func:`field_confidence`): one expert alone never gets above 0.5, however sure
it is; each further expert that agrees halves the remaining doubt; experts
that name something else lower it.

With several photos of one item, each vote is weighed by what its photo shows
(:data:`ROLE_WEIGHTS`): a brand read on the tag outweighs a brand guessed
from the whole item, a colour seen on the whole item outweighs the tag's
colour; every piece of evidence names its photo.
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
    materials,
    model_numbers,
    registration_numbers,
    sizes,
)
from restyle._types import Attribute, Evidence, Identification, Observation, Opinion, PhotoRole

if TYPE_CHECKING:
    from restyle._input.imaging import Photo

__all__ = ["ConsensusSynthesizer", "field_confidence", "supporters"]

#: Weight of each main field in the overall confidence.
FIELD_WEIGHTS = {"brand": 0.35, "category": 0.35, "product_name": 0.30}
#: Attributes reported, in this order.
ATTRIBUTES: tuple[str, ...] = (*FACETS, "size", "model_number", "rn_number", "ca_number")
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

#: How much a vote counts by what its photo shows, per field (``"*"``: any
#: other field), when an item has several photos; a photo alone counts whole.
ROLE_WEIGHTS: dict[PhotoRole, dict[str, float]] = {
    PhotoRole.WHOLE: {"brand": 0.6, "model_number": 0.7, "size": 0.6, "material": 0.8,
                      "rn_number": 0.6, "ca_number": 0.6, "*": 1.0},
    PhotoRole.TAG: {"brand": 1.0, "model_number": 1.0, "size": 1.0, "material": 0.8,
                    "rn_number": 1.0, "ca_number": 1.0, "*": 0.2},
    PhotoRole.LABEL: {"brand": 0.9, "model_number": 1.0, "size": 1.0, "material": 1.0,
                      "rn_number": 1.0, "ca_number": 1.0, "*": 0.2},
    PhotoRole.DETAIL: {"brand": 0.8, "model_number": 1.0, "material": 0.9, "*": 0.5},
    PhotoRole.FLAW: {"brand": 0.5, "*": 0.3},
}

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
    # The photo each expert's best vote came from.
    photos: dict[str, int] = field(default_factory=dict)
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

    def add(self, field_name: str, value: str, expert: str, score: float,
            photo: int = 0) -> None:
        value = value.strip()
        if not value:
            return
        key = _norm(value)
        vote = self.votes[field_name].setdefault(key, _Vote())
        if score > vote.by_expert.get(expert, -1.0):
            vote.by_expert[expert] = score
            vote.photos[expert] = photo
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
                        if score > short.by_expert.get(expert, -1.0):
                            short.by_expert[expert] = score
                            short.photos[expert] = longer.photos.get(expert, 0)

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
class _Speaker:
    """One opinion's voice: its votes go on the ballot under its expert, from
    its photo, weighed by what that photo shows (``role``; None: unweighed)."""

    ballot: _Ballot
    expert: str
    photo: int = 0
    role: PhotoRole | None = None

    def add(self, field_name: str, value: str, score: float) -> None:
        weight = 1.0
        if self.role is not None:
            weights = ROLE_WEIGHTS[self.role]
            weight = weights.get(field_name, weights["*"])
        self.ballot.add(field_name, value, self.expert, score * weight, self.photo)


@dataclass
class _Pending:
    """What one opinion said that can only be placed once every opinion is read."""

    entities: list[tuple[str, float]] = field(default_factory=list)
    texts: list[tuple[str, float]] = field(default_factory=list)
    mentions: list[tuple[str, float]] = field(default_factory=list)


def _read(opinion: Opinion, ballot: _Speaker) -> _Pending:
    pending = _Pending()
    for group in _GROUPS:
        obs: Observation
        for obs in getattr(opinion, group):
            text = clean_text(obs.text, limit=_MAX_TEXT)
            if not text:
                continue
            facet = (obs.facet or "").lower() or None
            score = obs.score
            if facet == "brand" or group == "logos":
                ballot.add("brand", text, score)
            elif facet in _PRODUCT_FACETS:
                ballot.add("product_name", text, score)
                pending.mentions.append((text, score))
            elif facet == "category":
                ballot.add("category", map_category(text) or text.lower(), score)
            elif facet in FACETS:
                term = map_facet_term(text)
                ballot.add(facet, term[1] if term and term[0] == facet else text.lower(),
                           score)
            elif facet == "size":
                ballot.add("size", text.upper(), score)
            elif facet in _MODEL_FACETS:
                ballot.add("model_number", text.upper(), score)
            elif group == "texts" or facet == "text":
                text_score = score if score > 0 else TEXT_SCORE
                for size in sizes(text):
                    ballot.add("size", size, text_score)
                for number in model_numbers(text):
                    ballot.add("model_number", number, text_score)
                for fibre, share in materials(text):
                    ballot.add("material", fibre, text_score * share)
                for name, number in registration_numbers(text):
                    ballot.add(name, number, text_score)
                pending.texts.append((text, text_score))
            elif group == "pages":
                pending.mentions.append((text, score))
            else:
                category = map_category(text)
                term = map_facet_term(text)
                # A long web entity ending in a category word is a product name
                # ("Nike Air Max 90 sneaker"), not a vote for the category.
                if category is not None and (group != "entities" or len(text.split()) <= 2):
                    ballot.add("category", category, score)
                elif term is not None:
                    ballot.add(term[0], term[1], score)
                elif group == "entities":
                    pending.entities.append((text, score))
                # Other labels and objects ("Clothing", "Footwear") are too generic to use.
    return pending


def _place_entities(
    opinion: Opinion, pending: _Pending, known_brands: set[str], ballot: _Speaker
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
            ballot.add("brand", text, score)
        elif len(key.split()) >= 2:
            ballot.add("product_name", text, score)
            pending.mentions.append((text, score))


def _corroborate(opinion: Opinion, pending: _Pending, ballot: _Speaker) -> None:
    """Brands this expert read in the photo's text or mentioned in passing count as votes."""
    for key, vote in list(ballot.ballot.votes.get("brand", {}).items()):
        name = vote.display
        best = 0.0
        for text, score in pending.texts:
            if _mentions(text, name):
                best = max(best, score)
        for text, score in pending.mentions:
            if _norm(text) != key and _mentions(text, name):
                best = max(best, MENTION_WEIGHT * score)
        if best > 0:
            ballot.add("brand", name, best)


def supporters(opinions: Sequence[Opinion], field_name: str, value: str | None) -> list[Evidence]:
    """Which experts' observations support ``value`` for ``field_name``, best score each.

    Used to check a value that came from somewhere else (a language model)
    against what the experts actually saw.
    """
    if not value:
        return []
    best: dict[str, float] = {}
    where: dict[str, int] = {}
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
                if score > best.get(opinion.expert, -1.0):
                    best[opinion.expert] = score
                    where[opinion.expert] = opinion.photo
    return [
        Evidence(field=field_name, value=value, expert=expert, score=score,
                 photo=where[expert])
        for expert, score in sorted(best.items())
    ]


class ConsensusSynthesizer(Synthesizer):
    """Votes across experts; needs no model and gives the same answer every time."""

    name = "consensus"

    def synthesize(
        self, opinions: Sequence[Opinion], *, photo: Photo | None = None,
        photos: Sequence[Photo] = (),
    ) -> Identification:
        answered = sorted((o for o in opinions if o.ok), key=lambda o: (o.expert, o.photo))
        roles = {p.index: p.role for p in photos} if len(photos) > 1 else {}
        ballot = _Ballot()
        speakers = [_Speaker(ballot, o.expert, o.photo, roles.get(o.photo)) for o in answered]
        pending = [_read(o, speaker) for o, speaker in zip(answered, speakers, strict=True)]
        known_brands = set(ballot.votes.get("brand", {}))
        for opinion, said, speaker in zip(answered, pending, speakers, strict=True):
            _place_entities(opinion, said, known_brands, speaker)
        for opinion, said, speaker in zip(answered, pending, speakers, strict=True):
            _corroborate(opinion, said, speaker)
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
        return with_summary(identification, answered=len({o.expert for o in answered}),
                            asked=len({o.expert for o in opinions}))


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
            Evidence(field=field_name, value=winner.display, expert=expert,
                     score=score, photo=winner.photos.get(expert))
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

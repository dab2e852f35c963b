"""The draft's condition: restyle's scale (given, read off the item, or
"used" when a photo shows a flaw), the marketplace condition the category
allows for it, and the condition description from the flaw photos."""

from __future__ import annotations

from collections.abc import Sequence

from restyle._listing.text import clean
from restyle._listing.title import supported
from restyle._listing.values import ConditionOption
from restyle._types import Analysis, Condition, PhotoRole

__all__ = ["CONDITION_NAMES", "FLAW_WORDS", "choose_condition", "condition_description",
           "draft_condition"]

#: eBay's condition ids, each restyle condition's in the order they are
#: preferred; with a flaw shown, a new item is "New with defects" first.
PREFERRED_IDS: dict[Condition, tuple[str, ...]] = {
    Condition.NEW: ("1000", "1500", "1750"),
    Condition.LIKE_NEW: ("2750", "1500", "2990", "3000"),
    Condition.USED: ("3000", "2990", "5000", "4000", "6000", "3010"),
    Condition.FOR_PARTS: ("7000",),
}

#: eBay's names of its condition ids (its documented list), used when no
#: category's own names are known.
CONDITION_NAMES: dict[str, str] = {
    "1000": "New", "1500": "New other (see details)", "1750": "New with defects",
    "2750": "Like New", "2990": "Pre-owned - Excellent", "3000": "Used",
    "3010": "Pre-owned - Fair", "4000": "Very Good", "5000": "Good", "6000": "Acceptable",
    "7000": "For parts or not working",
}

#: Words that name a flaw, looked for in what the experts saw in a flaw photo.
FLAW_WORDS: tuple[str, ...] = (
    "stain", "tear", "rip", "hole", "scratch", "scuff", "crack", "chip", "dent", "fading",
    "faded", "pilling", "fray", "frayed", "wear", "worn", "discoloration", "discolouration",
    "mark", "snag", "missing button", "broken zipper", "peeling", "creasing", "crease",
)

#: eBay takes at most this many characters of condition description.
DESCRIPTION_LIMIT = 1000


def _flaws_in(text: str) -> list[str]:
    """The flaw words ``text`` says (a word or its plural or past form)."""
    tokens = set(text.replace(",", " ").replace(".", " ").split())
    return [word for word in FLAW_WORDS
            if (" " in word and word in text)
            or tokens & {word, word + "s", word + "es", word + "ed", word + "d"}]


def flaw_photos(analysis: Analysis) -> tuple[int, ...]:
    """The places of the item's photos whose role is ``flaw``."""
    return tuple(p.index for p in analysis.photos if p.role is PhotoRole.FLAW)


def choose_condition(analysis: Analysis, given: Condition | str | None) -> Condition:
    """The condition given, else one the evidence reads off the item (an
    attribute ``condition``), else USED when a photo shows a flaw, else UNKNOWN."""
    if given is not None:
        return given if isinstance(given, Condition) else Condition.parse(given)
    read = supported(analysis.identification, "condition")
    if read:
        return Condition.parse(read)
    return Condition.USED if flaw_photos(analysis) else Condition.UNKNOWN


def draft_condition(condition: Condition, allowed: Sequence[ConditionOption] | None,
                    *, flawed: bool) -> tuple[str | None, str | None, list[str]]:
    """The marketplace's condition id and name for ``condition`` among those the
    category allows (``allowed``; None when not known), and the problems."""
    if condition is Condition.UNKNOWN:
        return None, None, ["the item's condition is not known from the photos: give it"]
    preferred = PREFERRED_IDS[condition]
    if condition is Condition.NEW and flawed:
        preferred = ("1750", *preferred)
    if allowed is None:
        first = preferred[0]
        return first, CONDITION_NAMES[first], []
    names = {option.condition_id: option.name for option in allowed}
    for condition_id in preferred:
        if condition_id in names:
            return condition_id, names[condition_id], []
    return None, None, [f"the category allows no condition for {condition.value!r}; "
                        "choose one"]


def condition_description(analysis: Analysis) -> str:
    """What the flaw photos show, in words, for the condition description; ""
    when no photo is a flaw photo."""
    places = flaw_photos(analysis)
    if not places:
        return ""
    seen: list[str] = []
    for opinion in analysis.opinions:
        if opinion.ok and opinion.photo in places:
            for obs in opinion.observations():
                for word in _flaws_in(clean(obs.text).casefold()):
                    if word not in seen:
                        seen.append(word)
    numbers = [str(p + 1) for p in places]
    where = ("photo " + numbers[0]) if len(numbers) == 1 else (
        "photos " + ", ".join(numbers[:-1]) + " and " + numbers[-1])
    if seen:
        text = f"Flaws shown in {where}: {', '.join(seen)}."
    else:
        text = f"Flaws shown in {where}; please see the photos."
    return text[:DESCRIPTION_LIMIT]

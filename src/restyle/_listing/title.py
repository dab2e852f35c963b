"""The listing title: at most 80 characters, the most telling words first
(brand, product, model, size, colour, material, pattern, style, category,
then condition words), no word twice, and only words the identification's
evidence supports (see docs/listing.md, "The title")."""

from __future__ import annotations

from collections.abc import Iterable

from restyle._listing.text import clean, length, word_key
from restyle._types import Condition, Identification

__all__ = ["TITLE_FIELDS", "TITLE_LIMIT", "build_title", "supported"]

#: eBay's limit on a title's length, in characters.
TITLE_LIMIT = 80

#: The identification's fields in the order their words go in the title.
TITLE_FIELDS: tuple[str, ...] = (
    "brand", "product_name", "model_number", "size", "color", "material", "pattern", "style",
    "category",
)

#: The words a condition adds at the end of the title (Used adds none: it
#: tells a buyer nothing the listing's condition does not).
CONDITION_WORDS: dict[Condition, str] = {
    Condition.NEW: "New",
    Condition.LIKE_NEW: "Like New",
    Condition.FOR_PARTS: "For Parts",
}


def field_value(identification: Identification, name: str) -> str | None:
    """The identification's value of field ``name`` (a main field or an attribute)."""
    if name in ("brand", "product_name", "category"):
        value: str | None = getattr(identification, name)
        return value
    return identification.attribute(name)


def supported(identification: Identification, name: str) -> str | None:
    """The value of field ``name``, cleaned, when the evidence backs it: some
    expert's evidence for that field holds the same value (case and Unicode
    form aside). None otherwise."""
    value = clean(field_value(identification, name))
    if not value:
        return None
    key = value.casefold()
    for evidence in identification.evidence_for(name):
        if clean(evidence.value).casefold() == key:
            return value
    return None


def build_title(identification: Identification, condition: Condition = Condition.UNKNOWN,
                *, limit: int = TITLE_LIMIT) -> str:
    """The title for ``identification``: the supported fields' words in
    :data:`TITLE_FIELDS` order, then the condition's words; a word already in
    the title is left out, and a word that would take the title past
    ``limit`` is skipped (a shorter later one may still fit)."""
    words: list[str] = []
    for name in TITLE_FIELDS:
        value = supported(identification, name)
        if value:
            words.extend(value.split(" "))
    words.extend(CONDITION_WORDS.get(condition, "").split())
    return fit(words, limit)


def fit(words: Iterable[str], limit: int = TITLE_LIMIT) -> str:
    """``words`` joined by spaces, each once, within ``limit`` characters."""
    seen: set[str] = set()
    title = ""
    for word in words:
        word = clean(word)
        key = word_key(word)
        if not key or key in seen:
            continue
        candidate = f"{title} {word}" if title else word
        if length(candidate) > limit:
            continue
        seen.add(key)
        title = candidate
    return title

"""The listing description: simple HTML built by a template from the draft's
supported facts, or paragraphs written by a language model under a schema
and then checked sentence by sentence (docs/listing.md, "The description").

Whatever writes it, the HTML is built here: every text is escaped, links are
struck out, and only ``<p>``, ``<ul>``, ``<li>`` and ``<b>`` are used, so no
script, hidden text or external link can reach the listing (eBay's rules).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from html import escape
from typing import Any

from restyle._listing.text import clean
from restyle._listing.values import DraftAspect
from restyle._taxonomy import FACETS, sizes
from restyle._types import Analysis, Condition

__all__ = ["DESCRIPTION_SCHEMA", "Writer", "check_written", "facts_of", "template_html",
           "written_html"]

#: What a language model answers with when it writes a description.
DESCRIPTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "paragraphs": {"type": "array", "items": {"type": "string", "maxLength": 600},
                       "maxItems": 4},
        "highlights": {"type": "array", "items": {"type": "string", "maxLength": 120},
                       "maxItems": 8},
    },
    "required": ["paragraphs"],
    "additionalProperties": False,
}

#: A writer: the facts (see :func:`facts_of`) in, an answer of
#: :data:`DESCRIPTION_SCHEMA` out.
Writer = Callable[[Mapping[str, Any]], Mapping[str, Any]]

_URL = re.compile(r"(?i)\b(?:https?://|www\.)\S+|\b[\w.-]+\.(?:com|net|org|io|co|shop)\b\S*")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_MATERIALS = frozenset(FACETS["material"]) | {
    "cashmere", "merino", "nylon", "rayon", "viscose", "spandex", "elastane", "acrylic",
    "alpaca", "mohair", "satin", "velvet", "corduroy", "fleece", "gore-tex", "fur",
    "sheepskin", "gold", "silver", "platinum",
}
#: Claims the photos cannot back, struck out of a written description.
_CLAIMS = ("authentic", "genuine", "guaranteed", "certified", "100% original", "rare",
           "limited edition", "one of a kind")
#: Claims about condition, kept only when the draft's condition says as much.
_NEW_CLAIMS = ("brand new", "new with tags", "nwt", "never worn", "unworn", "mint",
               "flawless", "perfect condition", "no flaws")


def _words(text: str) -> set[str]:
    return set(re.findall(r"[\w-]+", text.casefold()))


def facts_of(title: str, aspects: Sequence[DraftAspect], condition: Condition,
             condition_name: str | None, condition_description: str) -> dict[str, Any]:
    """What a writer may say: the title, the item specifics and the condition."""
    return {
        "title": title,
        "item_specifics": {a.name: list(a.values) for a in aspects},
        "condition": condition_name or condition.value,
        "flaws": condition_description,
        "rules": "Use only these facts. No links, no prices, no claims of authenticity, "
                 "no brand, size or material that is not listed here.",
    }


def template_html(title: str, aspects: Sequence[DraftAspect], condition: Condition,
                  condition_name: str | None, condition_description: str) -> str:
    """The description the template builds: the title, the item specifics, the
    condition and its flaws."""
    parts = [f"<p>{escape(title)}</p>"] if title else []
    if aspects:
        rows = "".join(f"<li><b>{escape(a.name)}:</b> {escape(', '.join(a.values))}</li>"
                       for a in aspects)
        parts.append(f"<ul>{rows}</ul>")
    if condition is not Condition.UNKNOWN:
        words = escape(condition_name or condition.value.replace("_", " "))
        extra = f" {escape(condition_description)}" if condition_description else ""
        parts.append(f"<p><b>Condition:</b> {words}.{extra}</p>")
    return "".join(parts)


class _Allowed:
    """What the evidence lets a written sentence say."""

    def __init__(self, analysis: Analysis, aspects: Sequence[DraftAspect],
                 condition: Condition, flawed: bool) -> None:
        said = " ".join(v for a in aspects for v in a.values)
        self.materials = _words(said) & _MATERIALS
        self.sizes = {s.casefold() for a in aspects if a.field == "size" for v in a.values
                      for s in [*sizes(v), v]}
        brand = next((v for a in aspects if a.field == "brand" for v in a.values), "")
        self.brand = brand.casefold()
        self.brands = {b for b in _brands_seen(analysis) if b and b != self.brand}
        self.new_claims = condition is Condition.NEW and not flawed

    def problem(self, sentence: str) -> str | None:
        """Why ``sentence`` cannot stay, or None when the evidence backs it."""
        lowered = sentence.casefold()
        words = _words(sentence)
        for material in sorted((words & _MATERIALS) - self.materials):
            return f"material {material!r} is not in the evidence"
        for size in sizes(sentence):
            if size.casefold() not in self.sizes:
                return f"size {size!r} is not in the evidence"
        for brand in sorted(self.brands):
            if re.search(rf"(?<!\w){re.escape(brand)}(?!\w)", lowered):
                return f"brand {brand!r} is not the identified brand"
        for claim in _CLAIMS:
            if re.search(rf"(?<!\w){re.escape(claim)}(?!\w)", lowered):
                return f"claim {claim!r} cannot be backed by photos"
        if not self.new_claims:
            for claim in _NEW_CLAIMS:
                if re.search(rf"(?<!\w){re.escape(claim)}(?!\w)", lowered):
                    return f"claim {claim!r} does not match the condition"
        return None


def _brands_seen(analysis: Analysis) -> Iterable[str]:
    """Every brand some expert or comp named: a written text may name only the one identified."""
    for opinion in analysis.opinions:
        yield from (clean(obs.text).casefold() for obs in opinion.logos)
        yield from (clean(obs.text).casefold() for obs in opinion.observations()
                    if obs.facet == "brand")
    for comp in analysis.comps:
        if comp.listing.brand:
            yield clean(comp.listing.brand).casefold()


def check_written(texts: Sequence[str], allowed: _Allowed) -> tuple[list[str], list[str]]:
    """``texts`` with links struck out and every sentence the evidence does not
    back removed; and what was removed, in words."""
    kept_texts: list[str] = []
    removed: list[str] = []
    for text in texts:
        text = clean(text)
        if _URL.search(text):
            removed.append("a link")
            text = clean(_URL.sub("", text))
        kept: list[str] = []
        for sentence in _SENTENCE.split(text):
            why = allowed.problem(sentence)
            if why is None:
                kept.append(sentence)
            else:
                removed.append(f"{why}: {sentence[:80]!r}")
        if kept:
            kept_texts.append(" ".join(kept))
    return kept_texts, removed


def _strings(answer: Mapping[str, Any], name: str, limit: int) -> list[str]:
    value = answer.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"the written description's {name} is not a list of strings")
    return [v[:DESCRIPTION_SCHEMA["properties"][name]["items"]["maxLength"]]
            for v in value[:limit]]


def written_html(answer: Mapping[str, Any], analysis: Analysis, aspects: Sequence[DraftAspect],
                 condition: Condition, flawed: bool) -> tuple[str, list[str]]:
    """The HTML of a written answer, checked; and what was removed. Raises
    ValueError when the answer is not of :data:`DESCRIPTION_SCHEMA`."""
    if not isinstance(answer, Mapping):
        raise ValueError("the written description is not an object")
    unknown = set(answer) - set(DESCRIPTION_SCHEMA["properties"])
    if unknown:
        raise ValueError(f"the written description has unknown fields {sorted(unknown)}")
    allowed = _Allowed(analysis, aspects, condition, flawed)
    paragraphs, removed = check_written(_strings(answer, "paragraphs", 4), allowed)
    highlights, more = check_written(_strings(answer, "highlights", 8), allowed)
    removed.extend(more)
    html = "".join(f"<p>{escape(p)}</p>" for p in paragraphs)
    if highlights:
        html += "<ul>" + "".join(f"<li>{escape(h)}</li>" for h in highlights) + "</ul>"
    return html, removed

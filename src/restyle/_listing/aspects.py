"""Item specifics: each aspect of the category filled from the field of the
identification that tells it, when the evidence supports that field.

The matching rule (docs/listing.md, "Item specifics"): a value matches one of
the marketplace's listed values when the two are the same text once case,
Unicode form, punctuation and spacing are set aside, once British and
American spellings are set aside (grey/gray, colour/color), or once a final
plural ``s``/``es`` is. Nothing closer than that is guessed: a
SELECTION_ONLY aspect whose value matches none of the listed ones is left
empty, and said so; a FREE_TEXT value takes the listed spelling when one
matches and is left out when it is longer than the aspect's limit.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence

from restyle._listing.text import clean, length
from restyle._listing.title import supported
from restyle._listing.values import AspectMode, AspectSpec, DraftAspect
from restyle._types import Identification

__all__ = ["FIELD_ASPECTS", "GENERIC_ASPECTS", "fill_aspects", "match_value"]

#: Which aspect names (as eBay spells them, in its marketplaces' languages
#: where they differ) each identification field fills, most likely first.
FIELD_ASPECTS: dict[str, tuple[str, ...]] = {
    "brand": ("Brand", "Marke", "Marque", "Marca"),
    "model_number": ("Model", "MPN", "Style Code"),
    "product_name": ("Model", "Product Line"),
    "size": ("Size", "Size (Men's)", "Size (Women's)", "US Shoe Size", "UK Shoe Size",
             "EU Shoe Size", "Größe", "Taille"),
    "color": ("Color", "Colour", "Main Colour", "Main Color", "Farbe", "Couleur"),
    "material": ("Material", "Outer Shell Material", "Upper Material", "Exterior Material",
                 "Main Material", "Matière"),
    "pattern": ("Pattern", "Muster", "Motif"),
    "style": ("Style", "Stil"),
    "category": ("Type", "Produktart"),
}

#: The aspects a draft fills when no marketplace says which a category takes
#: (offline): the ones most clothing, shoe and accessory categories ask for.
GENERIC_ASPECTS: tuple[AspectSpec, ...] = (
    AspectSpec(name="Brand", required=True, max_length=65),
    AspectSpec(name="Type", max_length=65),
    AspectSpec(name="Model", max_length=65),
    AspectSpec(name="Size", max_length=65),
    AspectSpec(name="Color", max_length=65),
    AspectSpec(name="Material", max_length=65),
    AspectSpec(name="Pattern", max_length=65),
    AspectSpec(name="Style", max_length=65),
)

_SPELLINGS = (("grey", "gray"), ("colour", "color"), ("multicolour", "multicolor"))
_NOT_WORD = re.compile(r"[\W_]+")
_SEPARATORS = re.compile(r"\s*[,;/]\s*|\s+&\s+|\s+and\s+")


def _key(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).casefold()
    for british, american in _SPELLINGS:
        text = text.replace(british, american)
    return _NOT_WORD.sub("", text)


def _singular(key: str) -> str:
    if key.endswith("es") and len(key) > 4:
        return key[:-2]
    if key.endswith("s") and len(key) > 3:
        return key[:-1]
    return key


def match_value(value: str, allowed: Sequence[str]) -> str | None:
    """The listed value ``value`` matches by the rule above, in the marketplace's
    spelling; None when it matches none."""
    key = _key(value)
    if not key:
        return None
    keys = [_key(a) for a in allowed]
    for candidate, candidate_key in zip(allowed, keys, strict=True):
        if candidate_key == key:
            return candidate
    for candidate, candidate_key in zip(allowed, keys, strict=True):
        if candidate_key and _singular(candidate_key) == _singular(key):
            return candidate
    return None


def _spec_for(field: str, specs: dict[str, AspectSpec], taken: set[str]) -> AspectSpec | None:
    for name in FIELD_ASPECTS[field]:
        spec = specs.get(name.casefold())
        if spec is not None and spec.name.casefold() not in taken:
            return spec
    return None


def _values_for(spec: AspectSpec, value: str, problems: list[str]) -> tuple[str, ...]:
    """The aspect's values for the identification's ``value``, by the rule above."""
    parts = [p for p in _SEPARATORS.split(value) if p] if spec.multi else [value]
    chosen: list[str] = []
    for part in parts:
        listed = match_value(part, spec.values)
        if listed is None and spec.mode is AspectMode.SELECTION_ONLY:
            problems.append(f"item specific {spec.name!r}: {part!r} is not one of the "
                            "values the marketplace allows; choose one")
            continue
        text = listed if listed is not None else part
        if spec.max_length is not None and length(text) > spec.max_length:
            problems.append(f"item specific {spec.name!r}: {part!r} is longer than the "
                            f"{spec.max_length} characters allowed; left out")
            continue
        if text not in chosen:
            chosen.append(text)
    return tuple(chosen)


def fill_aspects(identification: Identification, specs: Sequence[AspectSpec]
                 ) -> tuple[tuple[DraftAspect, ...], tuple[str, ...]]:
    """The draft's item specifics for ``specs`` (a category's aspects), and the
    problems: values that could not be given, required aspects left empty."""
    by_name = {clean(s.name).casefold(): s for s in specs}
    taken: set[str] = set()
    aspects: list[DraftAspect] = []
    problems: list[str] = []
    for field in FIELD_ASPECTS:
        value = supported(identification, field)
        if not value:
            continue
        spec = _spec_for(field, by_name, taken)
        if spec is None:
            continue
        values = _values_for(spec, value, problems)
        if values:
            taken.add(spec.name.casefold())
            aspects.append(DraftAspect(name=spec.name, values=values, field=field))
    for spec in specs:
        if spec.required and spec.name.casefold() not in taken:
            problems.append(f"required item specific {spec.name!r} is not known from the "
                            "photos: fill it in")
    return tuple(aspects), tuple(problems)

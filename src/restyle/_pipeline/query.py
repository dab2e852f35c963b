"""Turning an Identification into marketplace queries, most specific first.

Relaxation drops detail step by step: the model number first, then the
attributes, then the product name (brand + category), then the brand.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from restyle._types import Identification, Query

__all__ = ["MODEL_NUMBER_ATTRIBUTES", "RELAXATION_STEPS", "build_query", "relaxed_queries"]

#: The relaxation steps, in the order they are tried.
RELAXATION_STEPS = (
    "full", "no-model-number", "no-attributes", "brand-category", "category", "any",
)

#: Attribute names an expert may use for a model or style number.
MODEL_NUMBER_ATTRIBUTES = ("model_number", "model", "mpn", "style_code")

#: Attributes that go into the words of the most specific queries.
_QUERY_ATTRIBUTES = ("color", "material")


def _join(*parts: str | None) -> str:
    words: list[str] = []
    seen: set[str] = set()
    for part in parts:
        for word in (part or "").split():
            if word.lower() not in seen:
                seen.add(word.lower())
                words.append(word)
    return " ".join(words)


def _model_number(identification: Identification) -> str | None:
    for name in MODEL_NUMBER_ATTRIBUTES:
        value = identification.attribute(name)
        if value and value.strip():
            return value.strip()
    return None


def build_query(identification: Identification, *, limit: int = 50) -> Query:
    """The most specific query for ``identification``."""
    return next(relaxed_queries(identification, limit=limit))


def relaxed_queries(identification: Identification, *, limit: int = 50) -> Iterator[Query]:
    """Queries from most to least specific; steps that would repeat one are skipped."""
    ident = identification
    model = _model_number(ident)
    attrs = tuple(a.value for a in ident.attributes if a.name in _QUERY_ATTRIBUTES)
    product = ident.product_name or ident.category
    common: dict[str, Any] = {"brand": ident.brand, "category": ident.category, "limit": limit}
    candidates = [
        Query(text=_join(ident.brand, product, model, *attrs), product_name=ident.product_name,
              model_number=model, attributes=attrs, step="full", **common),
        Query(text=_join(ident.brand, product, *attrs), product_name=ident.product_name,
              attributes=attrs, step="no-model-number", **common),
        Query(text=_join(ident.brand, product), product_name=ident.product_name,
              step="no-attributes", **common),
        Query(text=_join(ident.brand, ident.category), step="brand-category", **common),
        Query(text=_join(ident.category), category=ident.category, limit=limit, step="category"),
        Query(text="", limit=limit, step="any"),
    ]
    seen: set[tuple[object, ...]] = set()
    for query in candidates:
        key = (query.text, query.brand, query.category, query.product_name, query.model_number,
               query.attributes)
        if key in seen:
            continue
        seen.add(key)
        yield query

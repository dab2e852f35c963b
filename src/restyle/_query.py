"""Turning an Identification into marketplace queries, most specific first."""

from __future__ import annotations

from collections.abc import Iterator

from restyle._types import Identification, Query

__all__ = ["RELAXATION_STEPS", "build_query", "relaxed_queries"]

#: The relaxation steps, in the order they are tried.
RELAXATION_STEPS = ("full", "no-attributes", "brand-category", "category", "any")


def _join(*parts: str | None) -> str:
    words: list[str] = []
    seen: set[str] = set()
    for part in parts:
        for word in (part or "").split():
            if word.lower() not in seen:
                seen.add(word.lower())
                words.append(word)
    return " ".join(words)


def build_query(identification: Identification, *, limit: int = 50) -> Query:
    """The most specific query for ``identification``."""
    return next(relaxed_queries(identification, limit=limit))


def relaxed_queries(identification: Identification, *, limit: int = 50) -> Iterator[Query]:
    """Queries from most to least specific; steps that would repeat one are skipped."""
    ident = identification
    attrs = tuple(a.value for a in ident.attributes if a.name in ("color", "material"))
    candidates = [
        Query(
            text=_join(ident.brand, ident.product_name or ident.category, *attrs),
            brand=ident.brand, category=ident.category, product_name=ident.product_name,
            attributes=attrs, limit=limit, step="full",
        ),
        Query(
            text=_join(ident.brand, ident.product_name or ident.category),
            brand=ident.brand, category=ident.category, product_name=ident.product_name,
            limit=limit, step="no-attributes",
        ),
        Query(
            text=_join(ident.brand, ident.category), brand=ident.brand, category=ident.category,
            limit=limit, step="brand-category",
        ),
        Query(text=_join(ident.category), category=ident.category, limit=limit, step="category"),
        Query(text="", limit=limit, step="any"),
    ]
    seen: set[tuple[object, ...]] = set()
    for query in candidates:
        key = (query.text, query.brand, query.category, query.product_name, query.attributes)
        if key in seen:
            continue
        seen.add(key)
        yield query

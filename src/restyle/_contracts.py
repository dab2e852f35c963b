"""What components hand back, checked where it enters the pipeline.

A value off its contract becomes a :class:`~restyle.PluginContractError`
naming the component, and the pipeline degrades as it does for a component
that raised. Vectors are made safe to rank with (finite, unit length, the
right shape) or refused; they are never ranked as they came.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Mapping, Sequence
from itertools import islice
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from restyle._components import Component
from restyle._errors import PluginContractError
from restyle._types import Identification, Listing, Observation, Opinion

__all__ = [
    "FETCHED_SCHEMES",
    "check_identification",
    "check_image_urls",
    "check_known_vectors",
    "check_listings",
    "check_opinion",
    "check_vectors",
]

#: The URL schemes the Engine downloads comp images over.
FETCHED_SCHEMES = ("http", "https")

# Rows whose length is this close to 1 are taken as they are.
_UNIT_TOLERANCE = 1e-3
_GROUPS = ("labels", "entities", "objects", "logos", "texts", "pages")


def _error(component: Component, message: str) -> PluginContractError:
    return PluginContractError(message, component=component.name, kind=component.kind)


def _type_name(value: object) -> str:
    return type(value).__name__


def check_opinion(expert: Component, value: object) -> Opinion:
    """The expert's Opinion, with its groups as tuples of Observations."""
    if not isinstance(value, Opinion):
        raise _error(expert, f"returned {_type_name(value)} from examine(), not an Opinion")
    changes: dict[str, Any] = {}
    for group in _GROUPS:
        items = getattr(value, group)
        if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Iterable):
            raise _error(expert, f"returned an Opinion whose {group} is {_type_name(items)}, "
                                 "not a tuple of Observations")
        items = tuple(items)
        for item in items:
            if not isinstance(item, Observation):
                raise _error(expert, f"returned an Opinion whose {group} holds "
                                     f"{_type_name(item)}, not Observation")
        changes[group] = items
    similar = value.similar_images
    if isinstance(similar, (str, bytes)) or not all(isinstance(u, str) for u in similar):
        raise _error(expert, "returned an Opinion whose similar_images is not a tuple of URLs")
    changes["similar_images"] = tuple(similar)
    if value.error is not None and not isinstance(value.error, str):
        raise _error(expert, f"returned an Opinion whose error is {_type_name(value.error)}")
    return dataclasses.replace(value, **changes)


def check_identification(synthesizer: Component, value: object) -> Identification:
    if not isinstance(value, Identification):
        raise _error(synthesizer,
                     f"returned {_type_name(value)} from synthesize(), not an Identification")
    for name in ("product_name", "brand", "category"):
        field = getattr(value, name)
        if field is not None and not isinstance(field, str):
            raise _error(synthesizer,
                         f"returned an Identification whose {name} is {_type_name(field)}")
    return value


def check_listings(
    market: Component, value: object, *, limit: int, warnings: list[str]
) -> list[Listing]:
    """At most ``limit`` Listings, each key once. ``value`` may be any iterable
    (a generator is read no further than it has to be)."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise _error(market, f"returned {_type_name(value)} from a search, "
                             "not a sequence of Listings")
    listings: list[Listing] = []
    seen: set[str] = set()
    repeated = 0
    items = list(islice(value, limit + 1))
    if len(items) > limit:
        warnings.append(f"marketplace {market.name} returned more than the {limit} listings "
                        "asked for; the rest were ignored")
        items = items[:limit]
    for index, item in enumerate(items):
        if not isinstance(item, Listing):
            raise _error(market, f"returned {_type_name(item)} at position {index} of a "
                                 "search, not a Listing")
        if item.image_url is not None and not isinstance(item.image_url, str):
            raise _error(market, f"returned a Listing whose image_url is "
                                 f"{_type_name(item.image_url)}, not a URL string")
        if item.key in seen:
            repeated += 1
            continue
        seen.add(item.key)
        listings.append(item)
    if repeated:
        warnings.append(f"marketplace {market.name} returned {repeated} listing(s) twice; "
                        "each was kept once")
    return listings


def check_image_urls(
    market: Component, listings: Sequence[Listing], *, known: Collection[str],
    warnings: list[str],
) -> None:
    """Warn about listings whose image the Engine cannot download (an
    ``image_url`` that is not http(s)) and whose vector the marketplace did not
    give (``known``: the listing keys it gave vectors for)."""
    unusable = [
        item for item in listings
        if item.image_url and item.key not in known
        and urlsplit(item.image_url).scheme.lower() not in FETCHED_SCHEMES
    ]
    if unusable:
        sample = (unusable[0].image_url or "")[:80]
        warnings.append(
            f"marketplace {market.name} returned {len(unusable)} listing(s) whose image_url is "
            f"not an http(s) URL (such as {sample!r}) and gave no vector "
            "for them: their images cannot be compared"
        )


def check_vectors(encoder: Component, value: object, *, count: int,
                  dim: int | None = None, warnings: list[str] | None = None) -> np.ndarray:
    """``value`` as a float32 array of ``count`` unit rows (of ``dim`` when given).

    Rows that are finite but not unit length are normalised (and ``warnings``,
    when given, says so); a row that is not finite or is all zeros, or a wrong
    shape, is refused.
    """
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise _error(encoder, f"returned {_type_name(value)}, not an array of vectors") from exc
    if array.ndim != 2 or array.shape[0] != count:
        raise _error(encoder, f"returned an array of shape {array.shape} for {count} input(s)")
    if dim is not None and array.shape[1] != dim:
        raise _error(encoder, f"returned vectors of length {array.shape[1]}, not its dim {dim}")
    if array.shape[1] == 0:
        raise _error(encoder, "returned empty vectors")
    if not np.isfinite(array).all():
        raise _error(encoder, "returned vectors that are not finite (NaN or infinity)")
    norms = np.linalg.norm(array, axis=1)
    if (norms == 0).any():
        raise _error(encoder, "returned all-zero vectors")
    if np.abs(norms - 1.0).max() > _UNIT_TOLERANCE:
        if warnings is not None:
            warnings.append(f"{encoder.kind} {encoder.name} returned vectors that are not unit "
                            f"length (norms {norms.min():.4g} to {norms.max():.4g}); "
                            "they were normalised")
        array = array / norms[:, None]
    return np.ascontiguousarray(array, dtype=np.float32)


def check_known_vectors(
    market: Component, value: object, *, keys: Sequence[str], dim: int, warnings: list[str]
) -> dict[str, np.ndarray]:
    """The usable vectors of a marketplace's ``image_embeddings`` answer, for
    ``keys`` only; bad entries are dropped with one warning."""
    if not isinstance(value, Mapping):
        raise _error(market, f"returned {_type_name(value)} from image_embeddings(), "
                             "not a mapping of listing keys to vectors")
    wanted = set(keys)
    usable: dict[str, np.ndarray] = {}
    dropped = 0
    for key, vector in value.items():
        if key not in wanted:
            continue
        try:
            usable[key] = check_vectors(market, np.asarray(vector).reshape(1, -1),
                                        count=1, dim=dim)[0]
        except (PluginContractError, ValueError, TypeError):
            dropped += 1
    if dropped:
        warnings.append(f"marketplace {market.name} gave {dropped} unusable image "
                        "vector(s); those images are fetched instead")
    return usable

"""What components hand back, checked where it enters the pipeline.

Every answer is read, checked and copied on the component's own worker thread,
under its call's deadline (see :func:`restyle._pipeline.budget.start`): a lazy iterable
that stalls or never ends overruns there, not on the pipeline's thread. What
comes out is restyle's own plain values (exact ``str``, ``float``, tuples and
the pipeline's dataclasses, never a plugin's subclass), with every text, list
and vector bounded (:data:`MAX_TEXT`, :data:`MAX_ITEMS`), so nothing a plugin
made can run code, grow or change after the check.

A value off its contract becomes a :class:`~restyle.PluginContractError`
naming the component, and the pipeline degrades as it does for a component
that raised. Vectors are made safe to rank with (finite, unit length, the
right shape) or refused; they are never ranked as they came.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import types
import typing
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from functools import cache
from itertools import islice
from typing import Any, Protocol, TypeVar, Union, get_args, get_origin
from urllib.parse import urlsplit

import numpy as np

from restyle._errors import PluginContractError
from restyle._types import Identification, Listing, Opinion

__all__ = [
    "FETCHED_SCHEMES",
    "MAX_ITEMS",
    "MAX_TEXT",
    "MAX_VECTOR_DIM",
    "NORM_TOLERANCE",
    "check_identification",
    "check_image_urls",
    "check_known_vectors",
    "check_listings",
    "check_opinion",
    "check_vectors",
    "plain",
    "vector_problem",
]

#: The URL schemes the Engine downloads comp images over.
FETCHED_SCHEMES = ("http", "https")
#: Longest text a component may put in any field of its answer, in characters
#: (a title, a label, a summary, an error message, a URL).
MAX_TEXT = 10_000
#: Most items in any list of a component's answer (the observations of one
#: group, an identification's attributes, a marketplace's listings before
#: ``query.limit`` is applied, the vectors of ``image_embeddings``).
MAX_ITEMS = 1_000
#: Widest vector accepted from a component (CLIP models use 512 to 1,280).
MAX_VECTOR_DIM = 16_384

#: How far a vector's length may be from 1 and still count as a unit vector
#: (fp16 encoders round to about 1e-3). One tolerance for every vector restyle
#: takes in: a component's answer further off is normalised with a warning; a
#: stored vector further off (a catalog's, the embedding cache's) is refused.
NORM_TOLERANCE = 1e-2
_GROUPS = ("labels", "entities", "objects", "logos", "texts", "pages")

V = TypeVar("V")


class Component(Protocol):
    """What the checks read of a component: its kind and name, for messages.
    (Components are defined above this module and use these checks.)"""

    @property
    def kind(self) -> str: ...

    @property
    def name(self) -> str: ...


class _OffContract(Exception):
    """What :func:`plain` found wrong, with where in the value."""


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def plain(tp: type[V], value: object) -> V:
    """``value`` copied into a fresh instance of restyle's type ``tp``.

    Strings become exact ``str`` (a subclass's methods are never called),
    numbers exact ``float`` / ``int``, sequences tuples of at most
    :data:`MAX_ITEMS`, texts at most :data:`MAX_TEXT` characters, nested
    values are copied the same way and every dataclass is rebuilt through its
    own constructor, so its checks run again. Raises ``ValueError`` naming the
    field that is off its contract (``labels[0].facet is int, not a string``)."""
    try:
        return _copy(tp, value, "")  # type: ignore[no-any-return]
    except _OffContract as exc:
        raise ValueError(str(exc)) from None


def _at(where: str) -> str:
    return where or "the value"


def _copy(tp: Any, value: object, where: str) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return _copy_union(tp, value, where)
    if origin is tuple:
        return _copy_tuple(tp, value, where)
    if isinstance(tp, type):
        scalar = _SCALARS.get(tp)
        if scalar is not None:
            return scalar(value, where)
        if issubclass(tp, enum.Enum):
            return _copy_enum(tp, value, where)
        if dataclasses.is_dataclass(tp):
            return _copy_dataclass(tp, value, where)
    raise _OffContract(f"{_at(where)} has a type restyle does not copy ({tp!r})")


def _copy_union(tp: Any, value: object, where: str) -> Any:
    args = [a for a in get_args(tp) if a is not type(None)]
    if value is None:
        if len(args) < len(get_args(tp)):
            return None
        raise _OffContract(f"{_at(where)} is None")
    if len(args) == 1:
        return _copy(args[0], value, where)
    for arg in args:  # unions of plain types only (str | int ...)
        try:
            return _copy(arg, value, where)
        except _OffContract:
            continue
    raise _OffContract(f"{_at(where)} is {type(value).__name__}")


def _copy_tuple(tp: Any, value: object, where: str) -> tuple[Any, ...]:
    (item_type, _) = get_args(tp)
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        noun = "strings" if item_type is str else f"{getattr(item_type, '__name__', 'value')}s"
        raise _OffContract(f"{_at(where)} is {type(value).__name__}, not a tuple of {noun}")
    items = list(islice(iter(value), MAX_ITEMS + 1))
    if len(items) > MAX_ITEMS:
        raise _OffContract(f"{_at(where)} holds more than {MAX_ITEMS:,} items")
    return tuple(_copy(item_type, v, f"{where}[{i}]") for i, v in enumerate(items))


def _copy_str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise _OffContract(f"{_at(where)} is {type(value).__name__}, not a string")
    if str.__len__(value) > MAX_TEXT:
        raise _OffContract(f"{_at(where)} is longer than {MAX_TEXT:,} characters")
    return str.__str__(value)  # an exact str, whatever the subclass does


def _copy_float(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _OffContract(f"{_at(where)} is {type(value).__name__}, not a number")
    return float.__float__(value) if isinstance(value, float) else float(int.__int__(value))


def _copy_int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _OffContract(f"{_at(where)} is {type(value).__name__}, not a whole number")
    return int.__int__(value)


def _copy_bool(value: object, where: str) -> bool:
    if value is not True and value is not False:
        raise _OffContract(f"{_at(where)} is {type(value).__name__}, not true or false")
    return value


def _copy_decimal(value: object, where: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (Decimal, int, float, str)):
        raise _OffContract(f"{_at(where)} is {type(value).__name__}, not a decimal number")
    try:
        if isinstance(value, Decimal):
            return Decimal(Decimal.__str__(value)[:MAX_TEXT])
        if isinstance(value, str):
            return Decimal(_copy_str(value, where))
        return Decimal(repr(_copy_float(value, where)))
    except InvalidOperation:
        raise _OffContract(f"{_at(where)} is not a decimal number") from None


def _copy_datetime(value: object, where: str) -> dt.datetime:
    if not isinstance(value, dt.datetime):
        raise _OffContract(f"{_at(where)} is {type(value).__name__}, not a datetime")
    try:  # the C methods, not a subclass's: a plain datetime, a fixed offset
        return dt.datetime.fromisoformat(dt.datetime.isoformat(value))
    except (TypeError, ValueError) as exc:
        raise _OffContract(f"{_at(where)} is not a usable datetime") from exc


#: How each scalar type is copied, by the exact type named in a hint.
_SCALARS: dict[type, Callable[[object, str], Any]] = {
    str: _copy_str,
    float: _copy_float,
    int: _copy_int,
    bool: _copy_bool,
    Decimal: _copy_decimal,
    dt.datetime: _copy_datetime,
}


def _copy_enum(tp: type[enum.Enum], value: object, where: str) -> enum.Enum:
    if type(value) is tp:  # a member: members cannot be subclassed
        return value
    if isinstance(value, str):
        try:
            return tp(str.__str__(value))
        except ValueError:
            pass
    raise _OffContract(f"{_at(where)} is {type(value).__name__}, not one of "
                       f"{[m.value for m in tp]}")


def _copy_dataclass(tp: type, value: object, where: str) -> Any:
    if not isinstance(value, tp):
        raise _OffContract(f"{_at(where)} is {type(value).__name__}, not {tp.__name__}")
    hints = _hints(tp)
    fields = {
        f.name: _copy(hints[f.name], object.__getattribute__(value, f.name),
                      f"{where}.{f.name}" if where else f.name)
        for f in dataclasses.fields(tp) if f.init
    }
    try:
        return tp(**fields)
    except (TypeError, ValueError) as exc:
        raise _OffContract(f"{_at(where)}: {str.__str__(str(exc))[:300]}") from None


def _error(component: Component, message: str) -> PluginContractError:
    return PluginContractError(message, component=component.name, kind=component.kind)


def _type_name(value: object) -> str:
    return type(value).__name__


def _copied(component: Component, tp: type[V], value: object, what: str) -> V:
    try:
        return plain(tp, value)
    except ValueError as exc:
        raise _error(component, f"returned {what} {exc}") from None


def check_opinion(expert: Component, value: object) -> Opinion:
    """The expert's Opinion, copied: groups as tuples of Observations, every
    text and list bounded."""
    if not isinstance(value, Opinion):
        raise _error(expert, f"returned {_type_name(value)} from examine(), not an Opinion")
    return _copied(expert, Opinion, value, "an Opinion whose")


def check_identification(synthesizer: Component, value: object) -> Identification:
    """The synthesizer's Identification, copied, every text and list bounded."""
    if not isinstance(value, Identification):
        raise _error(synthesizer,
                     f"returned {_type_name(value)} from synthesize(), not an Identification")
    return _copied(synthesizer, Identification, value, "an Identification whose")


def check_listings(
    market: Component, value: object, *, limit: int, warnings: list[str]
) -> list[Listing]:
    """At most ``limit`` Listings, copied, each key once. ``value`` may be any
    iterable (a generator is read no further than it has to be)."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise _error(market, f"returned {_type_name(value)} from a search, "
                             "not a sequence of Listings")
    listings: list[Listing] = []
    seen: set[str] = set()
    repeated = 0
    limit = min(limit, MAX_ITEMS)
    items = list(islice(iter(value), limit + 1))
    if len(items) > limit:
        warnings.append(f"marketplace {market.name} returned more than the {limit} listings "
                        "asked for; the rest were ignored")
        items = items[:limit]
    for index, item in enumerate(items):
        if not isinstance(item, Listing):
            raise _error(market, f"returned {_type_name(item)} at position {index} of a "
                                 "search, not a Listing")
        listing = _copied(market, Listing, item, f"a Listing at position {index} whose")
        if listing.key in seen:
            repeated += 1
            continue
        seen.add(listing.key)
        listings.append(listing)
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
    """``value`` as a float32 array of ``count`` unit rows of ``dim`` (an
    encoder's own ``dim`` when not given).

    The shape is checked before anything is copied (a broadcast view is never
    materialised at a size it was not meant to have). Rows that are finite but
    not unit length are normalised (and ``warnings``, when given, says so); a
    row that is not finite or is all zeros, or a wrong shape, is refused.
    """
    if dim is None and getattr(encoder, "kind", None) == "encoder":
        dim = _encoder_dim(encoder)
    if isinstance(value, np.ndarray):
        shape = tuple(value.shape)
        if len(shape) != 2 or shape[0] != count:
            raise _error(encoder, f"returned an array of shape {shape} for {count} input(s)")
        if dim is not None and shape[1] != dim:
            raise _error(encoder, f"returned vectors of length {shape[1]}, not its dim {dim}")
        if shape[1] > MAX_VECTOR_DIM:
            raise _error(encoder, f"returned vectors of length {shape[1]}, more than "
                                  f"{MAX_VECTOR_DIM:,}")
        if value.dtype.kind not in "fiu":
            raise _error(encoder, f"returned an array of {value.dtype}, not numbers")
    try:
        array = np.array(value, dtype=np.float32)  # a copy of our own
    except (TypeError, ValueError, OverflowError) as exc:
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
    if np.abs(norms - 1.0).max() > NORM_TOLERANCE and warnings is not None:
        warnings.append(f"{encoder.kind} {encoder.name} returned vectors that are not unit "
                        f"length (norms {norms.min():.4g} to {norms.max():.4g}); "
                        "they were normalised")
    if np.abs(norms - 1.0).max() > 1e-6:  # exactly unit rows, whatever came
        array = array / norms[:, None]
    return np.ascontiguousarray(array, dtype=np.float32)


def vector_problem(vector: np.ndarray, dim: int | None = None) -> str | None:
    """Why ``vector`` is not a usable stored embedding (a finite unit vector of
    ``dim`` values, within :data:`NORM_TOLERANCE`), or None."""
    if vector.ndim != 1 or vector.size == 0:
        return f"shape {vector.shape}"
    if dim is not None and vector.size != dim:
        return f"dimension {vector.size}, not {dim}"
    if not np.all(np.isfinite(vector)):
        return "values that are not finite"
    norm = float(np.linalg.norm(vector.astype(np.float64)))
    if abs(norm - 1.0) > NORM_TOLERANCE:
        return f"length {norm:.3g}, not 1"
    return None


def _encoder_dim(encoder: Component) -> int:
    try:
        dim = encoder.dim  # type: ignore[attr-defined]
    except PluginContractError:
        raise
    except Exception as exc:
        raise _error(encoder, f"has no usable dim: {type(exc).__name__}") from None
    if isinstance(dim, bool) or not isinstance(dim, int) or not 0 < dim <= MAX_VECTOR_DIM:
        raise _error(encoder, f"has dim {dim!r}, not a whole number from 1 to "
                              f"{MAX_VECTOR_DIM:,}")
    return int.__int__(dim)


def check_known_vectors(
    market: Component, value: object, *, keys: Sequence[str], dim: int, warnings: list[str]
) -> dict[str, np.ndarray]:
    """The usable vectors of a marketplace's ``image_embeddings`` answer, for
    ``keys`` only; bad entries are dropped with one warning."""
    if not isinstance(value, Mapping):
        raise _error(market, f"returned {_type_name(value)} from image_embeddings(), "
                             "not a mapping of listing keys to vectors")
    usable: dict[str, np.ndarray] = {}
    dropped = 0
    for key in keys[:MAX_ITEMS]:  # asked for by key: the mapping is never walked
        try:
            if key not in value:
                continue
            vector = value[key]
            if isinstance(vector, np.ndarray) and vector.size != dim:
                raise ValueError("wrong length")
            usable[key] = check_vectors(market, np.asarray(vector).reshape(1, -1),
                                        count=1, dim=dim)[0]
        except (PluginContractError, ValueError, TypeError, KeyError):
            dropped += 1
    if dropped:
        warnings.append(f"marketplace {market.name} gave {dropped} unusable image "
                        "vector(s); those images are fetched instead")
    return usable

"""Turning restyle's frozen dataclasses into JSON-ready dicts and back.

What goes out is redacted once more on the way: every string of
:func:`to_jsonable`'s output, and the repr of a class passed through
:func:`redacting_repr`, shows no registered secret, even one registered after
the text was recorded (a component's keys are learnt when it is first used, the
environment's whenever they change). Only registered values are replaced, so
that listing titles and URLs come back as they came.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
import threading
import types
import typing
from collections.abc import Callable
from decimal import Decimal
from functools import cache
from typing import Any, TypeVar, Union, get_args, get_origin

from restyle._secrets import REDACTED as _REDACTED
from restyle._secrets import redact_registered, registered_pattern

T = TypeVar("T")
C = TypeVar("C", bound=type)

#: Strings left as they are: a photo's thumbnail is base64 image data, no text.
_IMAGE_DATA = "data:image/"


def to_jsonable(value: Any) -> Any:
    """Convert a value built from restyle's types into plain JSON types, every
    string with the registered secrets redacted."""
    return _jsonable(value, registered_pattern())


def _jsonable(value: Any, secrets: re.Pattern[str] | None) -> Any:
    if isinstance(value, str):
        if secrets is None or value.startswith(_IMAGE_DATA):
            return value
        return secrets.sub(_REDACTED, value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: _jsonable(getattr(value, f.name), secrets)
            for f in dataclasses.fields(value)
            if f.metadata.get("serialize", True)
        }
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, secrets) for v in value]
    if isinstance(value, dict):
        return {_jsonable(str(k), secrets): _jsonable(v, secrets) for k, v in value.items()}
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    return value


_nested = threading.local()


def redacting_repr(cls: C) -> C:
    """``cls`` with a repr that shows no registered secret (applied after
    ``@dataclass``, which writes the repr this wraps). The outermost repr
    redacts the whole text once; the reprs of the values inside it do not."""
    original: Callable[[Any], str] = cls.__repr__  # type: ignore[assignment]

    def __repr__(self: Any) -> str:
        if getattr(_nested, "active", False):
            return original(self)
        _nested.active = True
        try:
            text = original(self)
        finally:
            _nested.active = False
        return redact_registered(text)

    __repr__.__qualname__ = f"{cls.__qualname__}.__repr__"
    cls.__repr__ = __repr__  # type: ignore[assignment]
    return cls


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_jsonable(cls: type[T], data: Any) -> T:
    """Rebuild an instance of ``cls`` from the output of :func:`to_jsonable`."""
    return _convert(cls, data)  # type: ignore[no-any-return]


def _convert(tp: Any, data: Any) -> Any:
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return _convert_union(tp, data)
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(args[0], v) for v in data)
        return tuple(_convert(a, v) for a, v in zip(args, data, strict=True))
    if origin in (list, typing.Sequence):
        (arg,) = get_args(tp)
        return [_convert(arg, v) for v in data]
    if origin in (dict, typing.Mapping) or (origin is not None and "Mapping" in repr(origin)):
        key_t, val_t = get_args(tp)
        return {_convert(key_t, k): _convert(val_t, v) for k, v in data.items()}
    if tp is Any or not isinstance(tp, type):
        return data
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(tp, data)
    if issubclass(tp, enum.Enum):
        return tp(data)
    scalar = _SCALARS.get(tp)
    return data if scalar is None else scalar(data)


def _convert_union(tp: Any, data: Any) -> Any:
    args = get_args(tp)
    if data is None and type(None) in args:
        return None
    last: Exception | None = None
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _convert(arg, data)
        except (TypeError, ValueError, KeyError) as exc:
            last = exc
    raise TypeError(f"cannot convert {data!r} to {tp}") from last


def _convert_dataclass(tp: type, data: Any) -> Any:
    if not isinstance(data, dict):
        raise TypeError(f"expected an object for {tp.__name__}, got {type(data).__name__}")
    hints = _hints(tp)
    kwargs = {
        f.name: _convert(hints[f.name], data[f.name])
        for f in dataclasses.fields(tp)
        if f.init and f.name in data
    }
    return tp(**kwargs)


def _checked(
    kinds: type | tuple[type, ...], what: str, *, numeric: bool = False,
) -> Callable[[Any], Any]:
    """A check that ``data`` is of ``kinds`` (never a bool where ``numeric``),
    handing it back, or a TypeError saying what was expected."""
    def check(data: Any) -> Any:
        if (numeric and isinstance(data, bool)) or not isinstance(data, kinds):
            raise TypeError(f"expected {what}, got {data!r}")
        return data
    return check


#: How each scalar type is read back, by the exact type named in a hint.
_SCALARS: dict[type, Callable[[Any], Any]] = {
    Decimal: lambda data: Decimal(str(data)),
    dt.datetime: dt.datetime.fromisoformat,
    float: lambda data: float(_checked((int, float), "a number", numeric=True)(data)),
    int: _checked(int, "an integer", numeric=True),
    str: _checked(str, "a string"),
    bool: _checked(bool, "true or false"),
}

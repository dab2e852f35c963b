"""The checks of the Engine's public arguments and options: each value as the
Engine keeps it, or a ConfigurationError that says what was expected."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any, TypeVar

from restyle import _settings
from restyle._errors import ConfigurationError, RestyleError
from restyle._input.fetching import Fetcher
from restyle._pipeline.rerank import Reranker
from restyle._plugin.components import Component, Encoder, check_component
from restyle._plugin.registry import PluginRegistry
from restyle._types import Identification, Opinion

#: Longest deadline an analysis may be given, in seconds (a day).
MAX_DEADLINE = 86_400.0
#: Most comps an Engine may be asked to want, fetch or price on.
MAX_COUNT = 1_000

__all__ = [
    "MAX_COUNT", "MAX_DEADLINE", "check_count", "check_identification", "check_images",
    "check_keys", "check_moment", "check_name", "check_names", "check_opinions", "check_parts",
    "check_record_dir", "check_seconds", "check_unique",
    "deprecated", "model_encoder", "renamed", "resolve_component",
]

C = TypeVar("C", bound=Component)


def model_encoder(model: object, encoder: str | Encoder, precision: object = None) -> Encoder:
    """The openclip encoder for ``model`` in ``precision`` (``fp32``, ``fp16``,
    ``bf16``, ``int8``; None: the best for the device); ``model`` or
    ``precision`` with another encoder is a mistake."""
    if precision is not None and not isinstance(precision, str):
        raise ConfigurationError(f"precision must be a name such as 'int8', got {precision!r}")
    if not isinstance(model, str) or not model.strip():
        raise ConfigurationError(f"model must be a model name such as "
                                 f"'ViT-B-32/laion2b_s34b_b79k', got {model!r}")
    if encoder != _settings.DEFAULT_ENCODER:
        raise ConfigurationError(
            f"{'model=' if precision is None else 'precision='} chooses the "
            f"{_settings.DEFAULT_ENCODER} encoder's model, but the encoder is "
            f"{getattr(encoder, 'name', encoder)!r}; configure that encoder itself instead"
        )
    from restyle.encoders.openclip import OpenClipEncoder

    try:
        chosen = OpenClipEncoder(model, precision=precision)
        chosen.spec  # noqa: B018 - parse now, so a malformed name fails here, not mid-analysis
    except RestyleError as exc:
        raise ConfigurationError(str(exc)) from None
    return chosen


def resolve_component(registry: PluginRegistry, kind: str, spec: str | C, base: type[C]) -> C:
    """The component ``spec`` names among the registered ones, or ``spec`` itself
    when it is an instance of ``base``."""
    if isinstance(spec, base):
        return spec
    if isinstance(spec, Component) or not isinstance(spec, str):
        raise ConfigurationError(
            f"{spec!r} is not {'an' if kind[0] in 'aeiou' else 'a'} {kind}: pass a name or "
            f"a restyle.{base.__name__} instance"
        )
    registration = registry.get(kind, spec)
    if registration is None:
        raise registry.missing(kind, spec)
    component = registration.component
    assert isinstance(component, base)
    return component


def check_opinions(value: object) -> list[Opinion]:
    """``opinions`` of Engine.synthesize: a list (or tuple) of Opinions."""
    opinions = list(value) if isinstance(value, (list, tuple)) else value
    if not isinstance(opinions, list) or not all(isinstance(o, Opinion) for o in opinions):
        raise ConfigurationError("opinions must be a list of restyle.Opinion")
    return opinions


def check_identification(value: object) -> None:
    """``identification`` of Engine.find_comps: the photo's Identification."""
    if not isinstance(value, Identification):
        raise ConfigurationError(
            "identification must be the restyle.Identification of the photo (from "
            f"Engine.identify), got {type(value).__name__}")


def check_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a number of seconds, got {value!r}")
    if not (math.isfinite(value) and 0 < value <= MAX_DEADLINE):
        raise ConfigurationError(f"{name} must be a positive number of seconds, at most "
                                 f"{MAX_DEADLINE:,.0f}, got {value!r}")
    return float(value)


def check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
        raise ConfigurationError(
            f"{name} must be a whole number from 1 to {MAX_COUNT:,}, got {value!r}")
    return int(value)


def check_keys(value: object) -> frozenset[str]:
    """``exclude``: listing keys, as a set (None: none)."""
    if value is None:
        return frozenset()
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigurationError(
            "exclude must be a collection of listing keys such as ['catalog:nw-1'], "
            f"got {type(value).__name__}")
    keys = list(value)
    for key in keys:
        if not isinstance(key, str):
            raise ConfigurationError(
                f"exclude must hold listing keys (strings), found {type(key).__name__}")
    return frozenset(keys)


def check_moment(name: str, value: object) -> datetime | None:
    """A moment such as ``as_of``: a datetime (a naive one is taken as UTC) or None."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise ConfigurationError(f"{name} must be a datetime or None, got {type(value).__name__}")
    return value if value.tzinfo is not None else value.replace(tzinfo=timezone.utc)


def check_record_dir(value: object) -> str | os.PathLike[str] | None:
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise ConfigurationError(f"record must be a directory path, got {type(value).__name__}")
    return value


def check_images(value: object) -> Iterable[Any]:
    """``images`` of analyze_many / analyze_iter: an iterable of photos, not one photo."""
    if isinstance(value, (str, bytes, bytearray, memoryview, os.PathLike)) or not isinstance(
            value, Iterable) or hasattr(value, "read"):
        raise ConfigurationError(
            f"images must be a list (or any iterable) of photos, got {type(value).__name__}; "
            "for one photo use analyze()")
    return value


def renamed(name: str, value: Any, default: Any, old_name: str,
             old_value: Any) -> tuple[Any, str]:
    """``value`` and ``name``, or the value given under the option's deprecated
    ``old_name`` and that name (for messages)."""
    if old_value is None:
        return value, name
    if value != default:
        raise ConfigurationError(f"give {name} only ({old_name} is its deprecated name)")
    deprecated(old_name, name, stacklevel=4)
    return old_value, old_name


def deprecated(old: str, new: str, *, stacklevel: int = 3) -> None:
    warnings.warn(f"{old} is deprecated; use {new}", DeprecationWarning, stacklevel=stacklevel)


def check_parts(*, plugins: object, fetcher: object, reranker: object) -> None:
    if isinstance(plugins, (str, bytes)) or not isinstance(plugins, Sequence):
        raise ConfigurationError("plugins must be a list of plugin modules or objects")
    if fetcher is not None and not isinstance(fetcher, Fetcher):
        raise ConfigurationError(f"fetcher must be a restyle.Fetcher, got {fetcher!r}")
    if reranker is not None and not isinstance(reranker, Reranker):
        raise ConfigurationError(f"reranker must be a restyle.Reranker, got {reranker!r}")
    if reranker is not None and fetcher is not None and reranker.fetcher is not fetcher:
        raise ConfigurationError(
            "pass the fetcher to the Reranker (Reranker(fetcher=...)), not beside it"
        )


def check_names(option: str, value: object) -> list[Any] | None:
    """A list of component names or instances; a bare string is a mistake worth naming."""
    if value is None:
        return None
    if isinstance(value, str):
        suggestion = [part.strip() for part in value.split(",") if part.strip()]
        raise ConfigurationError(
            f"{option} must be a list of names or instances, not the string {value!r}; "
            f"did you mean {option}={suggestion!r}?"
        )
    if isinstance(value, Component) or not isinstance(value, Iterable) or isinstance(
        value, (bytes, Mapping)
    ):
        raise ConfigurationError(
            f"{option} must be a list of names or instances, got {type(value).__name__}"
        )
    return list(value)


def check_name(component: Component) -> None:
    try:
        check_component(component, Component)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(str(exc)) from None


def check_unique(kind: str, components: Sequence[Component]) -> None:
    names = [c.name for c in components]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigurationError(f"{kind} {', '.join(duplicates)} selected more than once")


"""What the commands share: the Engine the options describe, the pricing rules
(options, else environment), the Ray executor, the catalog directory, and the
usage mistakes argparse cannot see."""

from __future__ import annotations

import argparse
from pathlib import Path

from restyle import _settings
from restyle._engine import Engine
from restyle._errors import ConfigurationError
from restyle._ray.executor import RayExecutor

__all__ = ["PRICING_VARIABLES", "UsageError", "catalog_dir", "make_engine", "pricing_rules",
           "ray_executor", "split_names"]

#: The pricing rules' options (as argparse names them), their environment
#: variables and how each value is read.
PRICING_VARIABLES: dict[str, tuple[str, type[int] | type[float]]] = {
    "minimum_comps": ("RESTYLE_MINIMUM_COMPS", int),
    "half_life_days": ("RESTYLE_HALF_LIFE_DAYS", float),
}


class UsageError(Exception):
    """A mistake in the command line that argparse cannot see; exit status 2."""


def make_engine(args: argparse.Namespace, **kwargs: object) -> Engine:
    return Engine(
        encoder=getattr(args, "encoder", None) or None,
        model=getattr(args, "model", None) or None,
        catalog=getattr(args, "catalog", None),
        load_entrypoints=not getattr(args, "no_plugins", False),
        **kwargs,  # type: ignore[arg-type]
    )


def pricing_rules(args: argparse.Namespace, *, environment: bool = True) -> dict[str, object]:
    """The pricing rules the options give (``--minimum-comps``, ``--half-life-days``),
    else, with ``environment``, their variables; the Engine checks the values."""
    rules: dict[str, object] = {}
    for name, (variable, kind) in PRICING_VARIABLES.items():
        value = getattr(args, name, None)
        raw = _settings.env_str(variable) if value is None and environment else None
        if raw is not None:
            try:
                value = kind(raw)
            except ValueError:
                raise ConfigurationError(
                    f"{variable} must be a {'whole number' if kind is int else 'number'}, "
                    f"got {raw!r}") from None
        if value is not None:
            rules[name] = value
    return rules


def ray_executor(args: argparse.Namespace) -> RayExecutor | None:
    if args.ray is None:
        return None
    return RayExecutor(address=args.ray, actors=getattr(args, "ray_actors", None),
                       batch_size=getattr(args, "ray_batch_size", None) or 64)


def split_names(text: str | None) -> list[str] | None:
    return None if text is None else [p.strip() for p in text.split(",") if p.strip()]


def catalog_dir(args: argparse.Namespace) -> Path:
    return Path(args.catalog).expanduser() if args.catalog else _settings.catalog_dir()

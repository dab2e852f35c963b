"""What the commands share: the Engine the options describe, the Ray executor,
the catalog directory, and the usage mistakes argparse cannot see."""

from __future__ import annotations

import argparse
from pathlib import Path

from restyle import _settings
from restyle._engine import Engine
from restyle._ray.executor import RayExecutor

__all__ = ["UsageError", "catalog_dir", "make_engine", "ray_executor", "split_names"]


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


def ray_executor(args: argparse.Namespace) -> RayExecutor | None:
    if args.ray is None:
        return None
    return RayExecutor(address=args.ray, actors=getattr(args, "ray_actors", None),
                       batch_size=getattr(args, "ray_batch_size", None) or 64)


def split_names(text: str | None) -> list[str] | None:
    return None if text is None else [p.strip() for p in text.split(",") if p.strip()]


def catalog_dir(args: argparse.Namespace) -> Path:
    return Path(args.catalog).expanduser() if args.catalog else _settings.catalog_dir()

"""``restyle analyze``: the photos the arguments name, their analyses as
summaries or JSON, each photo's failure on its own line."""

from __future__ import annotations

import argparse
import glob
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TextIO

from restyle import _settings
from restyle._engine import Engine
from restyle._errors import CatalogError, RestyleError
from restyle._input.imaging import Photo, load_photo
from restyle._input.item import ITEM_MAX_PHOTOS, Item, is_photo_file, photo_files
from restyle._input.limits import FORMAT_NAMES
from restyle._progress import logging_through_bars, progress_bar, status_line
from restyle._store.catalog import Catalog
from restyle._types import Analysis, PhotoRole
from restyle.cli.background import Background
from restyle.cli.common import (
    UsageError,
    catalog_dir,
    make_engine,
    pricing_rules,
    ray_executor,
    split_names,
)
from restyle.cli.outputs import RunOutputs

__all__ = ["analyze_command"]


@dataclass(frozen=True, slots=True)
class _PhotoInput:
    """One photo to analyse: ``name`` is how the output refers to it (the path as
    given, or ``-``). An argument that named no photo at all has no ``source``
    and says why in ``problem``."""

    name: str
    source: Path | IO[bytes] | Item | None
    problem: str | None = None


def analyze_command(args: argparse.Namespace) -> int:
    """Analyze every photo named with one Engine: one model load, photos in batches.

    A single photo file keeps the one-photo output (the Analysis as JSON, the
    summary alone) and fails as a whole; otherwise each photo gets its own
    table line, JSON line or summary, a photo that fails is one line on
    stderr while the rest go on, and the run ends with its tally."""
    if args.item:
        inputs, single = [_item_input(args.photo)], True
    elif args.items:
        inputs, single = _folder_items(args.photo), False
    else:
        inputs, single = _photo_inputs(args)
    if args.record and not single:
        raise UsageError("--record records the analysis of a single photo file or --item")
    first = inputs[0].source
    photo: Path | IO[bytes] | Item | Photo | None = None
    if single and first is not None:  # the basic mistake first
        photo = first if isinstance(first, Item) else load_photo(first)
    if all(item.source is None for item in inputs):  # nothing to analyse: no model load
        return _analyze_batch(args, None, inputs)
    experts, marketplaces = _without_missing_catalog(
        args, split_names(args.experts), split_names(args.marketplaces))
    options: dict[str, object] = {} if args.deadline is None else {"deadline": args.deadline}
    engine = make_engine(args, experts=experts, synthesizer=args.synthesizer,
                         marketplaces=marketplaces, **pricing_rules(args), **options)
    # The model and the prompt vectors before the first photo, outside its deadline:
    # one clear error if the model cannot load, and a first answer as full as the next.
    with status_line("Loading the model", enabled=None):
        engine.warm_up()
        if "catalog" in [c.name for c in (*engine.experts, *engine.marketplaces)]:
            engine.catalog  # noqa: B018 - open it first: one clear error if it is damaged
    if photo is not None:
        analysis = engine.analyze(photo, record=args.record)
        outputs = RunOutputs(args, single=True)
        outputs.add(inputs[0].name, analysis)
        outputs.finish(total=1, done=1)
        if args.record:
            (sys.stderr if args.json else sys.stdout).write(f"recorded in {args.record}\n")
        return 0
    return _analyze_batch(args, engine, inputs)


def _analyze_batch(
    args: argparse.Namespace, engine: Engine | None, inputs: list[_PhotoInput]
) -> int:
    sources = [item.source for item in inputs if item.source is not None]
    analyses = iter(()) if engine is None else engine.analyze_iter(
        sources, executor=ray_executor(args))
    outputs = RunOutputs(args, single=False)
    bar = progress_bar(total=len(inputs), desc="Analyzing", unit="photo", enabled=None)
    done, interrupted = 0, False
    with Background(analyses) as results, logging_through_bars():
        try:
            for item in inputs:
                result: Analysis | RestyleError | str = (
                    item.problem or "no photo" if item.source is None else results.next())
                outputs.add(item.name, result if isinstance(result, Analysis) else str(result))
                done += 1
                bar.update(1)
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            bar.close()
            outputs.finish(total=len(inputs), done=done, interrupted=interrupted)
    return 1 if outputs.tally.failed else 0


def _photo_inputs(args: argparse.Namespace) -> tuple[list[_PhotoInput], bool]:
    """The photos the PHOTO arguments name, in order, and whether they are a single
    photo file (or stdin), whose output keeps the one-photo form."""
    inputs: list[_PhotoInput] = []
    single = len(args.photo) == 1
    if args.photo.count("-") > 1:
        raise UsageError("- (a photo on stdin) can be given only once")
    for arg in args.photo:
        if arg == "-":
            inputs.append(_PhotoInput("-", _stdin_photo()))
            continue
        path = Path(os.path.expanduser(arg))
        if path.is_dir():
            single = False
            found = photo_files(path, recursive=args.recursive)
            inputs += [_PhotoInput(os.path.join(arg, str(name)), path / name) for name in found]
            if not found:
                hint = "" if args.recursive or not _has_subfolders(path) else (
                    " (--recursive looks in its subfolders)")
                inputs.append(_PhotoInput(arg, None,
                                          f"no {FORMAT_NAMES} files in this folder{hint}"))
        elif not path.exists() and any(c in arg for c in "*?["):
            single = False
            matches = sorted(glob.glob(os.path.expanduser(arg), recursive=True))
            matched = [m for m in matches if is_photo_file(Path(m))]
            inputs += [_PhotoInput(match, Path(match)) for match in matched]
            if not matched:
                inputs.append(_PhotoInput(arg, None, f"no {FORMAT_NAMES} files match"))
        else:
            inputs.append(_PhotoInput(arg, path))
    return inputs, single


def _item_input(arguments: list[str]) -> _PhotoInput:
    """The PHOTO arguments as one item: ``ROLE=PATH`` gives a photo's role."""
    paths: list[Path] = []
    roles: list[str | None] = []
    for arg in arguments:
        role, _, rest = arg.partition("=")
        known = rest and role.lower() in {r.value for r in PhotoRole}
        path = Path(os.path.expanduser(rest if known else arg))
        if arg == "-" or path.is_dir():
            raise UsageError(f"--item takes photo files, not {arg!r}")
        paths.append(path)
        roles.append(role.lower() if known else None)
    if len(paths) > ITEM_MAX_PHOTOS:
        raise UsageError(f"an item has at most {ITEM_MAX_PHOTOS} photos, got {len(paths)}")
    return _PhotoInput(str(paths[0]), Item(*paths, roles=roles))


def _folder_items(arguments: list[str]) -> list[_PhotoInput]:
    """Each subfolder of each FOLDER as one item; its loose photos as items of one."""
    inputs: list[_PhotoInput] = []
    for arg in arguments:
        folder = Path(os.path.expanduser(arg))
        if not folder.is_dir():
            raise UsageError(f"--items takes folders, not {arg!r}")
        for entry in sorted(folder.iterdir()):
            name = os.path.join(arg, entry.name)
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                photos = photo_files(entry, recursive=False)
                if not photos:
                    inputs.append(_PhotoInput(name, None, f"no {FORMAT_NAMES} files in this "
                                                          "item's folder"))
                elif len(photos) > ITEM_MAX_PHOTOS:
                    inputs.append(_PhotoInput(name, None, f"{len(photos)} photos: an item has "
                                                          f"at most {ITEM_MAX_PHOTOS}"))
                else:
                    inputs.append(_PhotoInput(name, Item(*(entry / p for p in photos))))
            elif is_photo_file(entry):
                inputs.append(_PhotoInput(name, entry))
    if not inputs:
        raise UsageError("--items found no item folders or photos in "
                         + ", ".join(repr(a) for a in arguments))
    return inputs


def _stdin_photo() -> IO[bytes]:
    stream = sys.stdin
    binary = getattr(stream, "buffer", None)
    if binary is None or _is_terminal(stream):
        raise UsageError("- reads a photo from stdin, but stdin is a terminal; pipe one in: "
                          "restyle analyze - < photo.jpg")
    return binary  # type: ignore[no-any-return]


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _has_subfolders(folder: Path) -> bool:
    return any(entry.is_dir() and not entry.name.startswith(".") for entry in folder.iterdir())


def _named_catalog(args: argparse.Namespace) -> bool:
    """Whether the user named the catalog (``--catalog`` or ``$RESTYLE_CATALOG``)."""
    return bool(args.catalog or _settings.env_str("RESTYLE_CATALOG"))


def _without_missing_catalog(
    args: argparse.Namespace, experts: list[str] | None, marketplaces: list[str] | None
) -> tuple[list[str] | None, list[str] | None]:
    """The components to run: a catalog the user named must exist; the default
    one may not exist yet, and is then left out with one warning."""
    chosen_experts = list(experts if experts is not None else _settings.env_list(
        "RESTYLE_EXPERTS", _settings.DEFAULT_EXPERTS))
    chosen_markets = list(marketplaces if marketplaces is not None else _settings.env_list(
        "RESTYLE_MARKETPLACES", _settings.DEFAULT_MARKETPLACES))
    directory = catalog_dir(args)
    if "catalog" not in chosen_experts + chosen_markets or Catalog.exists(directory):
        return experts, marketplaces
    if _named_catalog(args):
        raise CatalogError(
            f"no catalog at {directory}; build one with "
            f"'restyle catalog build LISTINGS.jsonl --catalog {directory}'"
        )
    sys.stderr.write(
        f"restyle: warning: no catalog at {directory} yet, searching without it (build one "
        f"with 'restyle catalog build LISTINGS.jsonl')\n"
    )
    return ([e for e in chosen_experts if e != "catalog"],
            [m for m in chosen_markets if m != "catalog"])

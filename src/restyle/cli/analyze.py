"""``restyle analyze``: the photos the arguments name, their analyses as
summaries or JSON, each photo's failure on its own line."""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import os
import sys
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TextIO

from restyle import _settings
from restyle._engine import Engine
from restyle._errors import CatalogError, RestyleError
from restyle._input.imaging import load_photo
from restyle._progress import progress_bar
from restyle._store.catalog import Catalog
from restyle._types import Analysis
from restyle.cli.common import UsageError, catalog_dir, make_engine, ray_executor, split_names

__all__ = ["PHOTO_SUFFIXES", "SUMMARY_COMPS", "analyze_command"]

#: What a folder or a glob contributes: files with these suffixes, in any case.
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
#: Comps the summary lists unless --top says otherwise.
SUMMARY_COMPS = 10


@dataclass(frozen=True, slots=True)
class _PhotoInput:
    """One photo to analyse: ``name`` is how the output refers to it (the path as
    given, or ``-``). An argument that named no photo at all has no ``source``
    and says why in ``problem``."""

    name: str
    source: Path | IO[bytes] | None
    problem: str | None = None


def analyze_command(args: argparse.Namespace) -> int:
    """Analyze every photo named with one Engine: one model load, photos in batches.

    A single photo file keeps the one-photo output (the Analysis as JSON, the
    summary alone) and fails as a whole; otherwise each photo gets its own
    JSON line or summary, and a photo that fails is one line on stderr while
    the rest go on."""
    inputs, single = _photo_inputs(args)
    if args.record and not single:
        raise UsageError("--record records the analysis of a single photo file")
    first = inputs[0].source
    photo = load_photo(first) if single and first is not None else None  # the basic mistake first
    if all(item.source is None for item in inputs):  # nothing to analyse: no model load
        return _analyze_batch(args, None, inputs)
    experts, marketplaces = _without_missing_catalog(
        args, split_names(args.experts), split_names(args.marketplaces))
    options: dict[str, object] = {} if args.deadline is None else {"deadline": args.deadline}
    engine = make_engine(args, experts=experts, synthesizer=args.synthesizer,
                     marketplaces=marketplaces, **options)
    # The model and the prompt vectors before the first photo, outside its deadline:
    # one clear error if the model cannot load, and a first answer as full as the next.
    engine.warm_up()
    if "catalog" in [c.name for c in (*engine.experts, *engine.marketplaces)]:
        engine.catalog  # noqa: B018 - open it first: one clear error if it is damaged
    if photo is not None:
        analysis = engine.analyze(photo, record=args.record)
        if args.json:
            sys.stdout.write(_with_top(analysis, args.top).to_json(indent=2) + "\n")
        else:
            sys.stdout.write(_summary(analysis, _summary_top(args)))
        if args.record:
            (sys.stderr if args.json else sys.stdout).write(f"recorded in {args.record}\n")
        return 0
    return _analyze_batch(args, engine, inputs)


def _analyze_batch(
    args: argparse.Namespace, engine: Engine | None, inputs: list[_PhotoInput]
) -> int:
    failures = summaries = 0
    sources = [item.source for item in inputs if item.source is not None]
    analyses = iter(()) if engine is None else engine.analyze_iter(
        sources, executor=ray_executor(args))
    bar = progress_bar(total=len(inputs), desc="Analyzing", unit="photo", enabled=None)
    try:
        for item in inputs:
            result: Analysis | RestyleError | str = (
                item.problem or "no photo" if item.source is None else next(analyses))
            if isinstance(result, Analysis):
                if args.json:
                    line = {"photo": item.name, "analysis": _with_top(result, args.top).to_dict()}
                    _write(sys.stdout, json.dumps(line) + "\n")
                else:
                    gap = "\n" if summaries else ""
                    _write(sys.stdout, f"{gap}==> {item.name} <==\n"
                           + _summary(result, _summary_top(args)))
                    summaries += 1
            else:
                failures += 1
                if args.json:
                    _write(sys.stdout, json.dumps({"photo": item.name, "error": str(result)})
                           + "\n")
                _write(sys.stderr, f"restyle: error: {item.name}: {result}\n")
            bar.update(1)
    finally:
        bar.close()
        if isinstance(analyses, Generator):
            analyses.close()  # on Ray, while the cluster is up
    return 1 if failures else 0


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
            found = _folder_photos(path, recursive=args.recursive)
            inputs += [_PhotoInput(os.path.join(arg, str(name)), path / name) for name in found]
            if not found:
                hint = "" if args.recursive or not _has_subfolders(path) else (
                    " (--recursive looks in its subfolders)")
                inputs.append(_PhotoInput(arg, None,
                                          f"no JPEG, PNG or WebP files in this folder{hint}"))
        elif not path.exists() and any(c in arg for c in "*?["):
            single = False
            matches = sorted(glob.glob(os.path.expanduser(arg), recursive=True))
            matched = [m for m in matches if _is_photo_file(Path(m))]
            inputs += [_PhotoInput(match, Path(match)) for match in matched]
            if not matched:
                inputs.append(_PhotoInput(arg, None, "no JPEG, PNG or WebP files match"))
        else:
            inputs.append(_PhotoInput(arg, path))
    return inputs, single


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


def _is_photo_file(path: Path) -> bool:
    return path.suffix.lower() in PHOTO_SUFFIXES and path.is_file()


def _has_subfolders(folder: Path) -> bool:
    return any(entry.is_dir() and not entry.name.startswith(".") for entry in folder.iterdir())


def _folder_photos(folder: Path, *, recursive: bool) -> list[Path]:
    """The photos in ``folder`` (and its subfolders), relative to it, sorted by name.

    Hidden files and folders are left out: they are a system's or a tool's
    (``._photo.jpg`` from macOS, ``.thumbnails/``), not the user's photos.
    """
    found: list[Path] = []
    for root, folders, files in os.walk(folder):
        folders[:] = [f for f in folders if not f.startswith(".")] if recursive else []
        base = Path(root).relative_to(folder)
        found += [base / name for name in files
                  if not name.startswith(".") and _is_photo_file(Path(root, name))]
    return sorted(found)


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


def _summary(analysis: Analysis, top: int) -> str:
    ident = analysis.identification
    lines = [ident.summary,
             f"  brand:      {ident.brand or '-'}",
             f"  product:    {ident.product_name or '-'}",
             f"  category:   {ident.category or '-'}"]
    if ident.attributes:
        lines.append("  attributes: " + ", ".join(f"{a.name} {a.value}" for a in ident.attributes))
    lines.append(f"  confidence: {ident.confidence:.2f}")
    if ident.fallback_reason:
        lines.append(f"  synthesizer: {ident.synthesizer or '-'} (fallback: "
                     f"{ident.fallback_reason})")
    lines += [f"  to be surer, add {suggestion}" for suggestion in ident.suggested_photos]
    lines += [f"  expert {expert} failed: {reason}"
              for expert, reason in analysis.failed_experts.items()]
    lines += [f"  warning: {warning}" for warning in analysis.warnings]
    price = analysis.price
    if price.ok:
        lines.append(f"\nPrice: {price.estimate} {price.currency} (range {price.low}-"
                     f"{price.high}, from {price.comps_used} comps)")
    else:
        lines.append(f"\nPrice: not enough data ({price.comps_used} usable comps, "
                     f"{price.minimum_comps} needed)")
    if price.basis is not None:
        lines.append(f"  basis: {price.basis.value} ({price.basis_detail})")
    if analysis.comps:
        lines.append(f"\nComps ({len(analysis.comps)} found, most alike first):")
        for i, comp in enumerate(analysis.comps[:top], start=1):
            listing = comp.listing
            price_text = str(listing.price) if listing.price else "no price"
            sim = f"{comp.similarity:.3f}" if comp.similarity is not None else "  n/a"
            flags = f"  ({', '.join(comp.flags)})" if comp.flags else ""
            lines.append(f"  {i:>2}. {sim}  {price_text:>14}  {listing.title}  "
                         f"[{listing.marketplace}]{flags}")
    else:
        lines.append("\nNo comps found.")
    return "\n".join(lines) + "\n"


def _with_top(analysis: Analysis, top: int | None) -> Analysis:
    return analysis if top is None else dataclasses.replace(analysis, comps=analysis.comps[:top])


def _summary_top(args: argparse.Namespace) -> int:
    return SUMMARY_COMPS if args.top is None else int(args.top)


def _write(stream: TextIO, text: str) -> None:
    """Write ``text`` and flush, around the progress bar if one is drawn: each
    photo's result shows (or reaches the pipe) as soon as it is known."""
    from tqdm.std import tqdm

    with tqdm.external_write_mode(file=stream):
        stream.write(text)
        stream.flush()

"""The ``restyle`` command line. The only part of restyle that prints or exits."""

from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import logging
import math
import os
import re
import sys
import traceback
import warnings
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TextIO

from restyle import _settings
from restyle._engine import Engine
from restyle._errors import CatalogError, ConfigurationError, RestyleError
from restyle._evaluation.backtest import backtest
from restyle._evaluation.recording import load_recording
from restyle._ingestion.listings import listings_format
from restyle._input.imaging import load_photo
from restyle._pipeline import budget as _budget
from restyle._plugin.registry import PluginLoadWarning, PluginRegistry
from restyle._progress import progress_bar
from restyle._ray.executor import RayExecutor
from restyle._secrets import HTTP_LOGGERS, RedactingFilter, protect_loggers, redact
from restyle._store.catalog import Catalog
from restyle._types import Analysis
from restyle._version import __version__

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="restyle",
        description="Identify a secondhand item from a photo, find comps and estimate a price.",
    )
    parser.add_argument("--version", action="version", version=f"restyle {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-vv: debug; -vvv: the HTTP clients' debug lines too), "
                        "and show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--catalog", metavar="DIR",
                        help="local catalog directory (default: $RESTYLE_CATALOG)")
    common.add_argument("--model", metavar="SPEC",
                        help="open_clip model, e.g. ViT-B-32/laion2b_s34b_b79k or local-dir:PATH "
                        "(default: $RESTYLE_MODEL)")
    common.add_argument("--encoder", metavar="NAME",
                        help="a registered encoder, such as one a plugin provides (default: "
                        "$RESTYLE_ENCODER, else openclip)")
    common.add_argument("--no-plugins", action="store_true",
                        help="load no third-party plugins")

    analyze = sub.add_parser(
        "analyze", parents=[common],
        help="analyze photos: files, folders, globs, or - for one on stdin",
        description="Identify the item in each photo, find comps and estimate a price. The "
        "photos run through one model load, in batches.",
        epilog="Exit status: 0 when every photo was analysed, 1 when any failed (each failure "
        "is one line on stderr; the other photos are still analysed), 2 for a usage error.")
    analyze.add_argument(
        "photo", nargs="+", metavar="PHOTO",
        help="a JPEG, PNG or WebP file; a folder (its photos, sorted by name); a quoted glob "
        "such as 'shots/*.jpg' (** matches any depth); or - for one photo on stdin")
    analyze.add_argument("--recursive", action="store_true",
                         help="also take the photos in a folder's subfolders")
    analyze.add_argument(
        "--json", action="store_true",
        help="print JSON: the Analysis of a single photo file; with several photos, a folder or "
        'a glob, one line per photo (JSONL): {"photo": PATH, "analysis": {...}} or '
        '{"photo": PATH, "error": MESSAGE}')
    analyze.add_argument("--experts", metavar="A,B", help="comma-separated expert names")
    analyze.add_argument("--synthesizer", metavar="NAME",
                         help="the synthesizer that merges the experts' opinions (default: "
                         "$RESTYLE_SYNTHESIZER, else consensus)")
    analyze.add_argument("--marketplaces", metavar="A,B", help="comma-separated marketplaces")
    analyze.add_argument("--top", type=_count_argument, metavar="N",
                         help="comps to list, most alike first: in the summary (default 10) and "
                         "in the JSON (default all)")
    analyze.add_argument("--deadline", type=_seconds_argument, metavar="SECONDS",
                         help="wall-clock time each photo's analysis may take (default 60)")
    analyze.add_argument("--record", metavar="DIR",
                         help="record what each stage returned into DIR, for 'restyle replay' "
                         "(a single photo file)")
    _ray_option(analyze)

    catalog = sub.add_parser("catalog", help="manage the local catalog")
    catalog_sub = catalog.add_subparsers(dest="catalog_command", required=True, metavar="ACTION")
    build = catalog_sub.add_parser("build", parents=[common],
                                   help="add listings from a JSONL, CSV or Parquet file")
    build.add_argument("file", help="listings file (.jsonl, .csv or .parquet)")
    # The name older docs and scripts use for --catalog.
    build.add_argument("--dir", dest="catalog", metavar="DIR", help=argparse.SUPPRESS)
    build.add_argument("--images-root", metavar="DIR",
                       help="folder local images must be in (default: the listings file's)")
    build.add_argument("--json", action="store_true", help="print the build report as JSON")
    _ray_option(build)
    build.add_argument("--ray-actors", type=int, metavar="N",
                       help="encoder actors on Ray (default: one per GPU, or per two CPUs)")
    build.add_argument("--ray-batch-size", type=int, metavar="N", default=64,
                       help="images per encoder call on Ray (default 64)")

    only_catalog = argparse.ArgumentParser(add_help=False)
    only_catalog.add_argument("--catalog", metavar="DIR",
                              help="local catalog directory (default: $RESTYLE_CATALOG)")
    only_catalog.add_argument("--json", action="store_true", help="print the result as JSON")
    catalog_sub.add_parser("stats", parents=[only_catalog],
                           help="listings, vectors, model, size on disk, listings per category")
    catalog_sub.add_parser("check", parents=[only_catalog],
                           help="check the database, the stored vectors and the index")
    repair = catalog_sub.add_parser(
        "repair", parents=[only_catalog],
        help="rebuild the vector index from the database, re-embedding what is missing")
    repair.add_argument("--model", metavar="SPEC",
                        help="the catalog's model, to re-embed listings (default: $RESTYLE_MODEL)")
    repair.add_argument("--encoder", metavar="NAME",
                        help="the catalog's encoder, if not openclip (default: $RESTYLE_ENCODER)")

    plugins = sub.add_parser("plugins", help="list registered components and their plugins")
    plugins.add_argument("--no-plugins", action="store_true", help="load no third-party plugins")
    plugins.add_argument("--json", action="store_true",
                         help="print the plugins, their hooks, components and errors as JSON")
    plugins.add_argument("--all", action="store_true",
                         help="include the built-in plugins in the list of plugins")

    backtest = sub.add_parser(
        "backtest", parents=[common],
        help="measure the estimates against prices items really sold for")
    backtest.add_argument(
        "dataset", nargs="?", metavar="DATASET",
        help="listings that sold (.jsonl, .csv or .parquet; price = what each sold for, sold "
        "true); default: the catalog, one listing left out at a time")
    backtest.add_argument("--json", action="store_true", help="print the report as JSON")
    backtest.add_argument("--html", metavar="FILE", help="also write an HTML report with charts")
    backtest.add_argument("--limit", type=int, metavar="N", help="backtest the first N items")
    backtest.add_argument("--images-root", metavar="DIR",
                          help="folder the data set's images must be in (default: its own)")
    backtest.add_argument("--experts", metavar="A,B", help="comma-separated expert names")
    backtest.add_argument("--synthesizer", metavar="NAME",
                          help="the synthesizer that merges the experts' opinions (default: "
                          "$RESTYLE_SYNTHESIZER, else consensus)")
    backtest.add_argument("--marketplaces", metavar="A,B", help="comma-separated marketplaces")
    _pricing_options(backtest)

    replay = sub.add_parser(
        "replay", help="re-run a recorded analysis offline with other rules, and show changes")
    replay.add_argument("recording", metavar="DIR", help="a directory written by --record")
    replay.add_argument("--synthesizer", metavar="NAME",
                        help="merge the recorded opinions with this synthesizer")
    _pricing_options(replay)
    replay.add_argument("--no-cutoff", action="store_true",
                        help="flag no comp below the similarity cut-off")
    replay.add_argument("--json", action="store_true",
                        help="print the changes, the differences and both analyses as JSON")
    replay.add_argument("--no-plugins", action="store_true", help="load no third-party plugins")
    return parser


def _pricing_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minimum-comps", type=int, metavar="N",
                        help="fewest comps a price may rest on (default 3)")
    parser.add_argument("--half-life-days", "--half-life", type=float, metavar="DAYS",
                        dest="half_life_days",
                        help="days after which a sale weighs half (default 30)")


def _ray_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ray", nargs="?", const="auto", metavar="ADDRESS",
        help="run on Ray: a running cluster (auto: $RAY_ADDRESS or one started here with "
        "'ray start', else a local Ray), 'local', or a cluster address; see docs/scale.md")


def _ray_executor(args: argparse.Namespace) -> RayExecutor | None:
    if args.ray is None:
        return None
    return RayExecutor(address=args.ray, actors=getattr(args, "ray_actors", None),
                       batch_size=getattr(args, "ray_batch_size", None) or 64)


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [p.strip() for p in text.split(",") if p.strip()]


def _engine(args: argparse.Namespace, **kwargs: object) -> Engine:
    return Engine(
        encoder=getattr(args, "encoder", None) or None,
        model=getattr(args, "model", None) or None,
        catalog=getattr(args, "catalog", None),
        load_entrypoints=not getattr(args, "no_plugins", False),
        **kwargs,  # type: ignore[arg-type]
    )


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


def _run(args: argparse.Namespace) -> int:
    if args.command == "analyze":
        return _analyze(args)
    if args.command == "catalog":
        return _catalog_command(args)
    if args.command == "plugins":
        return _plugins(args)
    if args.command == "backtest":
        return _backtest(args)
    if args.command == "replay":
        return _replay(args)
    raise AssertionError(args)  # pragma: no cover - argparse enforces the commands


# -- analyze -----------------------------------------------------------------------

#: What a folder or a glob contributes: files with these suffixes, in any case.
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
#: Comps the summary lists unless --top says otherwise.
SUMMARY_COMPS = 10


class _UsageError(Exception):
    """A mistake in the command line that argparse cannot see; exit status 2."""


@dataclass(frozen=True, slots=True)
class _PhotoInput:
    """One photo to analyse: ``name`` is how the output refers to it (the path as
    given, or ``-``). An argument that named no photo at all has no ``source``
    and says why in ``problem``."""

    name: str
    source: Path | IO[bytes] | None
    problem: str | None = None


def _count_argument(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _seconds_argument(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _photo_inputs(args: argparse.Namespace) -> tuple[list[_PhotoInput], bool]:
    """The photos the PHOTO arguments name, in order, and whether they are a single
    photo file (or stdin), whose output keeps the one-photo form."""
    inputs: list[_PhotoInput] = []
    single = len(args.photo) == 1
    if args.photo.count("-") > 1:
        raise _UsageError("- (a photo on stdin) can be given only once")
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
        raise _UsageError("- reads a photo from stdin, but stdin is a terminal; pipe one in: "
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


def _analyze(args: argparse.Namespace) -> int:
    """Analyze every photo named with one Engine: one model load, photos in batches.

    A single photo file keeps the one-photo output (the Analysis as JSON, the
    summary alone) and fails as a whole; otherwise each photo gets its own
    JSON line or summary, and a photo that fails is one line on stderr while
    the rest go on."""
    inputs, single = _photo_inputs(args)
    if args.record and not single:
        raise _UsageError("--record records the analysis of a single photo file")
    first = inputs[0].source
    photo = load_photo(first) if single and first is not None else None  # the basic mistake first
    if all(item.source is None for item in inputs):  # nothing to analyse: no model load
        return _analyze_batch(args, None, inputs)
    experts, marketplaces = _without_missing_catalog(
        args, _split(args.experts), _split(args.marketplaces))
    options: dict[str, object] = {} if args.deadline is None else {"deadline": args.deadline}
    engine = _engine(args, experts=experts, synthesizer=args.synthesizer,
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
        sources, executor=_ray_executor(args))
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


def _pricing_rules(args: argparse.Namespace) -> dict[str, object]:
    rules: dict[str, object] = {}
    if args.minimum_comps is not None:
        rules["minimum_comps"] = args.minimum_comps
    if args.half_life_days is not None:
        rules["half_life_days"] = args.half_life_days
    return rules


def _backtest(args: argparse.Namespace) -> int:
    engine = _engine(args, experts=_split(args.experts), synthesizer=args.synthesizer,
                     marketplaces=_split(args.marketplaces), **_pricing_rules(args))
    # The model and the prompt vectors before the first photo, outside its deadline:
    # one clear error if the model cannot load, and a first answer as full as the next.
    engine.warm_up()
    if args.limit is not None and args.limit < 1:
        raise ConfigurationError("--limit must be at least 1")
    report = backtest(engine, args.dataset, limit=args.limit, progress=None,
                      images_root=args.images_root)
    if args.html:
        Path(args.html).write_text(report.html(), encoding="utf-8")
    if args.json:
        sys.stdout.write(json.dumps(report.to_dict(), indent=2) + "\n")
    else:
        sys.stdout.write(report.table())
    if args.html:
        sys.stderr.write(f"HTML report written to {args.html}\n")
    return 0


def _replay(args: argparse.Namespace) -> int:
    recording = load_recording(args.recording)
    replay = recording.replay(
        synthesizer=args.synthesizer, minimum_comps=args.minimum_comps,
        half_life_days=args.half_life_days, cutoff=False if args.no_cutoff else None,
        load_entrypoints=not args.no_plugins,
    )
    if args.json:
        sys.stdout.write(json.dumps(replay.to_dict(), indent=2) + "\n")
        return 0
    out = sys.stdout.write
    changes = ", ".join(f"{k}={v}" for k, v in replay.changes.items()) or "none"
    out(f"replay of {args.recording} (changes: {changes})\n")
    if replay.same:
        out("no differences: the replay reproduces the recording\n")
        return 0
    width = max(len(d.what) for d in replay.differences)
    out(f"  {'':<{width}}  recorded -> replayed\n")
    for d in replay.differences:
        out(f"  {d.what:<{width}}  {d.before or '-'} -> {d.after or '-'}\n")
    return 0


def _plugins(args: argparse.Namespace) -> int:
    """List components, then plugins with their hooks, components and problems.

    Nothing a plugin does wrong stops the listing: every problem is shown."""
    with warnings.catch_warnings():
        # Each problem is printed below, once, where it belongs.
        warnings.simplefilter("ignore", PluginLoadWarning)
        registry = PluginRegistry(load_entrypoints=not args.no_plugins, raise_errors=False)
    plugins = [p for p in registry.plugins if args.all or not p.builtin]
    unowned = [e for e in registry.errors if e.plugin is None]
    for error in unowned:
        sys.stderr.write(f"restyle: warning: {error}\n")
    if args.json:
        sys.stdout.write(json.dumps([p.to_dict() for p in plugins], indent=2) + "\n")
        return 0
    out = sys.stdout.write
    rows = list(registry)
    width = max(len(r.name) for r in rows)
    usable = {(r.kind, r.name): r for r in rows if registry.get(r.kind, r.name) is r}
    for r in rows:
        note = "" if (r.kind, r.name) in usable else "  (ambiguous: registered twice)"
        out(f"{r.kind:<12} {r.name:<{width}}  {r.distribution} ({r.plugin}){note}\n")
    if plugins:
        out("\n")
    for plugin in plugins:
        version = f" {plugin.version}" if plugin.version else ""
        origin = (f"entry point {plugin.entry_point} = {plugin.target}"
                  if plugin.entry_point is not None else f"module {plugin.module}")
        out(f"{plugin.distribution}{version}  {origin}\n")
        out(f"  hooks:      {', '.join(plugin.hooks) or '-'}\n")
        provides = ", ".join(f"{r.kind} {r.name}" for r in plugin.components)
        out(f"  components: {provides or '-'}\n")
        for error in plugin.errors:
            out(f"  error:      {error}\n")
    if not plugins and not args.all:
        out("\nno third-party plugins loaded\n")
    return 0
@contextmanager
def _logging_to_stderr(verbosity: int) -> Iterator[None]:
    """Log to stderr for the length of the command, every line redacted.

    The filter sits on the handler, so it sees every record written, whichever
    logger made it. The HTTP clients' debug lines (request headers, bodies)
    are shown only from -vvv on.
    """
    level = {0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    quieted = [] if verbosity >= 3 else [logging.getLogger(name) for name in HTTP_LOGGERS]
    saved = root.level, [(logger, logger.level) for logger in quieted]
    root.addHandler(handler)
    root.setLevel(level)
    for logger in quieted:
        logger.setLevel(max(level, logging.INFO))
    protect_loggers()  # for handlers the CLI did not add
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(saved[0])
        for logger, previous in saved[1]:
            logger.setLevel(previous)


def _catalog_dir(args: argparse.Namespace) -> Path:
    return Path(args.catalog).expanduser() if args.catalog else _settings.catalog_dir()


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
    directory = _catalog_dir(args)
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


def _catalog_command(args: argparse.Namespace) -> int:
    directory = _catalog_dir(args)
    out = sys.stdout.write
    if args.catalog_command == "build":
        listings = Path(args.file)
        listings_format(listings)
        if not listings.is_file():  # before the model loads: one clear error, at once
            raise CatalogError(f"listings file not found: {listings}")
        args.catalog = str(directory)
        engine = _engine(args, experts=[], marketplaces=[])
        report = engine.build_catalog(listings, progress=None,
                                      images_root=args.images_root,
                                      executor=_ray_executor(args))
        if args.json:
            out(json.dumps({"catalog": str(directory), **report.to_dict()}, indent=2) + "\n")
            return 0
        out(f"catalog {directory}: {report.added} added, {report.updated} updated, "
            f"{report.skipped} unchanged, {report.rejected_count} rejected\n")
        for rejection in report.rejected[:20]:
            sys.stderr.write(f"  row {rejection.row} rejected: {rejection.reason}\n")
        if report.rejected_count > 20:
            sys.stderr.write(f"  ... {report.rejected_count - 20} more\n")
        if report.rejected_file:
            sys.stderr.write(f"  rejected rows written to {report.rejected_file}\n")
        return 0
    if args.catalog_command == "stats":
        stats = Catalog.stats(directory)
        if args.json:
            out(json.dumps(stats.to_dict(), indent=2) + "\n")
            return 0
        out(f"catalog {directory}\n"
            f"  listings:     {stats.rows}\n"
            f"  vectors:      {stats.vectors}\n"
            f"  model:        {stats.model_id} (dimension {stats.dim})\n"
            f"  size on disk: {_size(stats.bytes_on_disk)}\n")
        if stats.categories:
            out("  categories:\n")
            width = max(len(name or "(none)") for name in stats.categories)
            for name, count in stats.categories.items():
                out(f"    {name or '(none)':<{width}}  {count}\n")
        return 0
    if args.catalog_command == "check":
        check = Catalog.check(directory)
        if args.json:
            out(json.dumps(check.to_dict(), indent=2) + "\n")
        elif check.ok:
            out(f"catalog {directory}: ok ({check.rows} listings, {check.vectors} vectors)\n")
        for note in check.notes if not args.json else ():
            out(f"  note: {note}\n")
        for problem in check.problems if not args.json else ():
            sys.stderr.write(f"restyle: problem: {problem}\n")
        return 0 if check.ok else 1
    if args.catalog_command == "repair":
        if not Catalog.exists(directory):
            raise CatalogError(f"no catalog at {directory}")
        # The model loads only if a listing must be re-embedded.
        encoder = _engine(args, experts=[], marketplaces=[]).encoder
        repaired = Catalog.repair(directory, encoder)
        if args.json:
            out(json.dumps(repaired.to_dict(), indent=2) + "\n")
            return 0
        out(f"catalog {directory}: index rebuilt from {repaired.from_database} stored vectors, "
            f"{repaired.from_old_index} from the old index, {repaired.reembedded} re-embedded; "
            f"{len(repaired.removed)} listings removed, {repaired.dropped_vectors} stray "
            "vectors dropped\n")
        for listing_id, reason in repaired.removed[:20]:
            sys.stderr.write(f"  removed {listing_id}: {reason}\n")
        return 0
    raise AssertionError(args)  # pragma: no cover - argparse enforces the actions


def _size(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"  # pragma: no cover


def _ray_address_like(text: str) -> bool:
    """Whether a word after ``--ray`` is its value rather than a photo or file."""
    return text in ("auto", "local") or "://" in text or bool(
        re.fullmatch(r"[\w.\-]+:\d{1,5}", text))


def _ray_values_attached(argv: Sequence[str]) -> list[str]:
    """``--ray PHOTO`` means ``--ray`` (auto) and a photo, not a cluster named PHOTO."""
    words = list(argv)
    for i, word in enumerate(words[:-1]):
        if word == "--":
            break
        following = words[i + 1]
        if word == "--ray" and not following.startswith("-") and not _ray_address_like(following):
            words[i] = "--ray=auto"
    return words


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``restyle`` command ``argv`` (by default the process's own
    arguments) and return its exit status: 0, 1 for an error (one line on
    stderr, with the traceback from ``-v`` on), 2 for a usage error, 130 when
    interrupted. No exception leaves it but ``SystemExit`` (argparse's
    ``--help``, ``--version`` and usage errors).

    Run as the process's command (``argv`` None: the ``restyle`` console
    script, ``python -m restyle``), it also ends the process with that status
    when a component call abandoned at its deadline is still running: a
    library's native code still running while the interpreter shuts down can
    abort the process (exit 134) after its output is written.
    """
    status = _command(sys.argv[1:] if argv is None else argv)
    if argv is None and _budget.abandoned_calls() > 0:
        _flush()
        os._exit(status)
    return status


def _command(argv: Sequence[str]) -> int:
    verbosity = 0
    try:
        args = _parser().parse_args(_ray_values_attached(argv))
        verbosity = args.verbose
        with _logging_to_stderr(args.verbose):
            try:
                return _run(args)
            except _UsageError as exc:
                sys.stderr.write(f"restyle {args.command}: error: {exc}\n")
                return 2
    except KeyboardInterrupt:
        _say("restyle: interrupted\n")
        return 130
    except Exception as exc:  # the last line of defence: one line, never a traceback
        _report(exc, verbosity)
        return 1


def _report(exc: Exception, verbosity: int) -> None:
    """``exc`` as one line on stderr, after its traceback from ``-v`` on.

    A RestyleError says what went wrong in words; anything else is a bug,
    named by its type, with a pointer to the traceback. Both are redacted."""
    try:
        said = str(exc)
    except Exception:  # an exception whose own message fails
        said = "(its message cannot be shown)"
    if isinstance(exc, RestyleError):
        message = said
    else:
        text = " ".join(said.split())
        text = text if len(text) <= 500 else text[:497] + "..."
        message = f"unexpected {type(exc).__name__}" + (f": {text}" if text else "")
        if not verbosity:
            message += " (run with -v for the traceback)"
    if verbosity:
        _say(redact("".join(traceback.format_exception(exc))))
    _say(f"restyle: error: {redact(message)}\n")


def _say(text: str) -> None:
    """Write to stderr, whatever state it is in: nothing is left to tell a failure to."""
    with suppress(OSError, ValueError):
        sys.stderr.write(text)
        sys.stderr.flush()


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):
            stream.flush()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""The ``restyle`` command line. The only part of restyle that prints or exits."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from restyle import __version__, _settings
from restyle._catalog import Catalog
from restyle._engine import Engine
from restyle._errors import CatalogError, RestyleError
from restyle._imaging import load_photo
from restyle._ingest import listings_format
from restyle._plugins import PluginLoadWarning, PluginRegistry
from restyle._ray import RayExecutor
from restyle._secrets import HTTP_LOGGERS, RedactingFilter, protect_loggers
from restyle._types import Analysis

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="restyle",
        description="Identify a secondhand item from a photo, find comps and estimate a price.",
    )
    parser.add_argument("--version", action="version", version=f"restyle {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-vv: debug; -vvv: the HTTP clients' debug lines too)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--catalog", metavar="DIR",
                        help="local catalog directory (default: $RESTYLE_CATALOG)")
    common.add_argument("--model", metavar="SPEC",
                        help="open_clip model, e.g. ViT-B-32/laion2b_s34b_b79k or local-dir:PATH "
                        "(default: $RESTYLE_MODEL)")
    common.add_argument("--no-plugins", action="store_true",
                        help="load no third-party plugins")

    analyze = sub.add_parser("analyze", parents=[common], help="analyze one photo")
    analyze.add_argument("photo", help="a JPEG, PNG or WebP file")
    analyze.add_argument("--json", action="store_true", help="print the full Analysis as JSON")
    analyze.add_argument("--experts", metavar="A,B", help="comma-separated expert names")
    analyze.add_argument("--synthesizer", metavar="NAME")
    analyze.add_argument("--marketplaces", metavar="A,B", help="comma-separated marketplaces")
    analyze.add_argument("--top", type=int, default=10, help="comps to show (default 10)")
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

    plugins = sub.add_parser("plugins", help="list registered components and their plugins")
    plugins.add_argument("--no-plugins", action="store_true", help="load no third-party plugins")
    plugins.add_argument("--json", action="store_true",
                         help="print the plugins, their hooks, components and errors as JSON")
    plugins.add_argument("--all", action="store_true",
                         help="include the built-in plugins in the list of plugins")
    return parser


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
    encoder = None
    if getattr(args, "model", None):
        from restyle.encoders.openclip import OpenClipEncoder

        encoder = OpenClipEncoder(args.model)
    return Engine(
        encoder=encoder,
        catalog=getattr(args, "catalog", None),
        load_entrypoints=not getattr(args, "no_plugins", False),
        **kwargs,  # type: ignore[arg-type]
    )


def _print_summary(analysis: Analysis, top: int) -> None:
    ident = analysis.identification
    out = sys.stdout.write
    out(f"{ident.summary}\n")
    out(f"  brand:      {ident.brand or '-'}\n")
    out(f"  product:    {ident.product_name or '-'}\n")
    out(f"  category:   {ident.category or '-'}\n")
    if ident.attributes:
        out("  attributes: " + ", ".join(f"{a.name} {a.value}" for a in ident.attributes) + "\n")
    out(f"  confidence: {ident.confidence:.2f}\n")
    for suggestion in ident.suggested_photos:
        out(f"  to be surer, add {suggestion}\n")
    for expert, reason in analysis.failed_experts.items():
        out(f"  expert {expert} failed: {reason}\n")
    for warning in analysis.warnings:
        out(f"  warning: {warning}\n")
    price = analysis.price
    if price.ok:
        out(f"\nPrice: {price.estimate} {price.currency} (range {price.low}-{price.high}, "
            f"from {price.comps_used} comps)\n")
    else:
        out(f"\nPrice: not enough data ({price.comps_used} usable comps, "
            f"{price.minimum_comps} needed)\n")
    if analysis.comps:
        out(f"\nComps ({len(analysis.comps)} found, most alike first):\n")
        for i, comp in enumerate(analysis.comps[:top], start=1):
            listing = comp.listing
            price_text = str(listing.price) if listing.price else "no price"
            sim = f"{comp.similarity:.3f}" if comp.similarity is not None else "  n/a"
            flags = f"  ({', '.join(comp.flags)})" if comp.flags else ""
            out(f"  {i:>2}. {sim}  {price_text:>14}  {listing.title}  [{listing.marketplace}]"
                f"{flags}\n")
    else:
        out("\nNo comps found.\n")


def _run(args: argparse.Namespace) -> int:
    if args.command == "analyze":
        photo = load_photo(Path(args.photo))  # the photo first: the most basic mistake
        experts, marketplaces = _without_missing_catalog(
            args, _split(args.experts), _split(args.marketplaces))
        engine = _engine(
            args,
            experts=experts,
            synthesizer=args.synthesizer,
            marketplaces=marketplaces,
        )
        engine.encoder.dim  # noqa: B018 - load the model first: one clear error if it cannot
        if "catalog" in [c.name for c in (*engine.experts, *engine.marketplaces)]:
            engine.catalog  # noqa: B018 - open it first: one clear error if it is damaged
        executor = _ray_executor(args)
        analysis = (engine.analyze(photo) if executor is None
                    else engine.analyze_many([args.photo], executor=executor)[0])
        if args.json:
            sys.stdout.write(analysis.to_json(indent=2) + "\n")
        else:
            _print_summary(analysis, args.top)
        return 0
    if args.command == "catalog":
        return _catalog_command(args)
    if args.command == "plugins":
        return _plugins(args)
    raise AssertionError(args)  # pragma: no cover - argparse enforces the commands


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


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with _logging_to_stderr(args.verbose):
        try:
            return _run(args)
        except RestyleError as exc:
            sys.stderr.write(f"restyle: error: {exc}\n")
            return 1
        except KeyboardInterrupt:
            sys.stderr.write("restyle: interrupted\n")
            return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

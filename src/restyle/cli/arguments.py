"""The command line's arguments: the table of commands and options, and the
types that check their values."""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Sequence
from typing import TypeAlias

from restyle import _settings
from restyle._version import __version__
from restyle.cli.draft import add_draft_command
from restyle.cli.serve import add_serve_command

__all__ = ["command_parser", "ray_values_attached"]

#: What a parser's commands are added to.
_Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def command_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="restyle",
        description="Identify a secondhand item from a photo, find comps and estimate a price.",
    )
    parser.add_argument("--version", action="version", version=f"restyle {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="log more (-vv: debug; -vvv: the HTTP clients' debug lines too), "
                        "and show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = _common_options()
    _analyze_command(sub, common)
    add_draft_command(sub, common)
    _catalog_commands(sub, common)
    _plugins_command(sub)
    _model_command(sub)
    _evaluation_commands(sub, common)
    _logs_command(sub)
    add_serve_command(sub, common)
    return parser


#: The built-in components' names, for the help (tests/test_model_cli.py checks
#: them against the registry).
BUILT_IN = {
    "expert": ("clip", "catalog", "google-vision", "aws-rekognition"),
    "synthesizer": ("consensus", "gemini", "openai-compatible"),
    "marketplace": ("catalog", "ebay", "ebay-sold"),
}
def _catalog_help() -> str:
    return (f"local catalog directory (default: {_settings.catalog_dir()}, from "
            "$RESTYLE_CATALOG, else $RESTYLE_HOME/catalog)")


def _common_options() -> argparse.ArgumentParser:
    """The options of every command that makes an Engine."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--catalog", metavar="DIR", help=_catalog_help())
    common.add_argument("--model", metavar="SPEC",
                        help="open_clip model, e.g. ViT-B-32/laion2b_s34b_b79k or local-dir:PATH "
                        "(default: $RESTYLE_MODEL)")
    common.add_argument("--encoder", metavar="NAME",
                        help="a registered encoder, such as one a plugin provides (default: "
                        "$RESTYLE_ENCODER, else openclip)")
    common.add_argument("--no-plugins", action="store_true",
                        help="load no third-party plugins")
    return common


def _analyze_command(sub: _Commands, common: argparse.ArgumentParser) -> None:
    analyze = sub.add_parser(
        "analyze", parents=[common],
        help="analyze photos: files, folders, globs, or - for one on stdin",
        description="Identify the item in each photo, find comps and estimate a price. The "
        "photos run through one model load, in batches.",
        epilog="Exit status: 0 when every photo was analysed, 1 when any failed (each failure "
        "is one line on stderr; the other photos are still analysed), 2 for a usage error.")
    analyze.add_argument(
        "photo", nargs="+", metavar="PHOTO",
        help="a JPEG, PNG, WebP, HEIC or AVIF file; a folder (its photos, sorted by name); a "
        "quoted glob such as 'shots/*.jpg' (** matches any depth); or - for one photo on stdin")
    analyze.add_argument("--recursive", action="store_true",
                         help="also take the photos in a folder's subfolders")
    items = analyze.add_mutually_exclusive_group()
    items.add_argument(
        "--item", action="store_true",
        help="the PHOTOs are several photos of ONE item (at most 12: the whole item, its "
        "brand tag, its care label, details, flaws), analysed together; give a photo's role "
        "as ROLE=PATH (whole, tag, label, detail, flaw), else restyle finds it")
    items.add_argument(
        "--items", action="store_true",
        help="each subfolder of a FOLDER is one item (its photos, by name); a photo directly "
        "in the FOLDER is an item of its own")
    analyze.add_argument(
        "--json", action="store_true",
        help="print JSON: the Analysis of a single photo file; with several photos, a folder or "
        'a glob, one line per photo (JSONL): {"photo": PATH, "analysis": {...}} or '
        '{"photo": PATH, "error": MESSAGE}')
    analyze.add_argument(
        "--experts", metavar="A,B",
        help=f"comma-separated expert names (default: {','.join(_settings.DEFAULT_EXPERTS)}; "
        f"built in: {', '.join(BUILT_IN['expert'])}; 'restyle plugins' lists all, and which "
        "are ready)")
    analyze.add_argument("--synthesizer", metavar="NAME",
                         help="the synthesizer that merges the experts' opinions (default: "
                         "$RESTYLE_SYNTHESIZER, else consensus; built in: "
                         f"{', '.join(BUILT_IN['synthesizer'])})")
    analyze.add_argument(
        "--marketplaces", metavar="A,B",
        help="comma-separated marketplaces (default: "
        f"{','.join(_settings.DEFAULT_MARKETPLACES)}; built in: "
        f"{', '.join(BUILT_IN['marketplace'])})")
    analyze.add_argument("--top", type=_count_argument, metavar="N",
                         help="comps to list, most alike first: in the summary (default 10) and "
                         "in the JSON (default all)")
    analyze.add_argument("--deadline", type=_seconds_argument, metavar="SECONDS",
                         help="wall-clock time each photo's analysis may take (default 60)")
    analyze.add_argument("--record", metavar="DIR",
                         help="record what each stage returned into DIR, for 'restyle replay' "
                         "(a single photo file)")
    _analyze_output_options(analyze)
    _pricing_options(analyze)
    _ray_option(analyze)


def _analyze_output_options(analyze: argparse.ArgumentParser) -> None:
    analyze.add_argument(
        "--format", choices=("summary", "table"), metavar="FORMAT",
        help="summary: each photo's identification, price and comps; table: one line per "
        "photo (default: summary for a single photo file, else table)")
    analyze.add_argument("--csv", metavar="FILE",
                         help="also write one CSV row per photo to FILE (- for stdout)")
    analyze.add_argument("--html", metavar="FILE",
                         help="also write an HTML report to FILE: a sortable row per photo "
                         "with its thumbnail, identification, price and best comps")
    analyze.add_argument("--no-log", action="store_true",
                         help="keep this run out of the history 'restyle logs' shows "
                         "(or set RESTYLE_NO_LOG=1)")


def _catalog_commands(sub: _Commands, common: argparse.ArgumentParser) -> None:
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
    build.add_argument("--checkpoint-every", type=int, metavar="N", default=2000,
                       help="listings stored between checkpoints (default 2000; see docs/scale.md)")

    only_catalog = argparse.ArgumentParser(add_help=False)
    only_catalog.add_argument("--catalog", metavar="DIR", help=_catalog_help())
    only_catalog.add_argument("--json", action="store_true", help="print the result as JSON")
    catalog_sub.add_parser(
        "stats", parents=[only_catalog],
        help="listings, vectors, model, size on disk, listings per category",
        description="Show what the catalog holds: its listings and vectors, the model that "
        "made them, its size on disk and its listings per category. Reads only.")
    catalog_sub.add_parser(
        "check", parents=[only_catalog],
        help="check the database, the stored vectors and the index",
        description="Check the catalog: the database opens and has the schema restyle "
        "writes, every listing has a vector, and the index holds the same vectors. Reads "
        "only.",
        epilog="Exit status: 0 when the catalog is sound; 1 with one line per problem, "
        "each saying what to do (often: restyle catalog repair).")
    repair = catalog_sub.add_parser(
        "repair", parents=[only_catalog],
        help="rebuild the vector index from the database, re-embedding what is missing",
        description="Rebuild the vector index from the vectors stored in the database, "
        "re-embed listings that have none (this loads the catalog's model), and remove "
        "listings whose image can no longer be read.")
    repair.add_argument("--model", metavar="SPEC",
                        help="the catalog's model, to re-embed listings (default: $RESTYLE_MODEL)")
    repair.add_argument("--encoder", metavar="NAME",
                        help="the catalog's encoder, if not openclip (default: $RESTYLE_ENCODER)")


def _plugins_command(sub: _Commands) -> None:
    plugins = sub.add_parser(
        "plugins", help="list the components, which are ready, and their plugins",
        description="List every registered component (encoder, expert, synthesizer, "
        "marketplace) and whether it is ready, lacks credentials (naming the environment "
        "variables to set, never their values) or lacks a package; then the third-party "
        "plugins with their hooks, components and problems.")
    plugins.add_argument("--no-plugins", action="store_true", help="load no third-party plugins")
    plugins.add_argument("--json", action="store_true",
                         help='print {"components": [...], "plugins": [...]} as JSON')
    plugins.add_argument("--all", action="store_true",
                         help="include the built-in plugins in the list of plugins")


def _model_command(sub: _Commands) -> None:
    model = sub.add_parser(
        "model", help="list, fetch, export and verify models (for an offline machine)",
        description="Manage open_clip models: list the published ones and which are cached, "
        "fetch one into the cache, export one to a folder that a machine with no network "
        "loads as RESTYLE_MODEL=local-dir:DIR, verify one loads from this machine alone.")
    actions = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="the published models and which are cached")
    listing.add_argument("--cached", action="store_true", help="only the cached models")
    listing.add_argument("--json", action="store_true", help="print the list as JSON")
    default = f"(default: $RESTYLE_MODEL, else {_settings.DEFAULT_MODEL})"
    fetch = actions.add_parser(
        "fetch", help="download a model into the local cache",
        description="Download a model's weights into the local cache, unless they are there. "
        "Fails within seconds when the Hugging Face Hub (HF_ENDPOINT) cannot be reached.")
    fetch.add_argument("spec", nargs="?", metavar="MODEL", help=f"the model {default}")
    export = actions.add_parser(
        "export", help="write a model to a folder for a machine with no network",
        description="Write a model's config and weights to DIR (fetching them first if they "
        "are not cached). Copy DIR to the offline machine and set RESTYLE_MODEL=local-dir:DIR "
        "there.")
    export.add_argument("spec", metavar="MODEL", help="the model, e.g. " + _settings.DEFAULT_MODEL)
    export.add_argument("folder", metavar="DIR", help="an empty or new folder")
    verify = actions.add_parser(
        "verify", help="load a model from this machine alone and encode a picture",
        description="Load a model offline (nothing is downloaded) and encode a picture: "
        "what an offline machine checks before its first analysis.")
    verify.add_argument("spec", nargs="?", metavar="MODEL", help=f"the model {default}")
    verify.add_argument("--json", action="store_true", help="print the result as JSON")


def _evaluation_commands(sub: _Commands, common: argparse.ArgumentParser) -> None:
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
    _pricing_options(replay, recorded=True)
    replay.add_argument("--no-cutoff", action="store_true",
                        help="flag no comp below the similarity cut-off")
    replay.add_argument("--json", action="store_true",
                        help="print the changes, the differences and both analyses as JSON")
    replay.add_argument("--no-plugins", action="store_true", help="load no third-party plugins")


def _logs_command(sub: _Commands) -> None:
    logs = sub.add_parser(
        "logs", help="list, search, show and export past analyses (the history)",
        description="Every analysis 'restyle analyze' makes is logged to a SQLite database "
        "under $RESTYLE_HOME (history.sqlite), unless --no-log or RESTYLE_NO_LOG=1. With no "
        "ACTION, the newest analyses are listed.")
    _logs_filters(logs)
    actions = logs.add_subparsers(dest="logs_command", metavar="ACTION")
    _logs_filters(actions.add_parser("list", help="the newest analyses, or those matching"))
    show = actions.add_parser("show", help="one analysis in full")
    show.add_argument("id", type=int, metavar="ID", help="its number, as 'restyle logs' lists it")
    show.add_argument("--json", action="store_true", help="print the entry as JSON")
    actions.add_parser("export", help="every entry as JSON Lines, oldest first")
    actions.add_parser("path", help="where the history is kept")


def _logs_filters(parser: argparse.ArgumentParser) -> None:
    default = argparse.SUPPRESS if parser.prog.endswith(" list") else None
    parser.add_argument("-q", "--query", metavar="TEXT", default=default,
                        help="only entries whose photo, brand, product, category or summary "
                        "contains TEXT (any case)")
    parser.add_argument("--brand", metavar="TEXT", default=default,
                        help="only entries whose brand contains TEXT")
    parser.add_argument("--product", metavar="TEXT", default=default,
                        help="only entries whose product contains TEXT")
    parser.add_argument("-n", "--count", type=_count_argument, metavar="N",
                        default=argparse.SUPPRESS if default else 20,
                        help="most entries to list (default 20; 0 for all)")
    parser.add_argument("--json", action="store_true",
                        default=argparse.SUPPRESS if default else False,
                        help="print the entries as JSON Lines")


def _pricing_options(parser: argparse.ArgumentParser, *, recorded: bool = False) -> None:
    """The pricing rules, the same on every command that prices; a replay's
    defaults are the recording's."""
    defaults = ("the recording's", "the recording's") if recorded else (
        "$RESTYLE_MINIMUM_COMPS, else 3", "$RESTYLE_HALF_LIFE_DAYS, else 30")
    parser.add_argument("--minimum-comps", type=int, metavar="N",
                        help=f"fewest comps a price may rest on (default: {defaults[0]})")
    parser.add_argument("--half-life-days", "--half-life", type=float, metavar="DAYS",
                        dest="half_life_days",
                        help=f"days after which a sale weighs half (default: {defaults[1]})")


def _ray_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ray", nargs="?", const="auto", metavar="ADDRESS",
        help="run on Ray: a running cluster (auto: $RAY_ADDRESS or one started here with "
        "'ray start', else a local Ray), 'local', or a cluster address; see docs/scale.md")


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


def _ray_address_like(text: str) -> bool:
    """Whether a word after ``--ray`` is its value rather than a photo or file."""
    return text in ("auto", "local") or "://" in text or bool(
        re.fullmatch(r"[\w.\-]+:\d{1,5}", text))


def ray_values_attached(argv: Sequence[str]) -> list[str]:
    """``--ray PHOTO`` means ``--ray`` (auto) and a photo, not a cluster named PHOTO."""
    words = list(argv)
    for i, word in enumerate(words[:-1]):
        if word == "--":
            break
        following = words[i + 1]
        if word == "--ray" and not following.startswith("-") and not _ray_address_like(following):
            words[i] = "--ray=auto"
    return words

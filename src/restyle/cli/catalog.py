"""``restyle catalog``: build, stats, check, repair."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from restyle._errors import CatalogError, ConfigurationError
from restyle._ingestion.listings import listings_format
from restyle._store.catalog import Catalog
from restyle.cli.common import catalog_dir, make_engine, ray_executor

__all__ = ["SHOWN", "catalog_command"]


#: Rejected rows, or removed listings, named one a line on stderr; the rest are counted.
SHOWN = 20


def catalog_command(args: argparse.Namespace) -> int:
    actions = {"build": _build, "stats": _stats, "check": _check, "repair": _repair}
    return actions[args.catalog_command](args, catalog_dir(args))


def _tell(args: argparse.Namespace, data: Mapping[str, object], summary: str,
          details: Iterable[str] = (), *, ok: bool = True) -> int:
    """What an action found: its JSON with ``--json``, else ``summary`` on stdout
    and ``details`` (a line each) on stderr; the exit status, 0 when ``ok``."""
    if args.json:
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
    else:
        sys.stdout.write(summary)
        for line in details:
            sys.stderr.write(line + "\n")
    return 0 if ok else 1


def _build(args: argparse.Namespace, directory: Path) -> int:
    listings = Path(args.file)
    listings_format(listings)
    if not listings.is_file():  # before the model loads: one clear error, at once
        raise CatalogError(f"listings file not found: {listings}")
    if args.checkpoint_every < 1:
        raise ConfigurationError("--checkpoint-every must be at least 1")
    executor = ray_executor(args)
    if executor is not None:  # before the catalog is made: a failed connection leaves none
        executor.connect()
    args.catalog = str(directory)
    new = not Catalog.exists(directory)
    there = {e.name for e in directory.iterdir()} if directory.is_dir() else None
    engine = make_engine(args, experts=[], marketplaces=[])
    with Catalog.open(directory, engine.encoder, create=True) as catalog:
        report = catalog.build(listings, engine.encoder, progress=None, executor=executor,
                               images_root=args.images_root, fetcher=engine.fetcher,
                               checkpoint_every=args.checkpoint_every)
    details = [f"  row {rejection.row} rejected: {rejection.reason}"
               for rejection in report.rejected[:SHOWN]]
    if report.rejected_count > SHOWN:
        details.append(f"  ... {report.rejected_count - SHOWN} more")
    if report.rejected_file:
        details.append(f"  rejected rows written to {report.rejected_file}")
    kept = report.added + report.updated + report.skipped
    data = {"catalog": str(directory), **report.to_dict()}
    if kept == 0:
        if new:  # no empty catalog is left behind as if one were built
            _remove_made(directory, there, report.rejected_file)
            data["catalog"] = None
        details.append(f"restyle: error: no listing was stored: {_nothing_kept(report.rows)}"
                       + (f"; no catalog was made at {directory}" if new else ""))
    return _tell(args, data,
                 f"catalog {directory}: {report.added} added, {report.updated} updated, "
                 f"{report.skipped} skipped (stored already), {report.rejected_count} "
                 "rejected\n", details, ok=kept > 0)


def _remove_made(directory: Path, there: set[str] | None, kept: Path | None) -> None:
    """What a build made in ``directory`` (``there``: what it held before, None
    if it did not exist) removed, all but ``kept``; the folder too if it made
    it and nothing is kept."""
    for entry in directory.iterdir():
        if (kept is None or entry.name != kept.name) and entry.name not in (there or ()):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink(missing_ok=True)
    if there is None and kept is None:
        directory.rmdir()


def _nothing_kept(rows: int) -> str:
    if rows == 0:
        return "the listings file has no rows"
    return "every row was rejected" if rows > 1 else "its one row was rejected"


def _stats(args: argparse.Namespace, directory: Path) -> int:
    stats = Catalog.stats(directory)
    summary = (f"catalog {directory}\n"
               f"  listings:     {stats.rows} ({stats.sold} sold, {stats.asking} asking)\n"
               f"  vectors:      {stats.vectors}\n"
               f"  model:        {stats.model_id} (dimension {stats.dim})\n"
               f"  size on disk: {_size(stats.bytes_on_disk)}\n")
    if stats.categories:
        width = max(len(name or "(none)") for name in stats.categories)
        summary += "  categories:\n" + "".join(f"    {name or '(none)':<{width}}  {count}\n"
                                              for name, count in stats.categories.items())
    return _tell(args, stats.to_dict(), summary)


def _check(args: argparse.Namespace, directory: Path) -> int:
    check = Catalog.check(directory)
    summary = (f"catalog {directory}: ok ({check.rows} listings, {check.vectors} vectors)\n"
               if check.ok else "")
    summary += "".join(f"  note: {note}\n" for note in check.notes)
    return _tell(args, check.to_dict(), summary,
                 [f"restyle: problem: {problem}" for problem in check.problems], ok=check.ok)


def _repair(args: argparse.Namespace, directory: Path) -> int:
    if not Catalog.exists(directory):
        raise CatalogError(f"no catalog at {directory}")
    # The model loads only if a listing must be re-embedded.
    encoder = make_engine(args, experts=[], marketplaces=[]).encoder
    repaired = Catalog.repair(directory, encoder)
    return _tell(
        args, repaired.to_dict(),
        f"catalog {directory}: index rebuilt from {repaired.from_database} stored vectors, "
        f"{repaired.from_old_index} from the old index, {repaired.reembedded} re-embedded; "
        f"{len(repaired.removed)} listings removed, {repaired.dropped_vectors} stray "
        "vectors dropped\n",
        [f"  removed {listing_id}: {reason}" for listing_id, reason in repaired.removed[:SHOWN]])


def _size(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} bytes"  # pragma: no cover

"""Inspecting and repairing a catalog directory: its size (stats), a thorough
check that writes nothing, and a repair that rebuilds the vector index from
the vectors stored in the database (with the stale temporaries removed)."""

from __future__ import annotations

import logging
import os
import sqlite3
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from restyle._errors import CatalogError
from restyle._indexes.chooser import grow_index, index_present, load_index, save_index
from restyle._indexes.flat import VectorIndex, vector_problem
from restyle._indexes.sharded import ShardedIndex
from restyle._ingestion.listings import ListingLimits, ListingRow, batches
from restyle._plugin.components import Encoder
from restyle._store.build import embed_rows
from restyle._store.database import (
    REPAIR_STARTED,
    SELECT,
    beyond_repair,
    connect,
    database_error,
    database_problem,
    ensure_schema,
    file_problem,
    meta,
    missing,
    sample_vectors,
    schema_version,
    stored_vectors,
    vector_from_blob,
    vectors_by_id,
)
from restyle._store.files import (
    DB_NAME,
    INDEX_NAME,
    REJECTED_NAME,
    remove_stale_temporaries,
    stale_temporaries,
)
from restyle._types import Condition

if TYPE_CHECKING:
    from restyle._input.fetching import Fetcher

__all__ = ["CatalogCheck", "CatalogStats", "RepairReport", "check", "repair", "stats"]

logger = logging.getLogger("restyle.catalog")


@dataclass(frozen=True, slots=True, kw_only=True)
class CatalogStats:
    """The size of a catalog: listings (``sold`` of them at the price they sold
    for, ``asking`` at an asking price), vectors, model, bytes on disk,
    listings per category."""

    directory: Path
    rows: int
    vectors: int
    model_id: str
    dim: int
    schema_version: int
    bytes_on_disk: int
    categories: dict[str, int]
    sold: int = 0
    asking: int = 0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["directory"] = str(self.directory)
        return data


@dataclass(frozen=True, slots=True, kw_only=True)
class CatalogCheck:
    """The result of :meth:`Catalog.check`: ``problems`` each say what is wrong
    and what to do; ``notes`` are harmless findings."""

    directory: Path
    problems: tuple[str, ...]
    notes: tuple[str, ...] = ()
    rows: int | None = None
    vectors: int | None = None
    model_id: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {"directory": str(self.directory), "ok": self.ok, "problems": list(self.problems),
                "notes": list(self.notes), "rows": self.rows, "vectors": self.vectors,
                "model_id": self.model_id}


@dataclass(frozen=True, slots=True, kw_only=True)
class RepairReport:
    """What :meth:`Catalog.repair` did: vectors taken from the database, from the
    old index, and re-embedded; listings removed because no vector could be
    made for them (id and reason); stray vectors dropped; and the temporary
    files that saves stopped midway had left, removed (their names)."""

    directory: Path
    from_database: int
    from_old_index: int
    reembedded: int
    removed: tuple[tuple[str, str], ...]
    dropped_vectors: int
    removed_temporaries: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["directory"] = str(self.directory)
        data["removed"] = [{"listing_id": i, "reason": r} for i, r in self.removed]
        return data


# -- stats -----------------------------------------------------------------------


def stats(directory: Path) -> CatalogStats:
    """See :meth:`Catalog.stats`."""
    db_path = directory / DB_NAME
    problem = database_problem(directory)
    if problem is not None:
        raise CatalogError(problem)
    db = connect(db_path, readonly=True)
    try:
        version = schema_version(db, db_path)
        model_id, dim = meta(db, "model_id"), meta(db, "dim")
        rows, sold = db.execute(
            "SELECT COUNT(*), COALESCE(SUM(sold = 1), 0) FROM items").fetchone()
        categories = {
            str(name): int(count) for name, count in db.execute(
                "SELECT COALESCE(category, ''), COUNT(*) FROM items GROUP BY 1 "
                "ORDER BY 2 DESC, 1"
            )
        }
    except sqlite3.DatabaseError as exc:
        raise CatalogError(database_error(db_path, exc)) from exc
    finally:
        db.close()
    index_path = directory / INDEX_NAME
    vectors = 0
    if index_present(index_path) and dim is not None and dim.isdigit():
        vectors = len(load_index(index_path, dim=int(dim)))
    return CatalogStats(
        directory=directory, rows=int(rows), vectors=vectors, model_id=model_id or "",
        dim=int(dim) if dim and dim.isdigit() else 0, schema_version=version,
        bytes_on_disk=_bytes_on_disk(directory), categories=categories,
        sold=int(sold), asking=int(rows) - int(sold),
    )


def _bytes_on_disk(directory: Path) -> int:
    size = sum(p.stat().st_size for p in directory.iterdir()
               if p.is_file() and p.name.startswith((DB_NAME, INDEX_NAME, REJECTED_NAME)))
    shards = (directory / INDEX_NAME).with_suffix(".shards")
    return size + (sum(p.stat().st_size for p in shards.iterdir()) if shards.is_dir() else 0)


# -- check -----------------------------------------------------------------------


def check(directory: Path) -> CatalogCheck:
    """See :meth:`Catalog.check`."""
    db_path = directory / DB_NAME
    problem = database_problem(directory)
    if problem is not None:
        return CatalogCheck(directory=directory, problems=(problem,))
    try:
        db = connect(db_path, readonly=True)
    except CatalogError as exc:
        return CatalogCheck(directory=directory, problems=(str(exc),))
    try:
        return _check(directory, db)
    except sqlite3.DatabaseError as exc:
        return CatalogCheck(directory=directory, problems=(database_error(db_path, exc),))
    finally:
        db.close()


def _check(directory: Path, db: sqlite3.Connection) -> CatalogCheck:
    db_path = directory / DB_NAME
    found = [str(r[0]) for r in db.execute("PRAGMA quick_check(5)")]
    if found != ["ok"]:
        return CatalogCheck(directory=directory, problems=(
            f"catalog database {db_path} is damaged ({'; '.join(found)}); rebuild the catalog "
            "from its listings file into a new directory",
        ))
    try:
        version = schema_version(db, db_path)
    except CatalogError as exc:
        return CatalogCheck(directory=directory, problems=(str(exc),))
    model_id, dim_text = meta(db, "model_id"), meta(db, "dim")
    if model_id is None or dim_text is None or not dim_text.isdigit() or int(dim_text) < 1:
        return CatalogCheck(directory=directory, problems=(
            f"catalog database {db_path} records no model or dimension; build the catalog "
            "again into a new directory",
        ))
    dim = int(dim_text)
    problems: list[str] = []
    notes: list[str] = []
    repair = f"run 'restyle catalog repair --catalog {directory}'"
    started = meta(db, REPAIR_STARTED)
    if started is not None:
        problems.append(
            f"a repair started at {started} was stopped before it finished (killed, or the "
            "machine went down): the catalog is as it was before that repair, which did not "
            f"happen; {repair} again to finish it")
    row_ids = np.array([r[0] for r in db.execute("SELECT id FROM items ORDER BY id")],
                       dtype=np.int64)
    _check_stored(db, version, dim, len(row_ids), stopped=started is not None, repair=repair,
                  problems=problems, notes=notes)
    vectors = _check_index(directory, dim, row_ids, repair=repair, problems=problems,
                           notes=notes)
    _note_temporaries(directory, notes)
    return CatalogCheck(directory=directory, problems=tuple(problems), notes=tuple(notes),
                        rows=len(row_ids), vectors=vectors, model_id=model_id)


def _check_stored(db: sqlite3.Connection, version: int, dim: int, rows: int, *, stopped: bool,
                  repair: str, problems: list[str], notes: list[str]) -> None:
    """The vectors stored in the database: damaged ones, and rows without one."""
    if version < 2:
        notes.append(f"schema version {version}: vectors are not stored in the database; "
                     f"{repair} to upgrade it")
        return
    stored = unusable = 0
    for (blob,) in db.execute("SELECT vector FROM items WHERE vector IS NOT NULL"):
        stored += 1
        unusable += vector_from_blob(blob, dim) is None
    if unusable:
        problems.append(f"{unusable} listings have a damaged vector in the database; {repair}"
                        " to re-embed them")
    if stored < rows and not stopped:
        notes.append(f"{rows - stored} listings have no vector stored in the "
                     f"database (built before schema version 2); {repair} to store them")
    elif stored < rows:
        notes.append(f"{rows - stored} listings have no vector stored in the "
                     "database yet: the repair that was stopped had not stored them")


def _check_index(directory: Path, dim: int, row_ids: np.ndarray, *, repair: str,
                 problems: list[str], notes: list[str]) -> int | None:
    """The index against the rows; how many vectors it holds (None: unreadable)."""
    index_path = directory / INDEX_NAME
    if not index_present(index_path):
        if len(row_ids):
            problems.append(f"the vector index {index_path} is missing; {repair} to rebuild it")
        return None
    try:
        index = load_index(index_path, dim=dim)
    except CatalogError as exc:
        problems.append(f"{exc}; {repair} to rebuild it")
        return None
    index_ids = index.ids()
    missing = int(np.count_nonzero(~np.isin(row_ids, index_ids)))
    stray = int(np.count_nonzero(~np.isin(index_ids, row_ids)))
    if missing:
        problems.append(f"{missing} listings have no vector in {index_path}; {repair}")
    if stray:
        notes.append(f"{stray} vectors in the index belong to no listing (left by an "
                     "interrupted build or removal); harmless, and repair drops them")
    return len(index)


def _note_temporaries(directory: Path, notes: list[str]) -> None:
    left = stale_temporaries(directory)
    if left:
        notes.append(
            f"{len(left)} temporary files left by a save that was stopped midway "
            f"({', '.join(str(p.relative_to(directory)) for p in left[:5])}"
            f"{', ...' if len(left) > 5 else ''}); harmless, and repair or the next build "
            "removes them")


# -- repair ----------------------------------------------------------------------


def repair(directory: Path, encoder: Encoder | None, *, fetcher: Fetcher | None,
           limits: ListingLimits, batch_size: int) -> RepairReport:
    """See :meth:`Catalog.repair`."""
    db_path = directory / DB_NAME
    if not os.path.lexists(db_path):
        raise CatalogError(missing(directory))
    problem = file_problem(db_path)
    if problem is not None:
        raise CatalogError(f"{problem} (repair rebuilds the vector index, not the database)")
    db = connect(db_path, readonly=False)
    try:
        return _repair(directory, db, encoder, fetcher=fetcher, limits=limits,
                       batch_size=batch_size)
    except sqlite3.DatabaseError as exc:
        raise CatalogError(beyond_repair(db_path, str(exc))) from exc
    finally:
        db.close()


def _repair(directory: Path, db: sqlite3.Connection, encoder: Encoder | None, *,
            fetcher: Fetcher | None, limits: ListingLimits, batch_size: int) -> RepairReport:
    db_path = directory / DB_NAME
    found = [str(r[0]) for r in db.execute("PRAGMA quick_check(5)")]
    if found != ["ok"]:
        raise CatalogError(beyond_repair(db_path, "; ".join(found)))
    ensure_schema(db, db_path)
    model_id, dim_text = meta(db, "model_id"), meta(db, "dim")
    if model_id is None or dim_text is None or not dim_text.isdigit():
        raise CatalogError(f"catalog database {db_path} records no model; build the catalog "
                           "again into a new directory")
    dim = int(dim_text)
    removed_temporaries = remove_stale_temporaries(directory)
    with db:  # cleared in the last commit: a repair stopped before it is one check reports
        db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                   (REPAIR_STARTED, datetime.now(timezone.utc).isoformat(timespec="seconds")))
    try:
        report = _rebuild(directory, db, encoder, dim, model_id, fetcher=fetcher,
                          limits=limits, batch_size=batch_size)
    except Exception:
        # A repair that failed and said why changed nothing: it was not stopped.
        db.rollback()
        with db:
            db.execute("DELETE FROM meta WHERE key = ?", (REPAIR_STARTED,))
        raise
    return replace(report, removed_temporaries=tuple(
        str(p.relative_to(directory)) for p in removed_temporaries))


def _rebuild(directory: Path, db: sqlite3.Connection, encoder: Encoder | None, dim: int,
             model_id: str, *, fetcher: Fetcher | None, limits: ListingLimits,
             batch_size: int) -> RepairReport:
    """The repair itself, committed (the repair's mark cleared) only at the end."""
    old: VectorIndex | ShardedIndex | None = None
    index_path = directory / INDEX_NAME
    try:
        old = load_index(index_path, dim=dim) if index_present(index_path) else None
    except CatalogError as exc:
        logger.info("old index unusable, not used: %s", exc)
    index = VectorIndex(dim)
    from_database, from_old, to_embed = _gather(db, index, old, dim)
    removed: list[tuple[str, str]] = []
    reembedded = 0
    if to_embed:
        if encoder is None or encoder.model_id != model_id:
            db.rollback()
            raise CatalogError(
                f"{len(to_embed)} listings have no usable vector and must be re-embedded: "
                f"repair with the catalog's model, {model_id}"
                + ("" if encoder is None else f", not {encoder.model_id}")
            )
        reembedded = _reembed(db, index, to_embed, encoder, fetcher=fetcher, limits=limits,
                              batch_size=batch_size, removed=removed)
    dropped = 0 if old is None else int(np.count_nonzero(~np.isin(old.ids(), index.ids())))
    rebuilt = grow_index(index, vectors=lambda: stored_vectors(db, dim),
                         sample=lambda n: sample_vectors(db, dim, n),
                         exact=lambda ids: vectors_by_id(db, ids, dim))
    # Index first, then the rows: a crash between leaves stray vectors, which are harmless.
    save_index(rebuilt, index_path)
    db.execute("DELETE FROM meta WHERE key = ?", (REPAIR_STARTED,))
    db.commit()
    return RepairReport(directory=directory, from_database=from_database,
                        from_old_index=from_old, reembedded=reembedded, removed=tuple(removed),
                        dropped_vectors=dropped)


def _gather(db: sqlite3.Connection, index: VectorIndex, old: VectorIndex | ShardedIndex | None,
            dim: int) -> tuple[int, int, list[int]]:
    """Put every usable vector into ``index``: the one the database stores, or
    else the old index's (then stored too). How many came from each, and the
    item ids that have neither and must be re-embedded."""
    from_database = from_old = 0
    to_embed: list[int] = []
    cursor = db.execute("SELECT id, vector FROM items ORDER BY id")
    while chunk := cursor.fetchmany(1024):
        ids: list[int] = []
        vectors: list[np.ndarray] = []
        for item_id, blob in chunk:
            vector = vector_from_blob(blob, dim)
            if vector is not None:
                from_database += 1
            else:
                vector = old.reconstruct(item_id) if old is not None else None
                if vector is None or vector_problem(vector, dim) is not None:
                    to_embed.append(int(item_id))
                    continue
                from_old += 1
                db.execute("UPDATE items SET vector = ? WHERE id = ?",
                           (vector.astype(np.float32).tobytes(), item_id))
            ids.append(int(item_id))
            vectors.append(vector)
        if ids:
            index.upsert(ids, np.stack(vectors))
    return from_database, from_old, to_embed


def _reembed(db: sqlite3.Connection, index: VectorIndex, item_ids: list[int], encoder: Encoder,
             *, fetcher: Fetcher | None, limits: ListingLimits, batch_size: int,
             removed: list[tuple[str, str]]) -> int:
    done = 0
    for chunk in batches(item_ids, batch_size):
        marks = ", ".join("?" * len(chunk))
        rows = db.execute(f"{SELECT} WHERE id IN ({marks})", chunk).fetchall()
        by_number = {int(r[0]): r for r in rows}
        kept, vectors, failed = embed_rows([_row_from_db(r) for r in rows], encoder,
                                           fetcher=fetcher, limits=limits)
        for item, vector in zip(kept, vectors, strict=True):
            db.execute("UPDATE items SET vector = ?, image_sha256 = ? WHERE id = ?",
                       (vector.tobytes(), item.sha256, item.row.number))
        if kept:
            index.upsert([item.row.number for item in kept], vectors)
        done += len(kept)
        for rejection in failed:
            listing_id = by_number[rejection.row][1]
            db.execute("DELETE FROM items WHERE id = ?", (rejection.row,))
            removed.append((str(listing_id), rejection.reason))
    return done


def _row_from_db(row: Sequence[Any]) -> ListingRow:
    item_id, listing_id, title, brand, category, condition, price, currency, url, image, sold = row
    return ListingRow(
        number=int(item_id), listing_id=listing_id, title=title, brand=brand, category=category,
        condition=Condition(condition), price=Decimal(price or "0"), currency=currency or "USD",
        url=url, image=image, image_as_written=image, sold=None if sold is None else bool(sold),
    )

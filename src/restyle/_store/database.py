"""The catalog's SQLite database: the one module that opens it and knows its
schema (tables, columns, migrations), its errors, and the queries on it.

``catalog.sqlite`` records its schema version, the encoder's model id and
dimension, and every listing with its vector, so the index can always be
rebuilt from it. A database opened only to read is opened read-only; a hot
journal left by a build killed mid-transaction is rolled back first.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from restyle._errors import CatalogError
from restyle._indexes.flat import vector_problem
from restyle._ingestion.listings import (
    CurrentImages,
    DecodedListing,
    ListingRow,
    LoadedImage,
    batches,
)
from restyle._store.files import DB_NAME

__all__ = [
    "COLUMNS", "REPAIR_STARTED", "SCHEMA_VERSION", "SELECT", "beyond_repair", "columns",
    "connect", "database_error", "database_problem", "delete_listings", "ensure_schema",
    "file_problem", "image_hashes", "meta", "missing", "sample_vectors", "schema_version",
    "stored_images", "stored_vectors", "update_metadata", "upsert_rows", "vector_from_blob",
    "vectors_by_id", "where_in",
]

#: Version 2 stores each listing's vector in the database too.
SCHEMA_VERSION = 2
#: The meta key a repair sets when it starts and clears in its last commit: a
#: repair that was stopped leaves it, and check says so.
REPAIR_STARTED = "repair_started"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    listing_id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    brand TEXT,
    category TEXT,
    condition TEXT NOT NULL,
    price TEXT,
    currency TEXT,
    url TEXT,
    image_path TEXT NOT NULL,
    image_sha256 TEXT NOT NULL,
    sold INTEGER,
    vector BLOB
);
"""

#: One list of a listing's columns, in the order of :func:`columns`; a row of
#: :data:`SELECT` is the item id and these.
COLUMNS = ("listing_id", "title", "brand", "category", "condition", "price", "currency", "url",
           "image_path", "sold")
SELECT = f"SELECT id, {', '.join(COLUMNS)} FROM items"
_SET_METADATA = ", ".join(f"{c}=?" for c in COLUMNS[1:])
_INSERT = (f"INSERT INTO items ({', '.join(COLUMNS)}, image_sha256, vector) "
           f"VALUES ({', '.join('?' * (len(COLUMNS) + 2))})")
_UPDATE = f"UPDATE items SET {_SET_METADATA}, image_sha256=?, vector=? WHERE listing_id=?"
# Rows read from the database in one query.
_ROWS_PER_QUERY = 500


# -- problems, said with what to do ---------------------------------------------


def missing(directory: Path) -> str:
    return (f"no catalog at {directory}; build one with "
            f"'restyle catalog build LISTINGS.jsonl --catalog {directory}'")


def database_error(path: Path, exc: sqlite3.DatabaseError) -> str:
    name = getattr(exc, "sqlite_errorname", "")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in str(exc):
        return f"catalog database {path} is busy (another process is writing it): try again"
    if name.startswith(("SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_READONLY")):
        return f"catalog database {path} cannot be opened or written: {exc}"
    return (f"catalog database {path} is damaged ({exc}); run 'restyle catalog check --catalog "
            f"{path.parent}', and rebuild the catalog from its listings file if it is")


def beyond_repair(path: Path, detail: str) -> str:
    return (f"catalog database {path} is damaged ({detail}); repair rebuilds the vector index, "
            "not the database: rebuild the catalog from its listings file into a new directory")


def database_problem(directory: Path) -> str | None:
    """Why the catalog database in ``directory`` cannot be opened (there is none,
    or :func:`file_problem`), or None."""
    path = directory / DB_NAME
    if not os.path.lexists(path):
        return missing(directory)
    return file_problem(path)


def file_problem(path: Path) -> str | None:
    """What is wrong with the database file, found cheaply from its size and
    header, before SQLite is trusted with it; or None."""
    what = f"catalog database {path}"
    rebuild = "restore it from a backup, or delete the directory and build the catalog again"
    try:
        info = path.stat()
        if not os.path.isfile(path):
            return f"{what} is not a file"
        if info.st_size == 0:
            return f"{what} is empty (0 bytes): it was truncated or never written; {rebuild}"
        with path.open("rb") as fh:
            header = fh.read(100)
    except OSError as exc:
        return f"{what} cannot be read: {exc.strerror or exc}"
    if not header.startswith(b"SQLite format 3\x00") or len(header) < 100:
        return f"{what} is not a SQLite database; {rebuild}"
    journal = [Path(f"{path}{s}") for s in ("-journal", "-wal")]
    if not any(p.exists() for p in journal):
        # Without a journal to replay, the file must be as long as its header says.
        page_size = int.from_bytes(header[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        pages = int.from_bytes(header[28:32], "big")
        if pages and header[24:28] == header[92:96] and info.st_size < page_size * pages:
            return (f"{what} is truncated ({info.st_size} of {page_size * pages} bytes); "
                    f"{rebuild}")
    return None


# -- opening ---------------------------------------------------------------------


def connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    """The catalog database at ``path``, opened for writing or read-only."""
    try:
        if not readonly:
            return sqlite3.connect(path, check_same_thread=False, timeout=30.0)
        db = _connect_readonly(path)
        try:
            db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError as exc:
            name = getattr(exc, "sqlite_errorname", "")
            if name != "SQLITE_READONLY_ROLLBACK" and "readonly" not in str(exc):
                raise
            db.close()
            _roll_back_hot_journal(path)
            db = _connect_readonly(path)
        return db
    except sqlite3.DatabaseError as exc:
        raise CatalogError(database_error(path, exc)) from exc


def _connect_readonly(path: Path) -> sqlite3.Connection:
    uri = f"{path.absolute().as_uri()}?mode=ro"
    return sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=30.0)


def _roll_back_hot_journal(path: Path) -> None:
    # A build killed mid-transaction leaves a journal that only a writer can
    # roll back. Rolling it back restores the last committed state, as any
    # writer opening the file would; nothing new is written.
    try:
        db = sqlite3.connect(path, timeout=30.0)
    except sqlite3.Error as exc:
        raise CatalogError(
            f"an interrupted build left {path}-journal behind, and undoing it needs write "
            f"access to {path.parent}: {exc}"
        ) from exc
    try:
        db.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    finally:
        db.close()


# -- the schema ------------------------------------------------------------------


def meta(db: sqlite3.Connection, key: str) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def schema_version(db: sqlite3.Connection, path: Path) -> int:
    if not {"meta", "items"} <= _tables(db):
        raise CatalogError(
            f"catalog database {path} is not a restyle catalog (it has no meta or items "
            "table); build the catalog into an empty directory"
        )
    stored = meta(db, "schema_version")
    # Catalogs from before the version was recorded are version 1.
    version = int(stored) if stored is not None and stored.isdigit() else 1
    if version > SCHEMA_VERSION:
        raise CatalogError(
            f"catalog database {path} has schema version {version}, newer than this restyle "
            f"reads ({SCHEMA_VERSION}); upgrade restyle"
        )
    return version


def _tables(db: sqlite3.Connection) -> set[str]:
    return {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def ensure_schema(db: sqlite3.Connection, path: Path) -> None:
    """Create the tables in a new database, or bring a catalog written by an
    older restyle up to :data:`SCHEMA_VERSION`; refuse any other database."""
    if not _tables(db):
        db.executescript(_SCHEMA)
    else:
        schema_version(db, path)  # not a catalog, or a newer one: refused before any change
    columns = {row[1] for row in db.execute("PRAGMA table_info(items)")}
    with db:
        if "vector" not in columns:
            db.execute("ALTER TABLE items ADD COLUMN vector BLOB")
        if meta(db, "schema_version") != str(SCHEMA_VERSION):
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                       (str(SCHEMA_VERSION),))


# -- rows ------------------------------------------------------------------------


def columns(row: ListingRow) -> tuple[Any, ...]:
    """A listing row's values for :data:`COLUMNS`."""
    return (
        row.listing_id,
        row.title,
        row.brand,
        row.category,
        row.condition.value,
        str(row.price),
        row.currency,
        row.url,
        row.image,
        None if row.sold is None else int(row.sold),
    )


def where_in(db: sqlite3.Connection, query: str, keys: Sequence[Any]) -> Iterator[Any]:
    """The rows of ``query`` (which ends with the column to match, as in
    ``"SELECT ... WHERE id"``) for each of ``keys``, asked a few hundred at a time."""
    for chunk in batches(list(keys), _ROWS_PER_QUERY):
        marks = ", ".join("?" * len(chunk))
        yield from db.execute(f"{query} IN ({marks})", chunk).fetchall()


def upsert_rows(db: sqlite3.Connection, kept: Sequence[DecodedListing | LoadedImage],
                vectors: np.ndarray) -> tuple[dict[int, np.ndarray], int, int]:
    """Insert or update the rows and their vectors, uncommitted: each stored
    vector by item id (a listing twice: the last row wins), and how many rows
    were added and updated."""
    by_id: dict[int, np.ndarray] = {}
    added = updated = 0
    for item, vector in zip(kept, vectors, strict=True):
        row = item.row
        existing = db.execute(
            "SELECT id FROM items WHERE listing_id = ?", (row.listing_id,)
        ).fetchone()
        blob = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
        if existing is None:
            cur = db.execute(_INSERT, (*columns(row), item.sha256, blob))
            item_id = int(cur.lastrowid or 0)
            added += 1
        else:
            db.execute(_UPDATE, (*columns(row)[1:], item.sha256, blob, row.listing_id))
            item_id = int(existing[0])
            updated += 1
        by_id[item_id] = vector
    return by_id, added, updated


def update_metadata(db: sqlite3.Connection, row: ListingRow) -> None:
    """Update a listing's metadata, keeping its image and vector (uncommitted)."""
    db.execute(f"UPDATE items SET {_SET_METADATA} WHERE listing_id=?",
               (*columns(row)[1:], row.listing_id))


def delete_listings(db: sqlite3.Connection, listing_ids: Sequence[str]) -> list[int]:
    """Delete these listings' rows, committed; their item ids."""
    ids = []
    for listing_id in listing_ids:
        row = db.execute("SELECT id FROM items WHERE listing_id = ?", (listing_id,)).fetchone()
        if row is not None:
            ids.append(int(row[0]))
    if not ids:
        return ids
    try:
        db.executemany("DELETE FROM items WHERE id = ?", [(i,) for i in ids])
        db.commit()
    except BaseException:
        db.rollback()
        raise
    return ids


def stored_images(db_path: Path) -> CurrentImages:
    """The lookup a build's load stage asks before it loads an image: which
    listings the catalog database at ``db_path`` holds with a vector, with
    which image. Opened read-only where it is called (a Ray build calls it on
    an actor on the driver's node)."""
    db = connect(db_path, readonly=True)

    def current(listing_ids: Sequence[str]) -> Mapping[str, tuple[str, str]]:
        return {listing_id: (image, sha256) for listing_id, image, sha256 in where_in(
            db, "SELECT listing_id, image_path, image_sha256 FROM items "
            "WHERE vector IS NOT NULL AND listing_id", listing_ids)}

    return current


def image_hashes(directory: Path) -> dict[str, str]:
    """The image sha256 of every listing of the catalog in ``directory``, by
    listing id (empty where there is no catalog), read without writing."""
    path = directory / DB_NAME
    if not path.is_file():
        return {}
    db = connect(path, readonly=True)
    try:
        rows = db.execute("SELECT listing_id, image_sha256 FROM items").fetchall()
    except sqlite3.DatabaseError as exc:
        raise CatalogError(database_error(path, exc)) from exc
    finally:
        db.close()
    return {str(listing_id): str(sha) for listing_id, sha in rows}


# -- vectors ---------------------------------------------------------------------


def vector_from_blob(blob: object, dim: int) -> np.ndarray | None:
    """A stored vector, or None where it is missing or unusable."""
    if not isinstance(blob, bytes) or len(blob) != 4 * dim:
        return None
    vector = np.frombuffer(blob, dtype=np.float32)
    return vector if vector_problem(vector, dim) is None else None


def vectors_by_id(db: sqlite3.Connection, ids: np.ndarray, dim: int) -> np.ndarray:
    """The stored vectors of ``ids``, in order; NaN rows for ids without one."""
    out = np.full((len(ids), dim), np.nan, np.float32)
    where = {int(item_id): row for row, item_id in enumerate(ids)}
    for item_id, blob in where_in(db, "SELECT id, vector FROM items WHERE id", list(where)):
        vector = vector_from_blob(blob, dim)
        if vector is not None:
            out[where[int(item_id)]] = vector
    return out


def stored_vectors(db: sqlite3.Connection, dim: int,
                   chunk: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Every usable stored vector with its id, a chunk at a time."""
    last = 0
    while True:
        rows = db.execute("SELECT id, vector FROM items WHERE id > ? AND vector IS NOT NULL "
                          "ORDER BY id LIMIT ?", (last, chunk)).fetchall()
        if not rows:
            return
        last = int(rows[-1][0])
        found = [(int(i), v) for i, blob in rows
                 if (v := vector_from_blob(blob, dim)) is not None]
        if found:
            yield (np.array([i for i, _ in found], dtype=np.int64),
                   np.stack([v for _, v in found]))


def sample_vectors(db: sqlite3.Connection, dim: int, n: int, seed: int = 0) -> np.ndarray:
    """About ``n`` stored vectors drawn at random (by id: ids are nearly dense)."""
    (top,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM items").fetchone()
    rng = np.random.default_rng(seed)
    wanted = rng.choice(int(top), size=min(int(top), 2 * n), replace=False) + 1
    found = [v for v in vectors_by_id(db, wanted, dim) if np.isfinite(v[0])]
    if len(found) < n and len(wanted) < top:  # ids with gaps: take them all in order
        found = [v for _, chunk in stored_vectors(db, dim) for v in chunk]
        found = [found[i] for i in sorted(rng.choice(len(found), size=min(n, len(found)),
                                                     replace=False))]
    return np.stack(found[:n]) if found else np.zeros((0, dim), np.float32)

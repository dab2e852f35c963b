"""The local catalog: listings in SQLite, their image vectors in a faiss index.

One directory holds ``catalog.sqlite`` and ``vectors.faiss``. The database
records its schema version, the encoder's model id and dimension, and every
listing's vector, so the index can always be rebuilt from it. Opening checks
both files before trusting them; a catalog opened only to search is opened
read-only and never written. Builds stream the listings file through the
stages of ``restyle._ingestion.listings`` and are resumable: a listing already stored
with the same image is skipped.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import sqlite3
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from restyle._errors import CatalogError, ConfigurationError
from restyle._indexes.flat import (
    VectorIndex,
    remove_stale_temporaries,
    stale_temporaries,
    temporary_for,
    temporary_pattern,
    vector_problem,
)
from restyle._indexes.sharded import (
    Runner,
    ShardedIndex,
    grow_index,
    index_present,
    load_index,
    remove_stale_index_temporaries,
    run_here,
    save_index,
    stale_index_temporaries,
)
from restyle._ingestion.listings import (
    CurrentImages,
    DecodedListing,
    ListingLimits,
    ListingRow,
    LoadedImage,
    Rejection,
    SourceRow,
    StoredAlready,
    batches,
    checked_embeddings,
    decode_listing_image,
    draft_side,
    embed_listings,
    load_images,
    load_unstored,
    read_listings,
    rejection_json,
    validate_listing,
)
from restyle._plugin.components import Encoder
from restyle._progress import progress_bar
from restyle._types import Condition, Listing, Money, Query

if TYPE_CHECKING:
    from PIL import Image

    from restyle._input.fetching import Fetcher

__all__ = [
    "EXECUTORS",
    "BuildExecutor",
    "BuildReport",
    "Catalog",
    "CatalogCheck",
    "CatalogStats",
    "ListingLimits",
    "Rejection",
    "RepairReport",
]

logger = logging.getLogger("restyle.catalog")

DB_NAME = "catalog.sqlite"
INDEX_NAME = "vectors.faiss"
REJECTED_NAME = "rejected.jsonl"
_REJECTED_STEM = "rejected"  # its temporaries are .rejected.XXXXXXXX.jsonl
MARKETPLACE_NAME = "catalog"
#: Version 2 stores each listing's vector in the database too.
SCHEMA_VERSION = 2
# The meta key a repair sets when it starts and clears in its last commit: a
# repair that was stopped leaves it, and check says so.
_REPAIR_STARTED = "repair_started"
#: Rejections a BuildReport keeps in memory; rejected.jsonl has them all.
REPORTED_REJECTIONS = 1000

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


# One list of a listing's columns, in the order of _columns() and _to_listing().
_COLUMNS = ("listing_id", "title", "brand", "category", "condition", "price", "currency", "url",
            "image_path", "sold")
_SELECT = f"SELECT id, {', '.join(_COLUMNS)} FROM items"
_SET_METADATA = ", ".join(f"{c}=?" for c in _COLUMNS[1:])
_INSERT = (f"INSERT INTO items ({', '.join(_COLUMNS)}, image_sha256, vector) "
           f"VALUES ({', '.join('?' * (len(_COLUMNS) + 2))})")
_UPDATE = f"UPDATE items SET {_SET_METADATA}, image_sha256=?, vector=? WHERE listing_id=?"
# A build reads ahead at most this many source rows past its last full batch,
# so a file of nothing but bad rows never piles up in memory.
_MAX_SPAN = 1024
#: Nearest neighbours a vector search takes from the index at least. One
#: analysis searches with the photo's vector several times (the catalog expert,
#: then every relaxation step of the marketplace, each filtering more loosely):
#: one index search of this many answers them all.
SEARCH_POOL = 150
# Recent vector searches kept, with their listings, for the searches after
# them with the same vector (analyses running at once each have their own).
_RECENT_SEARCHES = 32
# Rows read from the database in one query.
_ROWS_PER_QUERY = 500

_T = TypeVar("_T")


@dataclass(slots=True, kw_only=True)
class BuildReport:
    """What a build did. ``rejected`` holds the first :data:`REPORTED_REJECTIONS`
    rejections; ``rejected_count`` counts them all, and ``rejected_file`` lists
    them all."""

    rows: int = 0
    added: int = 0
    updated: int = 0
    skipped: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    rejected_count: int = 0
    rejected_file: Path | None = None

    def _reject(self, rejection: Rejection) -> None:
        self.rejected_count += 1
        if len(self.rejected) < REPORTED_REJECTIONS:
            self.rejected.append(rejection)

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows, "added": self.added, "updated": self.updated,
            "skipped": self.skipped, "rejected": self.rejected_count,
            "rejected_file": None if self.rejected_file is None else str(self.rejected_file),
            "rejections": [{"row": r.row, "reason": r.reason} for r in self.rejected],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class CatalogStats:
    """The size of a catalog: listings, vectors, model, bytes on disk, listings per category."""

    directory: Path
    rows: int
    vectors: int
    model_id: str
    dim: int
    schema_version: int
    bytes_on_disk: int
    categories: dict[str, int]

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


@dataclass(slots=True)
class _Neighbours:
    """One vector's nearest catalog items, best first, and those already read as
    Listings (None for an id the database no longer has)."""

    generation: int
    ids: np.ndarray
    scores: np.ndarray
    listings: dict[int, Listing | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Batch:
    """One contiguous span of source rows, prepared for the encoder."""

    rows: int
    decoded: list[DecodedListing]
    skipped: list[StoredAlready]
    rejected: list[Rejection]


#: One source row's outcome, as a build's write loop takes it: a rejection, a
#: listing the catalog held with this image when it was loaded, or a listing
#: and its vector.
Encoded = Rejection | StoredAlready | tuple[LoadedImage | DecodedListing, np.ndarray]


class EncodedBatch(Protocol):
    """Consecutive source rows, encoded: ``rows`` of them, their ``items`` in
    source order; ``done``, if any, is called once a checkpoint holds them."""

    @property
    def rows(self) -> int: ...
    @property
    def items(self) -> Sequence[Encoded]: ...
    @property
    def done(self) -> Callable[[], None] | None: ...


class EncodedRun(Protocol):
    """A build's stages running: its batches in source order, and where a sharded
    index trains and encodes while they are written."""

    @property
    def batches(self) -> Iterator[EncodedBatch]: ...
    @property
    def index_runner(self) -> Runner: ...


class BuildExecutor(Protocol):
    """What runs a build's stages up to the vectors somewhere else (a
    :class:`~restyle.RayExecutor`): the catalog writes what it hands back
    with the write loop of an in-process build. ``directory`` is the
    catalog's; ``stored_images`` opens, where it is called, the lookup of the
    images the catalog holds (None: it holds none)."""

    def encoded_listings(
        self, source: Path, encoder: Encoder, *, base: Path, images_root: Path,
        limits: ListingLimits, fetcher: Fetcher | None, batch_size: int,
        checkpoint_every: int, directory: Path,
        stored_images: Callable[[], CurrentImages] | None,
    ) -> AbstractContextManager[EncodedRun]: ...


#: Executors ``build(executor=NAME)`` knows by name, each a factory of its
#: default. The store sits below Ray and never imports it: restyle names
#: ``"ray"`` here when it is imported.
EXECUTORS: dict[str, Callable[[], BuildExecutor]] = {}


def build_executor(executor: str | BuildExecutor) -> BuildExecutor:
    """``executor`` as a BuildExecutor: a name of :data:`EXECUTORS`, or one already."""
    if isinstance(executor, str):
        if executor in EXECUTORS:
            return EXECUTORS[executor]()
    elif callable(getattr(executor, "encoded_listings", None)):
        return executor
    names = "".join(f"{name!r} or " for name in EXECUTORS)
    raise ConfigurationError(
        f"executor must be None, {names}a restyle.RayExecutor, got {executor!r}"
    )


class Catalog:
    """A local catalog directory, opened for one encoder model.

    Opened to search (the default unless ``create=True``), the database is
    opened read-only and nothing in the directory is written; building or
    removing reopens it for writing.
    """

    def __init__(self, directory: str | Path, *, model_id: str, dim: int,
                 create: bool = False, readonly: bool | None = None):
        if create and readonly:
            raise ValueError("a catalog opened with create=True cannot be read-only")
        self.directory = Path(directory).expanduser()
        self.readonly = (not create) if readonly is None else readonly
        self._db_path = self.directory / DB_NAME
        self._lock = threading.RLock()
        # Recent vector searches; any change to the rows or the index starts a
        # new generation, which makes them stale.
        self._recent: OrderedDict[bytes, _Neighbours] = OrderedDict()
        self._generation = 0
        #: Where a sharded index trains and encodes (Ray tasks in a Ray build).
        self.index_runner: Runner = run_here
        if not os.path.lexists(self._db_path):
            if not create:
                raise CatalogError(_missing(self.directory))
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CatalogError(f"cannot create the catalog directory {self.directory}: "
                                   f"{exc.strerror or exc}") from exc
        else:
            problem = _file_problem(self._db_path)
            if problem is not None:
                raise CatalogError(problem)
        self._db = _connect(self._db_path, readonly=self.readonly)
        if not self.readonly:
            _remove_stale_temporaries(self.directory)
        try:
            self._open(model_id, dim)
        except BaseException:
            self._db.close()
            raise

    def _open(self, model_id: str, dim: int) -> None:
        with self._database() as db:
            if not self.readonly:
                _ensure_schema(db, self._db_path)
            _schema_version(db, self._db_path)
            stored_model, stored_dim = _meta(db, "model_id"), _meta(db, "dim")
            if stored_model is None:
                if self.readonly:
                    raise CatalogError(
                        f"catalog database {self._db_path} records no model: it is damaged "
                        "or was never finished. Build the catalog again into a new directory"
                    )
                with db:
                    db.execute("INSERT INTO meta VALUES ('model_id', ?)", (model_id,))
                    db.execute("INSERT OR REPLACE INTO meta VALUES ('dim', ?)", (str(dim),))
            elif stored_model != model_id or stored_dim != str(dim):
                raise CatalogError(
                    f"the catalog at {self.directory} was built with model {stored_model} "
                    f"(dimension {stored_dim}); this encoder is {model_id} (dimension {dim}). "
                    "Use the same model, or rebuild the catalog into a new directory"
                )
            # Rows are counted before the index is read: a writer saves the index
            # before it commits rows, so the index read later holds at least these.
            (rows,) = db.execute("SELECT COUNT(*) FROM items").fetchone()
        self.model_id = model_id
        self.dim = dim
        self.index = self._load_index(int(rows))

    def _load_index(self, rows: int) -> VectorIndex | ShardedIndex:
        path = self.directory / INDEX_NAME
        repair = (f"run 'restyle catalog repair --catalog {self.directory}' to rebuild it "
                  "from the vectors stored in the database")
        if not index_present(path):
            if rows:
                raise CatalogError(
                    f"the vector index {path} is missing but the catalog has {rows} listings; "
                    f"{repair}"
                )
            return VectorIndex(self.dim)
        try:
            index = load_index(path, dim=self.dim, exact=self._exact_vectors)
        except CatalogError as exc:
            raise CatalogError(f"{exc}; {repair}") from exc
        if len(index) < rows:
            raise CatalogError(
                f"the vector index {path} holds {len(index)} vectors for {rows} listings: it is "
                f"stale or damaged; {repair}"
            )
        return index

    @classmethod
    def open(cls, directory: str | Path, encoder: Encoder, *, create: bool = False,
             readonly: bool | None = None) -> Catalog:
        return cls(directory, model_id=encoder.model_id, dim=encoder.dim, create=create,
                   readonly=readonly)

    @staticmethod
    def exists(directory: str | Path) -> bool:
        """Whether ``directory`` holds a catalog database (sound or not)."""
        return os.path.lexists(Path(directory).expanduser() / DB_NAME)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        with self._database() as db:
            (count,) = db.execute("SELECT COUNT(*) FROM items").fetchone()
        return int(count)

    def __repr__(self) -> str:
        try:
            items: object = len(self)
        except CatalogError:
            items = "?"
        return f"<Catalog {str(self.directory)!r} model={self.model_id!r} items={items}>"

    @contextmanager
    def _database(self) -> Iterator[sqlite3.Connection]:
        """The connection, under the lock, with database errors as CatalogErrors."""
        with self._lock:
            try:
                yield self._db
            except sqlite3.DatabaseError as exc:
                raise CatalogError(_database_error(self._db_path, exc)) from exc

    def _writable(self) -> None:
        """Reopen the database for writing if it was opened read-only."""
        with self._lock:
            if not self.readonly:
                return
            db = _connect(self._db_path, readonly=False)
            try:
                _ensure_schema(db, self._db_path)
            except BaseException:
                db.close()
                raise
            self._db.close()
            self._db = db
            self.readonly = False
            _remove_stale_temporaries(self.directory)

    # -- building ------------------------------------------------------------

    def build(
        self,
        source: str | Path,
        encoder: Encoder,
        *,
        batch_size: int = 32,
        checkpoint_every: int = 2000,
        progress: bool | None = None,
        images_root: str | Path | None = None,
        limits: ListingLimits | None = None,
        fetcher: Fetcher | None = None,
        executor: str | BuildExecutor | None = None,
    ) -> BuildReport:
        """Add the listings of a JSONL, CSV or Parquet file (see docs/catalog.md).

        The file is streamed, never held in memory. Bad rows are skipped and
        written to ``rejected.jsonl`` in the catalog directory with the reason;
        rows already stored with the same image and vector are skipped. Local
        images must lie in the listings file's folder, or in ``images_root``
        if given; image URLs are fetched through ``fetcher`` (default: a
        ``Fetcher()`` with its limits and address guards). Work is saved every
        ``checkpoint_every`` listings (and at least once a minute): a build that
        is interrupted or fails keeps everything up to its last checkpoint, and
        running it again carries on from there.

        ``executor="ray"`` (or a :class:`~restyle.RayExecutor`) runs the same
        stages on a Ray cluster and gives the same catalog (see docs/scale.md).
        """
        if encoder.model_id != self.model_id:
            raise CatalogError(
                f"encoder {encoder.model_id} does not match the catalog's model {self.model_id}"
            )
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        limits = limits or ListingLimits()
        source = Path(source).expanduser()
        base = source.absolute().parent
        root = base
        if images_root is not None:
            root = Path(images_root).expanduser().absolute()
            if not root.is_dir():
                raise CatalogError(f"images root {images_root} is not a directory")
        self._writable()
        run: AbstractContextManager[EncodedRun]
        if executor is None:
            run = self._encoded_here(source, encoder, base=base, images_root=root,
                                     limits=limits, fetcher=fetcher, batch_size=batch_size)
        else:
            run = build_executor(executor).encoded_listings(
                source, encoder, base=base, images_root=root, limits=limits, fetcher=fetcher,
                batch_size=batch_size, checkpoint_every=checkpoint_every,
                directory=self.directory,
                stored_images=partial(stored_images, self._db_path) if len(self) else None,
            )
        report = BuildReport()
        rejected = _RejectedFile(self.directory)
        writer = _Writer(self, encoder, report, rejected, fetcher=fetcher, limits=limits,
                         checkpoint_every=checkpoint_every)
        bar = progress_bar(total=None, desc="Building catalog", unit="row", enabled=progress)
        try:
            with run as encoded:
                self._run_index_on(encoded.index_runner)
                try:
                    for batch in encoded.batches:
                        writer.write(batch)
                        bar.update(batch.rows)
                    writer.checkpoint()
                finally:
                    self._run_index_on(run_here)
        except BaseException:
            self._abandon()
            rejected.discard()
            raise
        finally:
            bar.close()
        report.rejected_file = rejected.finish()
        return report

    @contextmanager
    def _encoded_here(
        self, source: Path, encoder: Encoder, *, base: Path, images_root: Path,
        limits: ListingLimits, fetcher: Fetcher | None, batch_size: int,
    ) -> Iterator[EncodedRun]:
        """The build's stages in this process: the next batch is read, loaded
        and decoded in a thread while the encoder works on this one."""
        prepared = self._prepare(
            read_listings(source, limits=limits), base=base, images_root=images_root,
            limits=limits, fetcher=fetcher, batch_size=batch_size, side=draft_side(encoder),
        )
        with _read_ahead(prepared) as ready:
            yield _Run(batches=_encoded(ready, encoder), index_runner=run_here)

    def _run_index_on(self, runner: Runner) -> None:
        """Where the index trains and encodes from now on."""
        self.index_runner = runner
        if isinstance(self.index, ShardedIndex):
            self.index.runner = runner

    def _prepare(
        self, rows: Iterable[SourceRow], *, base: Path, images_root: Path,
        limits: ListingLimits, fetcher: Fetcher | None, batch_size: int, side: int,
    ) -> Iterator[_Batch]:
        """Validate, load and decode the rows, a batch at a time, skipping those
        already stored with the same image."""
        checked = (validate_listing(r, base=base, images_root=images_root, limits=limits)
                   for r in rows)
        for span in _spans(checked, batch_size):
            rejected = [r for r in span if isinstance(r, Rejection)]
            skipped: list[StoredAlready] = []
            decoded: list[DecodedListing] = []
            listings = [r for r in span if isinstance(r, ListingRow)]
            for result in load_unstored(listings, current=self._current_images,
                                        fetcher=fetcher, limits=limits, side=side):
                if isinstance(result, Rejection):
                    rejected.append(result)
                elif isinstance(result, StoredAlready):
                    skipped.append(result)
                else:
                    decoded.append(result)
            yield _Batch(rows=len(span), decoded=decoded, skipped=skipped, rejected=rejected)

    def _current_images(self, listing_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """The image and its sha256 of each of these listings stored with its
        vector in the index."""
        found: dict[str, tuple[str, str]] = {}
        with self._database() as db:
            for item_id, listing_id, image, sha256 in _where_in(
                    db, "SELECT id, listing_id, image_path, image_sha256 FROM items "
                    "WHERE listing_id", listing_ids):
                if self.index.reconstruct(item_id) is not None:
                    found[listing_id] = (image, sha256)
        return found

    def _checkpoint(self) -> None:
        """Make the build so far durable: the index first, then the rows.

        A crash between the two leaves vectors without rows, which searches
        ignore and the next build overwrites.
        """
        with self._database() as db:
            # Past SHARDED_ABOVE vectors the index becomes a sharded IVF-PQ one.
            self.index = grow_index(
                self.index, vectors=lambda: _stored_vectors(db, self.dim),
                sample=lambda n: _sample_vectors(db, self.dim, n), exact=self._exact_vectors,
                runner=self.index_runner,
            )
            save_index(self.index, self.directory / INDEX_NAME)
            db.commit()

    def _changed(self) -> None:
        """Rows or vectors changed: recent searches no longer hold."""
        with self._lock:
            self._generation += 1
            self._recent.clear()
    def _exact_vectors(self, ids: np.ndarray) -> np.ndarray:
        """The vectors stored for ``ids`` (NaN rows for ids without one): what a
        sharded index re-ranks with."""
        with self._database() as db:
            return _vectors_by_id(db, ids, self.dim)

    def _abandon(self) -> None:
        """Forget the work since the last checkpoint, in the database and in memory."""
        self._changed()
        with self._lock:
            try:
                self._db.rollback()
            except sqlite3.Error as exc:
                logger.warning("could not roll back the catalog database: %s", exc)
            path = self.directory / INDEX_NAME
            self.index = (load_index(path, dim=self.dim, exact=self._exact_vectors)
                          if index_present(path) else VectorIndex(self.dim))

    def _update_metadata(self, row: ListingRow) -> None:
        self._changed()
        with self._database() as db:
            db.execute(
                f"UPDATE items SET {_SET_METADATA} WHERE listing_id=?",
                (*_columns(row)[1:], row.listing_id),
            )

    def _store(self, kept: Sequence[DecodedListing | LoadedImage], vectors: np.ndarray,
               report: BuildReport) -> None:
        """Write a batch's rows and vectors, uncommitted until the next checkpoint."""
        if not kept:
            return
        self._changed()
        by_id: dict[int, np.ndarray] = {}  # a listing twice in one batch: the last row wins
        with self._database() as db:
            for item, vector in zip(kept, vectors, strict=True):
                row = item.row
                existing = db.execute(
                    "SELECT id FROM items WHERE listing_id = ?", (row.listing_id,)
                ).fetchone()
                blob = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
                if existing is None:
                    cur = db.execute(_INSERT, (*_columns(row), item.sha256, blob))
                    item_id = int(cur.lastrowid or 0)
                    report.added += 1
                else:
                    db.execute(_UPDATE, (*_columns(row)[1:], item.sha256, blob, row.listing_id))
                    item_id = int(existing[0])
                    report.updated += 1
                by_id[item_id] = vector
            self.index.upsert(list(by_id), np.stack(list(by_id.values())))

    def remove(self, listing_ids: Sequence[str]) -> int:
        """Remove listings (rows and vectors) without a rebuild; returns how many."""
        self._writable()
        with self._database() as db:
            ids = []
            for listing_id in listing_ids:
                row = db.execute(
                    "SELECT id FROM items WHERE listing_id = ?", (listing_id,)
                ).fetchone()
                if row is not None:
                    ids.append(int(row[0]))
            if not ids:
                return 0
            try:
                db.executemany("DELETE FROM items WHERE id = ?", [(i,) for i in ids])
                db.commit()
            except BaseException:
                db.rollback()
                raise
            # Rows first: a crash before the index is saved leaves vectors
            # without rows, which searches ignore and repair drops.
            self._changed()
            self.index.remove(ids)
            save_index(self.index, self.directory / INDEX_NAME)
        return len(ids)

    # -- reading -------------------------------------------------------------

    def listing(self, item_id: int) -> Listing | None:
        with self._database() as db:
            row = db.execute(f"{_SELECT} WHERE id = ?", (item_id,)).fetchone()
        return None if row is None else _to_listing(row)

    def search_vector(
        self, vector: np.ndarray, query: Query | None = None, *, limit: int = 20
    ) -> list[tuple[Listing, float]]:
        """Nearest listings to ``vector`` that match ``query``'s filters, best first.

        With a query, the ``max(5 * limit, 50)`` nearest listings are filtered.
        Searches repeated with the same vector (as one analysis does) reuse
        the first one's neighbours and listings while the catalog is unchanged.
        """
        if len(self.index) == 0:
            return []
        wanted = limit if query is None else max(limit * 5, 50)
        near = self._nearest(vector, wanted)
        ids = near.ids[:wanted]
        listings = self._listings_of(near, ids)
        found: list[tuple[Listing, float]] = []
        for score, item_id in zip(near.scores[:wanted], ids.tolist(), strict=True):
            listing = listings[item_id]
            if listing is None or (query is not None and not _matches(listing, query)):
                continue
            found.append((listing, float(score)))
            if len(found) >= limit:
                break
        return found

    def _nearest(self, vector: np.ndarray, wanted: int) -> _Neighbours:
        """At least ``wanted`` nearest items (all there are, if fewer), searched
        once per vector while the catalog is unchanged."""
        key = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
        with self._lock:
            generation = self._generation
            near = self._recent.get(key)
            if near is not None and near.generation == generation and (
                    len(near.ids) >= wanted or len(near.ids) >= len(self.index)):
                self._recent.move_to_end(key)
                return near
        scores, ids = self.index.search(vector, max(wanted, SEARCH_POOL))
        found = ids[0] >= 0
        near = _Neighbours(generation=generation, ids=ids[0][found], scores=scores[0][found])
        with self._lock:
            if self._generation == generation:
                self._recent[key] = near
                self._recent.move_to_end(key)
                while len(self._recent) > _RECENT_SEARCHES:
                    self._recent.popitem(last=False)
        return near

    def _listings_of(self, near: _Neighbours, ids: np.ndarray) -> dict[int, Listing | None]:
        """The Listings of ``ids`` (None where the database has no row), read
        in one query for those ``near`` has not read yet."""
        with self._lock:
            missing = [i for i in ids.tolist() if i not in near.listings]
            if missing:
                rows = self._rows(missing)
                for item_id in missing:
                    row = rows.get(item_id)
                    near.listings[item_id] = None if row is None else _to_listing(row)
            return near.listings

    def _rows(self, item_ids: Sequence[int]) -> dict[int, Sequence[Any]]:
        """Database rows by item id, for those that exist."""
        rows: dict[int, Sequence[Any]] = {}
        with self._database() as db:
            for row in _where_in(db, f"{_SELECT} WHERE id", item_ids):
                rows[int(row[0])] = row
        return rows

    def search_text(self, query: Query) -> list[Listing]:
        """Listings whose title, brand or category share words with the query."""
        words = [w for w in query.text.lower().split() if len(w) > 1][:12]
        with self._database() as db:
            rows = db.execute(_SELECT).fetchall()
        scored = []
        for row in rows:
            listing = _to_listing(row)
            if not _matches(listing, query):
                continue
            haystack = " ".join(
                filter(None, [listing.title, listing.brand, listing.category])
            ).lower()
            hits = sum(1 for w in words if w in haystack)
            if hits or not words:
                scored.append((hits, listing))
        scored.sort(key=lambda pair: -pair[0])
        return [listing for _, listing in scored[: query.limit]]

    def vectors_for(self, listing_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The index's vector of each listing that has one, by listing id."""
        item_ids: dict[str, int] = {}
        with self._database() as db:
            item_ids.update(_where_in(db, "SELECT listing_id, id FROM items WHERE listing_id",
                                      listing_ids))
        result: dict[str, np.ndarray] = {}
        for listing_id, item_id in item_ids.items():
            vector = self.index.reconstruct(int(item_id))
            if vector is not None:
                result[listing_id] = vector
        return result

    # -- inspecting and repairing ---------------------------------------------

    @classmethod
    def stats(cls, directory: str | Path) -> CatalogStats:
        """Listings, vectors, model, size on disk and listings per category,
        read without an encoder and without writing anything."""
        directory = Path(directory).expanduser()
        db_path = directory / DB_NAME
        if not os.path.lexists(db_path):
            raise CatalogError(_missing(directory))
        problem = _file_problem(db_path)
        if problem is not None:
            raise CatalogError(problem)
        db = _connect(db_path, readonly=True)
        try:
            version = _schema_version(db, db_path)
            model_id, dim = _meta(db, "model_id"), _meta(db, "dim")
            (rows,) = db.execute("SELECT COUNT(*) FROM items").fetchone()
            categories = {
                str(name): int(count) for name, count in db.execute(
                    "SELECT COALESCE(category, ''), COUNT(*) FROM items GROUP BY 1 "
                    "ORDER BY 2 DESC, 1"
                )
            }
        except sqlite3.DatabaseError as exc:
            raise CatalogError(_database_error(db_path, exc)) from exc
        finally:
            db.close()
        index_path = directory / INDEX_NAME
        vectors = 0
        if index_present(index_path) and dim is not None and dim.isdigit():
            vectors = len(load_index(index_path, dim=int(dim)))
        size = sum(p.stat().st_size for p in directory.iterdir()
                   if p.is_file() and p.name.startswith((DB_NAME, INDEX_NAME, REJECTED_NAME)))
        shards = index_path.with_suffix(".shards")
        size += sum(p.stat().st_size for p in shards.iterdir()) if shards.is_dir() else 0
        return CatalogStats(
            directory=directory, rows=int(rows), vectors=vectors, model_id=model_id or "",
            dim=int(dim) if dim and dim.isdigit() else 0, schema_version=version,
            bytes_on_disk=size, categories=categories,
        )

    @classmethod
    def check(cls, directory: str | Path) -> CatalogCheck:
        """Check a catalog thoroughly without writing to it: the database's pages,
        schema and model, every stored vector, and the index against the rows.
        Each problem found says what to do about it."""
        directory = Path(directory).expanduser()
        db_path = directory / DB_NAME
        if not os.path.lexists(db_path):
            return CatalogCheck(directory=directory, problems=(_missing(directory),))
        problem = _file_problem(db_path)
        if problem is not None:
            return CatalogCheck(directory=directory, problems=(problem,))
        try:
            db = _connect(db_path, readonly=True)
        except CatalogError as exc:
            return CatalogCheck(directory=directory, problems=(str(exc),))
        try:
            return _check(directory, db)
        except sqlite3.DatabaseError as exc:
            return CatalogCheck(directory=directory,
                                problems=(_database_error(db_path, exc),))
        finally:
            db.close()

    @classmethod
    def repair(
        cls,
        directory: str | Path,
        encoder: Encoder | None = None,
        *,
        fetcher: Fetcher | None = None,
        limits: ListingLimits | None = None,
        batch_size: int = 32,
    ) -> RepairReport:
        """Rebuild the vector index from the vectors stored in the database.

        A listing without a stored vector gets the one the old index holds, if
        it can still be read, or else is re-embedded from its image with
        ``encoder`` (which must be the catalog's model). A listing whose image
        is gone is removed and reported. The database itself cannot be
        repaired: a damaged one is a :class:`CatalogError` saying to rebuild.
        """
        directory = Path(directory).expanduser()
        db_path = directory / DB_NAME
        if not os.path.lexists(db_path):
            raise CatalogError(_missing(directory))
        problem = _file_problem(db_path)
        if problem is not None:
            raise CatalogError(f"{problem} (repair rebuilds the vector index, not the database)")
        db = _connect(db_path, readonly=False)
        try:
            return _repair(directory, db, encoder, fetcher=fetcher,
                           limits=limits or ListingLimits(), batch_size=batch_size)
        except sqlite3.DatabaseError as exc:
            raise CatalogError(_beyond_repair(db_path, str(exc))) from exc
        finally:
            db.close()


# -- opening -------------------------------------------------------------------


def _missing(directory: Path) -> str:
    return (f"no catalog at {directory}; build one with "
            f"'restyle catalog build LISTINGS.jsonl --catalog {directory}'")


def _database_error(path: Path, exc: sqlite3.DatabaseError) -> str:
    name = getattr(exc, "sqlite_errorname", "")
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in str(exc):
        return f"catalog database {path} is busy (another process is writing it): try again"
    if name.startswith(("SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_READONLY")):
        return f"catalog database {path} cannot be opened or written: {exc}"
    return (f"catalog database {path} is damaged ({exc}); run 'restyle catalog check --catalog "
            f"{path.parent}', and rebuild the catalog from its listings file if it is")


def _beyond_repair(path: Path, detail: str) -> str:
    return (f"catalog database {path} is damaged ({detail}); repair rebuilds the vector index, "
            "not the database: rebuild the catalog from its listings file into a new directory")


def _file_problem(path: Path) -> str | None:
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


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
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
        raise CatalogError(_database_error(path, exc)) from exc


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


def _meta(db: sqlite3.Connection, key: str) -> str | None:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def _schema_version(db: sqlite3.Connection, path: Path) -> int:
    if not {"meta", "items"} <= _tables(db):
        raise CatalogError(
            f"catalog database {path} is not a restyle catalog (it has no meta or items "
            "table); build the catalog into an empty directory"
        )
    stored = _meta(db, "schema_version")
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


def _ensure_schema(db: sqlite3.Connection, path: Path) -> None:
    """Create the tables in a new database, or bring a catalog written by an
    older restyle up to :data:`SCHEMA_VERSION`; refuse any other database."""
    if not _tables(db):
        db.executescript(_SCHEMA)
    else:
        _schema_version(db, path)  # not a catalog, or a newer one: refused before any change
    columns = {row[1] for row in db.execute("PRAGMA table_info(items)")}
    with db:
        if "vector" not in columns:
            db.execute("ALTER TABLE items ADD COLUMN vector BLOB")
        if _meta(db, "schema_version") != str(SCHEMA_VERSION):
            db.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)",
                       (str(SCHEMA_VERSION),))


# -- check and repair -------------------------------------------------------------


def _temporary_patterns() -> list[re.Pattern[str]]:
    return [temporary_pattern(_REJECTED_STEM, ".jsonl")]


def _stale_temporaries(directory: Path) -> list[Path]:
    """Temporary files that restyle's own atomic writes (the index, its shards,
    ``rejected.jsonl``) left in ``directory`` when stopped midway, and that no
    live writer holds. Nothing is written."""
    return [*stale_index_temporaries(directory / INDEX_NAME),
            *stale_temporaries(directory, _temporary_patterns())]


def _remove_stale_temporaries(directory: Path) -> list[Path]:
    """Remove :func:`_stale_temporaries` (a writer's job: opening for write,
    repair, every save of the index)."""
    return [*remove_stale_index_temporaries(directory / INDEX_NAME),
            *remove_stale_temporaries(directory, _temporary_patterns())]


def _check(directory: Path, db: sqlite3.Connection) -> CatalogCheck:
    db_path = directory / DB_NAME
    problems: list[str] = []
    notes: list[str] = []
    repair = f"run 'restyle catalog repair --catalog {directory}'"
    found = [str(r[0]) for r in db.execute("PRAGMA quick_check(5)")]
    if found != ["ok"]:
        return CatalogCheck(directory=directory, problems=(
            f"catalog database {db_path} is damaged ({'; '.join(found)}); rebuild the catalog "
            "from its listings file into a new directory",
        ))
    try:
        version = _schema_version(db, db_path)
    except CatalogError as exc:
        return CatalogCheck(directory=directory, problems=(str(exc),))
    model_id, dim_text = _meta(db, "model_id"), _meta(db, "dim")
    if model_id is None or dim_text is None or not dim_text.isdigit() or int(dim_text) < 1:
        return CatalogCheck(directory=directory, problems=(
            f"catalog database {db_path} records no model or dimension; build the catalog "
            "again into a new directory",
        ))
    dim = int(dim_text)
    started = _meta(db, _REPAIR_STARTED)
    if started is not None:
        problems.append(
            f"a repair started at {started} was stopped before it finished (killed, or the "
            "machine went down): the catalog is as it was before that repair, which did not "
            f"happen; {repair} again to finish it")
    row_ids = np.array([r[0] for r in db.execute("SELECT id FROM items ORDER BY id")],
                       dtype=np.int64)
    if version >= 2:
        stored = unusable = 0
        for (blob,) in db.execute("SELECT vector FROM items WHERE vector IS NOT NULL"):
            stored += 1
            unusable += _vector_from_blob(blob, dim) is None
        if unusable:
            problems.append(f"{unusable} listings have a damaged vector in the database; {repair}"
                            " to re-embed them")
        if stored < len(row_ids) and started is None:
            notes.append(f"{len(row_ids) - stored} listings have no vector stored in the "
                         f"database (built before schema version 2); {repair} to store them")
        elif stored < len(row_ids):
            notes.append(f"{len(row_ids) - stored} listings have no vector stored in the "
                         "database yet: the repair that was stopped had not stored them")
    else:
        notes.append(f"schema version {version}: vectors are not stored in the database; "
                     f"{repair} to upgrade it")
    vectors: int | None = None
    index_path = directory / INDEX_NAME
    if not index_present(index_path):
        if len(row_ids):
            problems.append(f"the vector index {index_path} is missing; {repair} to rebuild it")
    else:
        try:
            index = load_index(index_path, dim=dim)
        except CatalogError as exc:
            problems.append(f"{exc}; {repair} to rebuild it")
        else:
            vectors = len(index)
            index_ids = index.ids()
            missing = int(np.count_nonzero(~np.isin(row_ids, index_ids)))
            stray = int(np.count_nonzero(~np.isin(index_ids, row_ids)))
            if missing:
                problems.append(f"{missing} listings have no vector in {index_path}; {repair}")
            if stray:
                notes.append(f"{stray} vectors in the index belong to no listing (left by an "
                             "interrupted build or removal); harmless, and repair drops them")
    left = _stale_temporaries(directory)
    if left:
        notes.append(
            f"{len(left)} temporary files left by a save that was stopped midway "
            f"({', '.join(str(p.relative_to(directory)) for p in left[:5])}"
            f"{', ...' if len(left) > 5 else ''}); harmless, and repair or the next build "
            "removes them")
    return CatalogCheck(directory=directory, problems=tuple(problems), notes=tuple(notes),
                        rows=len(row_ids), vectors=vectors, model_id=model_id)


def _vector_from_blob(blob: object, dim: int) -> np.ndarray | None:
    if not isinstance(blob, bytes) or len(blob) != 4 * dim:
        return None
    vector = np.frombuffer(blob, dtype=np.float32)
    return vector if vector_problem(vector, dim) is None else None


def _where_in(db: sqlite3.Connection, query: str, keys: Sequence[Any]) -> Iterator[Any]:
    """The rows of ``query`` (which ends with the column to match, as in
    ``"SELECT ... WHERE id"``) for each of ``keys``, asked a few hundred at a time."""
    for chunk in batches(list(keys), _ROWS_PER_QUERY):
        marks = ", ".join("?" * len(chunk))
        yield from db.execute(f"{query} IN ({marks})", chunk).fetchall()


def _vectors_by_id(db: sqlite3.Connection, ids: np.ndarray, dim: int) -> np.ndarray:
    """The stored vectors of ``ids``, in order; NaN rows for ids without one."""
    out = np.full((len(ids), dim), np.nan, np.float32)
    where = {int(item_id): row for row, item_id in enumerate(ids)}
    for item_id, blob in _where_in(db, "SELECT id, vector FROM items WHERE id", list(where)):
        vector = _vector_from_blob(blob, dim)
        if vector is not None:
            out[where[int(item_id)]] = vector
    return out


def _stored_vectors(db: sqlite3.Connection, dim: int,
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
                 if (v := _vector_from_blob(blob, dim)) is not None]
        if found:
            yield (np.array([i for i, _ in found], dtype=np.int64),
                   np.stack([v for _, v in found]))


def _sample_vectors(db: sqlite3.Connection, dim: int, n: int, seed: int = 0) -> np.ndarray:
    """About ``n`` stored vectors drawn at random (by id: ids are nearly dense)."""
    (top,) = db.execute("SELECT COALESCE(MAX(id), 0) FROM items").fetchone()
    rng = np.random.default_rng(seed)
    wanted = rng.choice(int(top), size=min(int(top), 2 * n), replace=False) + 1
    found = [v for v in _vectors_by_id(db, wanted, dim) if np.isfinite(v[0])]
    if len(found) < n and len(wanted) < top:  # ids with gaps: take them all in order
        found = [v for _, chunk in _stored_vectors(db, dim) for v in chunk]
        found = [found[i] for i in sorted(rng.choice(len(found), size=min(n, len(found)),
                                                     replace=False))]
    return np.stack(found[:n]) if found else np.zeros((0, dim), np.float32)


def _repair(directory: Path, db: sqlite3.Connection, encoder: Encoder | None, *,
            fetcher: Fetcher | None, limits: ListingLimits, batch_size: int) -> RepairReport:
    db_path = directory / DB_NAME
    found = [str(r[0]) for r in db.execute("PRAGMA quick_check(5)")]
    if found != ["ok"]:
        raise CatalogError(_beyond_repair(db_path, "; ".join(found)))
    _ensure_schema(db, db_path)
    model_id, dim_text = _meta(db, "model_id"), _meta(db, "dim")
    if model_id is None or dim_text is None or not dim_text.isdigit():
        raise CatalogError(f"catalog database {db_path} records no model; build the catalog "
                           "again into a new directory")
    dim = int(dim_text)
    removed_temporaries = _remove_stale_temporaries(directory)
    with db:  # cleared in the last commit: a repair stopped before it is one check reports
        db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                   (_REPAIR_STARTED, datetime.now(timezone.utc).isoformat(timespec="seconds")))
    try:
        report = _rebuild(directory, db, encoder, dim, model_id, fetcher=fetcher,
                          limits=limits, batch_size=batch_size)
    except Exception:
        # A repair that failed and said why changed nothing: it was not stopped.
        db.rollback()
        with db:
            db.execute("DELETE FROM meta WHERE key = ?", (_REPAIR_STARTED,))
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
    from_database = from_old = 0
    to_embed: list[int] = []
    cursor = db.execute("SELECT id, vector FROM items ORDER BY id")
    while chunk := cursor.fetchmany(1024):
        ids: list[int] = []
        vectors: list[np.ndarray] = []
        for item_id, blob in chunk:
            vector = _vector_from_blob(blob, dim)
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
    removed: list[tuple[str, str]] = []
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
    else:
        reembedded = 0
    dropped = 0 if old is None else int(np.count_nonzero(~np.isin(old.ids(), index.ids())))
    rebuilt = grow_index(index, vectors=lambda: _stored_vectors(db, dim),
                         sample=lambda n: _sample_vectors(db, dim, n),
                         exact=lambda ids: _vectors_by_id(db, ids, dim))
    # Index first, then the rows: a crash between leaves stray vectors, which are harmless.
    save_index(rebuilt, index_path)
    db.execute("DELETE FROM meta WHERE key = ?", (_REPAIR_STARTED,))
    db.commit()
    return RepairReport(directory=directory, from_database=from_database,
                        from_old_index=from_old, reembedded=reembedded, removed=tuple(removed),
                        dropped_vectors=dropped)


def _reembed(db: sqlite3.Connection, index: VectorIndex, item_ids: list[int], encoder: Encoder,
             *, fetcher: Fetcher | None, limits: ListingLimits, batch_size: int,
             removed: list[tuple[str, str]]) -> int:
    done = 0
    for chunk in batches(item_ids, batch_size):
        marks = ", ".join("?" * len(chunk))
        rows = db.execute(f"{_SELECT} WHERE id IN ({marks})", chunk).fetchall()
        by_number = {int(r[0]): r for r in rows}
        listings = [_row_from_db(r) for r in rows]
        decoded: list[DecodedListing] = []
        failed: list[Rejection] = []
        for loaded in load_images(listings, fetcher=fetcher, limits=limits):
            result = loaded if isinstance(loaded, Rejection) else decode_listing_image(
                loaded, limits=limits, side=draft_side(encoder))
            (failed if isinstance(result, Rejection) else decoded).append(result)  # type: ignore[arg-type]
        kept, vectors, unusable = embed_listings(decoded, encoder)
        for item, vector in zip(kept, vectors, strict=True):
            db.execute("UPDATE items SET vector = ?, image_sha256 = ? WHERE id = ?",
                       (vector.tobytes(), item.sha256, item.row.number))
        if kept:
            index.upsert([item.row.number for item in kept], vectors)
        done += len(kept)
        for rejection in [*failed, *unusable]:
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


# -- the build's plumbing ---------------------------------------------------------


class _RejectedFile:
    """``rejected.jsonl``, written as rejections come and put in place at the end
    (a build without rejections removes the previous build's file)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fh: Any = None
        self._tmp: Path | None = None

    def write(self, rejection: Rejection) -> None:
        if self._fh is None:
            # Locked while open: a build killed midway leaves a temporary the
            # next writer removes, but no writer removes a live build's.
            fd, self._tmp = temporary_for(self.directory / _REJECTED_STEM, ".jsonl")
            self._fh = os.fdopen(fd, "w", encoding="utf-8")
        self._fh.write(rejection_json(rejection) + "\n")

    def finish(self) -> Path | None:
        target = self.directory / REJECTED_NAME
        if self._fh is None:
            target.unlink(missing_ok=True)
            return None
        assert self._tmp is not None
        self._fh.flush()
        os.replace(self._tmp, target)
        self._fh.close()
        return target

    def discard(self) -> None:
        if self._fh is not None:
            self._fh.close()
            assert self._tmp is not None
            self._tmp.unlink(missing_ok=True)
            self._fh = None


@dataclass(frozen=True, slots=True)
class _EncodedBatch:
    rows: int
    items: list[Encoded]
    done: Callable[[], None] | None = None


@dataclass(frozen=True, slots=True)
class _Run:
    batches: Iterator[EncodedBatch]
    index_runner: Runner


def _encoded(ready: Iterator[_Batch], encoder: Encoder) -> Iterator[EncodedBatch]:
    """The prepared batches, embedded, each one's items in source order."""
    held: deque[_Batch] = deque()

    def images() -> Iterator[list[Image.Image]]:
        for batch in ready:
            held.append(batch)
            yield [item.image for item in batch.decoded]

    # The encoder is handed the batches as a stream, so it can prepare the
    # next while its model works on this one.
    for answer in encoder.encode_image_batches(images()):
        batch = held.popleft()
        kept, vectors, unusable = checked_embeddings(batch.decoded, answer, encoder)
        items: list[Encoded] = [*batch.skipped, *zip(kept, vectors, strict=True),
                                *batch.rejected, *unusable]
        items.sort(key=_row_number)
        yield _EncodedBatch(rows=batch.rows, items=items)


def _row_number(item: Encoded) -> int:
    if isinstance(item, Rejection):
        return item.row
    return item.row.number if isinstance(item, StoredAlready) else item[0].row.number


class _Writer:
    """The build's one write loop, for batches encoded here or elsewhere.

    Each row is judged against what the rows before it left, as if they had
    been stored one at a time: a row the catalog holds with this image is
    skipped (its metadata updated), the others stored; a row skipped when it
    was loaded whose stored image a row before it changed is embedded here.
    Rejections are written in row order. A checkpoint (one transaction and the
    index saved) comes every ``checkpoint_every`` listings or minute, after
    which the batches it covers are told they are done."""

    def __init__(self, catalog: Catalog, encoder: Encoder, report: BuildReport,
                 rejected: _RejectedFile, *, fetcher: Fetcher | None, limits: ListingLimits,
                 checkpoint_every: int) -> None:
        self.catalog = catalog
        self.encoder = encoder
        self.report = report
        self.rejected = rejected
        self.fetcher = fetcher
        self.limits = limits
        self.checkpoint_every = checkpoint_every
        self.unsaved = 0
        self.saved_at = time.monotonic()
        self.written: list[Callable[[], None]] = []

    def write(self, batch: EncodedBatch) -> None:
        catalog, report = self.catalog, self.report
        pending: dict[str, tuple[LoadedImage | DecodedListing, np.ndarray]] = {}
        rejections: list[Rejection] = []
        embedded = 0

        def flush() -> None:
            if pending:
                kept, vectors = zip(*pending.values(), strict=True)
                catalog._store(list(kept), np.stack(vectors), report)
                pending.clear()

        for item in batch.items:
            if isinstance(item, Rejection):
                rejections.append(item)
                continue
            row, sha256 = (item.row, item.sha256) if isinstance(item, StoredAlready) else (
                item[0].row, item[0].sha256)
            if row.listing_id in pending:
                flush()  # the same listing again: judge it against the first one stored
            image, stored_sha256 = catalog._current_images([row.listing_id]).get(
                row.listing_id, (None, None))
            if (row.image_is_url and image == row.image) or (
                    sha256 is not None and stored_sha256 == sha256):
                catalog._update_metadata(row)
                report.skipped += 1
            elif isinstance(item, StoredAlready):
                # Current when it was loaded; a row before it in this build changed it.
                flush()
                rejections.extend(self._embed_here([row]))
                embedded += 1
            else:
                pending[row.listing_id] = item
                embedded += 1
        flush()
        for rejection in sorted(rejections, key=lambda r: r.row):
            report._reject(rejection)
            self.rejected.write(rejection)
        report.rows += batch.rows
        self.unsaved += embedded
        if batch.done is not None:
            self.written.append(batch.done)
        if self.unsaved >= self.checkpoint_every or time.monotonic() - self.saved_at > 60:
            self.checkpoint()

    def _embed_here(self, rows: list[ListingRow]) -> list[Rejection]:
        """Embed, in this process, rows whose stored image changed after they were loaded."""
        decoded: list[DecodedListing] = []
        failed: list[Rejection] = []
        for loaded in load_images(rows, fetcher=self.fetcher, limits=self.limits):
            result = loaded if isinstance(loaded, Rejection) else decode_listing_image(
                loaded, limits=self.limits, side=draft_side(self.encoder))
            if isinstance(result, Rejection):
                failed.append(result)
            else:
                decoded.append(result)
        kept, vectors, unusable = embed_listings(decoded, self.encoder)
        self.catalog._store(kept, vectors, self.report)
        return [*failed, *unusable]

    def checkpoint(self) -> None:
        self.catalog._checkpoint()
        for done in self.written:
            done()
        self.written.clear()
        self.unsaved, self.saved_at = 0, time.monotonic()


def stored_images(db_path: Path) -> CurrentImages:
    """The lookup a build's load stage asks before it loads an image: which
    listings the catalog database at ``db_path`` holds with a vector, with
    which image. Opened read-only where it is called (a Ray build calls it on
    an actor on the driver's node)."""
    db = _connect(db_path, readonly=True)

    def current(listing_ids: Sequence[str]) -> Mapping[str, tuple[str, str]]:
        return {listing_id: (image, sha256) for listing_id, image, sha256 in _where_in(
            db, "SELECT listing_id, image_path, image_sha256 FROM items "
            "WHERE vector IS NOT NULL AND listing_id", listing_ids)}

    return current


def _spans(items: Iterable[ListingRow | Rejection], size: int) -> Iterator[list[Any]]:
    """Contiguous runs of rows holding ``size`` listings, or :data:`_MAX_SPAN` rows."""
    span: list[ListingRow | Rejection] = []
    listings = 0
    for item in items:
        span.append(item)
        listings += isinstance(item, ListingRow)
        if listings >= size or len(span) >= _MAX_SPAN:
            yield span
            span, listings = [], 0
    if span:
        yield span


_DONE = object()


@contextmanager
def _read_ahead(items: Iterator[_T]) -> Iterator[Iterator[_T]]:
    """``items`` produced one step ahead in a thread: the next batch's images
    load and decode while the encoder works on this one. Bounded: one item
    waits at most."""
    slot: queue.Queue[Any] = queue.Queue(maxsize=1)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                slot.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
        except BaseException as exc:
            put((_DONE, exc))
            return
        put((_DONE, None))

    thread = threading.Thread(target=produce, name="restyle-catalog-prepare", daemon=True)
    thread.start()

    def consume() -> Iterator[_T]:
        while True:
            item, error = slot.get()
            if error is not None:
                raise error
            if item is _DONE:
                return
            yield item

    try:
        yield consume()
    finally:
        stop.set()
        while thread.is_alive():
            # Drain the slot so a producer blocked on it sees the stop.
            with suppress(queue.Empty):
                slot.get(timeout=0.05)
        thread.join()


# -- rows and listings --------------------------------------------------------------


def _columns(row: ListingRow) -> tuple[Any, ...]:
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


def _to_listing(row: Sequence[Any]) -> Listing:
    _, listing_id, title, brand, category, condition, price, currency, url, image, sold = row
    if image.lower().startswith(("http://", "https://")):
        image_url = image
    else:
        path = Path(image)
        image_url = (path if path.is_absolute() else path.resolve()).as_uri()
    return Listing(
        marketplace=MARKETPLACE_NAME,
        listing_id=listing_id,
        title=title,
        price=Money(amount=Decimal(price), currency=currency) if price is not None else None,
        url=url,
        image_url=image_url,
        brand=brand,
        category=category,
        condition=Condition(condition),
        sold=None if sold is None else bool(sold),
    )


def _norm(text: str | None) -> str:
    return (text or "").strip().lower()


def _matches(listing: Listing, query: Query) -> bool:
    if query.brand and _norm(listing.brand) != _norm(query.brand):
        return False
    if query.category and _norm(listing.category) != _norm(query.category):
        return False
    if listing.price is not None:
        if query.currency and listing.price.currency != query.currency:
            return False
        if query.min_price is not None and listing.price.amount < query.min_price:
            return False
        if query.max_price is not None and listing.price.amount > query.max_price:
            return False
    return query.condition is None or listing.condition is query.condition

"""The local catalog: listings in SQLite, their image vectors in a faiss index.

One directory holds ``catalog.sqlite`` and ``vectors.faiss``. Opening checks
both files before trusting them; a catalog opened only to search is opened
read-only and never written. This module is the store's front door: the
Catalog and its read side (lookups and searches) live here, and every name
the other wings use is defined or re-exported here. The rest of the store,
one job per module: ``database`` (the one module that opens the SQLite
database and knows its schema), ``build`` (a build's stages and its one
write loop), ``check`` (stats, check, repair), ``files`` (the directory's
file names and stale temporaries).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from functools import cache, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from restyle._errors import CatalogError
from restyle._indexes.chooser import (
    TrainingPlan,
    grow_index,
    index_present,
    load_index,
    save_index,
)
from restyle._indexes.flat import VectorIndex
from restyle._indexes.sharded import Runner, ShardedIndex, run_here
from restyle._ingestion.listings import (
    DecodedListing,
    ListingLimits,
    ListingRow,
    LoadedImage,
    Rejection,
    count_rows,
)
from restyle._plugin.components import Encoder
from restyle._store import check as _checking
from restyle._store.build import (
    EXECUTORS,
    BuildExecutor,
    BuildReport,
    EncodedRun,
    build_executor,
    encoded_here,
    write_build,
)
from restyle._store.check import CatalogCheck, CatalogStats, RepairReport
from restyle._store.database import (
    SELECT,
    connect,
    database_error,
    delete_listings,
    ensure_schema,
    file_problem,
    image_hashes,
    meta,
    missing,
    sample_vectors,
    schema_version,
    stored_images,
    stored_vectors,
    update_metadata,
    upsert_rows,
    vectors_by_id,
    where_in,
)
from restyle._store.files import DB_NAME, INDEX_NAME, remove_stale_temporaries
from restyle._store.planning import plan_training
from restyle._store.search import (
    MARKETPLACE_NAME,
    SEARCH_POOL,
    Neighbours,
    matches,
    text_matches,
    to_listing,
)
from restyle._types import Listing, Query

if TYPE_CHECKING:
    from restyle._input.fetching import Fetcher

__all__ = [
    "DB_NAME",
    "EXECUTORS",
    "MARKETPLACE_NAME",
    "BuildExecutor",
    "BuildReport",
    "Catalog",
    "CatalogCheck",
    "CatalogStats",
    "ListingLimits",
    "Rejection",
    "RepairReport",
    "image_hashes",
]

logger = logging.getLogger("restyle.catalog")

_RECENT_SEARCHES = 32


def _none_stored(listing_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
    """The images stored for ``listing_ids`` when none is taken as stored."""
    return {}


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
        self._recent: OrderedDict[bytes, Neighbours] = OrderedDict()
        self._generation = 0
        #: Where a sharded index trains and encodes (Ray tasks in a Ray build).
        self.index_runner: Runner = run_here
        #: What a build's index trains on when it becomes sharded (see plan_training).
        self.index_plan: TrainingPlan | None = None
        if not os.path.lexists(self._db_path):
            if not create:
                raise CatalogError(missing(self.directory))
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise CatalogError(f"cannot create the catalog directory {self.directory}: "
                                   f"{exc.strerror or exc}") from exc
        else:
            problem = file_problem(self._db_path)
            if problem is not None:
                raise CatalogError(problem)
        self._db = connect(self._db_path, readonly=self.readonly)
        if not self.readonly:
            remove_stale_temporaries(self.directory)
        try:
            self._open(model_id, dim)
        except BaseException:
            self._db.close()
            raise
    def _open(self, model_id: str, dim: int) -> None:
        with self._database() as db:
            if not self.readonly:
                ensure_schema(db, self._db_path)
            schema_version(db, self._db_path)
            stored_model, stored_dim = meta(db, "model_id"), meta(db, "dim")
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
            # Opened to search, a flat index is mapped from its file, not read.
            index = load_index(path, dim=self.dim, exact=self._exact_vectors,
                               mapped=self.readonly)
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
                raise CatalogError(database_error(self._db_path, exc)) from exc

    def _writable(self) -> None:
        """Reopen the database for writing if it was opened read-only."""
        with self._lock:
            if not self.readonly:
                return
            db = connect(self._db_path, readonly=False)
            try:
                ensure_schema(db, self._db_path)
            except BaseException:
                db.close()
                raise
            self._db.close()
            self._db = db
            self.readonly = False
            remove_stale_temporaries(self.directory)
            if isinstance(self.index, VectorIndex) and self.index.mapped():
                # Mapped from its file to search: read whole (as saved now) to change.
                with self._database() as db:
                    (rows,) = db.execute("SELECT COUNT(*) FROM items").fetchone()
                self.index = self._load_index(int(rows))

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
        path = Path(source).expanduser()
        # Counted once, for the plan and the progress bar alike.
        counted = cache(partial(count_rows, path))
        stages = partial(self._encoded_run, encoder=encoder, images_root=images_root,
                         limits=limits, fetcher=fetcher, batch_size=batch_size,
                         checkpoint_every=checkpoint_every, executor=executor)
        self._writable()  # the index as saved now, read whole
        if not isinstance(self.index, ShardedIndex):
            self.index_plan = plan_training(
                path, self.directory, held=len(self), dim=self.dim, progress=progress,
                encoded=partial(stages, base=path.absolute().parent, stored=False),
                counted=counted)
        try:
            return write_build(self, stages(path), encoder, fetcher=fetcher, limits=limits,
                               checkpoint_every=checkpoint_every, progress=progress,
                               total=counted)
        finally:
            self.index_plan = None

    def _encoded_run(
        self, source: Path, *, encoder: Encoder, images_root: str | Path | None,
        limits: ListingLimits, fetcher: Fetcher | None, batch_size: int,
        checkpoint_every: int, executor: str | BuildExecutor | None,
        base: Path | None = None, stored: bool = True,
    ) -> AbstractContextManager[EncodedRun]:
        """A build's stages, in this process or on ``executor``, with the
        catalog reopened for writing: ``source``'s local images found in
        ``base`` (default: its folder); rows stored with the same image are
        skipped unless not ``stored``."""
        base = base or source.absolute().parent
        root = base
        if images_root is not None:
            root = Path(images_root).expanduser().absolute()
            if not root.is_dir():
                raise CatalogError(f"images root {images_root} is not a directory")
        self._writable()
        if executor is None:
            current = self.current_images if stored else _none_stored
            return encoded_here(source, encoder, current=current, base=base, images_root=root,
                                limits=limits, fetcher=fetcher, batch_size=batch_size)
        return build_executor(executor).encoded_listings(
            source, encoder, base=base, images_root=root, limits=limits, fetcher=fetcher,
            batch_size=batch_size, checkpoint_every=checkpoint_every, directory=self.directory,
            stored_images=partial(stored_images, self._db_path) if stored and len(self) else None,
        )

    # The write side a build uses (restyle._store.build.BuildTarget): rows and
    # vectors stored uncommitted, made durable by checkpoint(), forgotten by
    # abandon().

    def run_index_on(self, runner: Runner) -> None:
        """Where the index trains and encodes from now on."""
        self.index_runner = runner
        if isinstance(self.index, ShardedIndex):
            self.index.runner = runner

    def current_images(self, listing_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """The image and its sha256 of each of these listings stored with its
        vector in the index."""
        found: dict[str, tuple[str, str]] = {}
        with self._database() as db:
            for item_id, listing_id, image, sha256 in where_in(
                    db, "SELECT id, listing_id, image_path, image_sha256 FROM items "
                    "WHERE listing_id", listing_ids):
                if self.index.reconstruct(item_id) is not None:
                    found[listing_id] = (image, sha256)
        return found

    def checkpoint(self) -> None:
        """Make the build so far durable: the index first, then the rows.

        A crash between the two leaves vectors without rows, which searches
        ignore and the next build overwrites.
        """
        with self._database() as db:
            # Past SHARDED_ABOVE vectors the index becomes a sharded IVF-PQ one.
            self.index = grow_index(
                self.index, vectors=lambda: stored_vectors(db, self.dim),
                sample=lambda n: sample_vectors(db, self.dim, n), exact=self._exact_vectors,
                runner=self.index_runner, plan=self.index_plan,
            )
            save_index(self.index, self.directory / INDEX_NAME)
            db.commit()

    def finish(self) -> None:
        """End a build: a sharded index's segments (appended at each checkpoint)
        merged into one per shard and saved; a flat index is one piece already."""
        with self._lock:
            if isinstance(self.index, ShardedIndex):
                self.index.merge()
                save_index(self.index, self.directory / INDEX_NAME)

    def abandon(self) -> None:
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

    def update_metadata(self, row: ListingRow) -> None:
        """Update a stored listing's metadata, keeping its image and vector."""
        self._changed()
        with self._database() as db:
            update_metadata(db, row)

    def store(self, kept: Sequence[DecodedListing | LoadedImage], vectors: np.ndarray,
              report: BuildReport) -> None:
        """Write a batch's rows and vectors, uncommitted until the next checkpoint."""
        if not kept:
            return
        self._changed()
        with self._database() as db:
            by_id, added, updated = upsert_rows(db, kept, vectors)
            report.added += added
            report.updated += updated
            self.index.upsert(list(by_id), np.stack(list(by_id.values())))

    def forget_recent_searches(self) -> None:
        """Drop the short-lived cache of recent searches (a benchmark that
        repeats its photos makes each analysis pay for its own search)."""
        with self._lock:
            self._recent.clear()

    def _changed(self) -> None:
        """Rows or vectors changed: recent searches no longer hold."""
        with self._lock:
            self._generation += 1
            self._recent.clear()

    def _exact_vectors(self, ids: np.ndarray) -> np.ndarray:
        """The vectors stored for ``ids`` (NaN rows for ids without one): what a
        sharded index re-ranks with."""
        with self._database() as db:
            return vectors_by_id(db, ids, self.dim)

    def remove(self, listing_ids: Sequence[str]) -> int:
        """Remove listings (rows and vectors) without a rebuild; returns how many."""
        self._writable()
        with self._database() as db:
            ids = delete_listings(db, listing_ids)
            if not ids:
                return 0
            # Rows first: a crash before the index is saved leaves vectors
            # without rows, which searches ignore and repair drops.
            self._changed()
            self.index.remove(ids)
            save_index(self.index, self.directory / INDEX_NAME)
        return len(ids)

    # -- reading -------------------------------------------------------------

    def listing(self, item_id: int) -> Listing | None:
        with self._database() as db:
            row = db.execute(f"{SELECT} WHERE id = ?", (item_id,)).fetchone()
        return None if row is None else to_listing(row)

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
            if listing is None or (query is not None and not matches(listing, query)):
                continue
            found.append((listing, float(score)))
            if len(found) >= limit:
                break
        return found

    def _nearest(self, vector: np.ndarray, wanted: int) -> Neighbours:
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
        near = Neighbours(generation=generation, ids=ids[0][found], scores=scores[0][found])
        with self._lock:
            if self._generation == generation:
                self._recent[key] = near
                self._recent.move_to_end(key)
                while len(self._recent) > _RECENT_SEARCHES:
                    self._recent.popitem(last=False)
        return near

    def _listings_of(self, near: Neighbours, ids: np.ndarray) -> dict[int, Listing | None]:
        """The Listings of ``ids`` (None where the database has no row), read
        in one query for those ``near`` has not read yet."""
        with self._lock:
            missing = [i for i in ids.tolist() if i not in near.listings]
            if missing:
                rows = self._rows(missing)
                for item_id in missing:
                    row = rows.get(item_id)
                    near.listings[item_id] = None if row is None else to_listing(row)
            return near.listings

    def _rows(self, item_ids: Sequence[int]) -> dict[int, Sequence[Any]]:
        """Database rows by item id, for those that exist."""
        rows: dict[int, Sequence[Any]] = {}
        with self._database() as db:
            for row in where_in(db, f"{SELECT} WHERE id", item_ids):
                rows[int(row[0])] = row
        return rows

    def search_text(self, query: Query) -> list[Listing]:
        """Listings whose title, brand or category share words with the query."""
        with self._database() as db:
            rows = db.execute(SELECT).fetchall()
        return text_matches((to_listing(row) for row in rows), query)

    def vectors_for(self, listing_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The index's vector of each listing that has one, by listing id."""
        item_ids: dict[str, int] = {}
        with self._database() as db:
            item_ids.update(where_in(db, "SELECT listing_id, id FROM items WHERE listing_id",
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
        return _checking.stats(Path(directory).expanduser())

    @classmethod
    def check(cls, directory: str | Path) -> CatalogCheck:
        """Check a catalog thoroughly without writing to it: the database's pages,
        schema and model, every stored vector, and the index against the rows.
        Each problem found says what to do about it."""
        return _checking.check(Path(directory).expanduser())

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
        return _checking.repair(Path(directory).expanduser(), encoder, fetcher=fetcher,
                                limits=limits or ListingLimits(), batch_size=batch_size)

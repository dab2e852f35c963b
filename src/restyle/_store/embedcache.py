"""An on-disk cache of comp image embeddings, keyed by image content hash and model id.

A second table maps a hash of each image URL to the content hash it served,
so a comp seen recently is neither downloaded nor encoded again. URL entries
expire after ``url_ttl`` seconds because the image behind a URL can change;
content-hash entries never go stale, only old (least recently used). Only a
hash of the URL is stored: signed image URLs carry tokens that must not sit
on disk. Every vector read back is checked (the model's dimension, finite, unit
length): a damaged entry is dropped and counted, never used. Damage to the
cache file itself disables the cache with one warning, never the pipeline.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from restyle import _settings
from restyle._plugin.contracts import vector_problem

__all__ = ["EmbeddingCache", "EmbeddingCacheStats"]

_T = TypeVar("_T")
# What get() is told by _with_db: the cache is off or failed; no entry.
_OFF: Any = object()
_ABSENT: Any = object()

logger = logging.getLogger("restyle.cache")


_SCHEMA = """
PRAGMA journal_mode=WAL;
CREATE TABLE IF NOT EXISTS embeddings (
    model_id TEXT NOT NULL, sha256 TEXT NOT NULL, vector BLOB NOT NULL, used REAL NOT NULL,
    PRIMARY KEY (model_id, sha256)
);
CREATE INDEX IF NOT EXISTS embeddings_used ON embeddings (used);
CREATE TABLE IF NOT EXISTS urls (
    url_hash TEXT PRIMARY KEY, sha256 TEXT NOT NULL, seen REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS urls_seen ON urls (seen);
CREATE TABLE IF NOT EXISTS models (model_id TEXT PRIMARY KEY, dim INTEGER NOT NULL);
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class EmbeddingCacheStats:
    """What an :class:`EmbeddingCache` did since it was created.

    ``dropped``: damaged entries found on read (wrong length, not finite, not
    unit length), deleted and not used. ``refused``: vectors ``put`` would not
    store for the same reasons. ``disabled``: the cache file could not be used
    and the cache turned itself off.
    """

    hits: int
    misses: int
    dropped: int
    refused: int
    disabled: bool


def _url_key(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()


class EmbeddingCache:
    """Embeddings by (model id, image sha256), at most ``max_entries`` of them.

    Thread-safe. ``path`` defaults to ``$RESTYLE_HOME/embeddings.sqlite``.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        *,
        max_entries: int = 200_000,
        url_ttl: float = 7 * 24 * 3600,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.path = Path(path).expanduser() if path else _settings.home() / "embeddings.sqlite"
        self.max_entries = max_entries
        self.url_ttl = url_ttl
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._opened = False
        self._disabled = False
        self._writes = 0
        self._dims: dict[str, int] = {}  # as recorded in the models table
        self._hits = self._misses = self._dropped = self._refused = 0

    def __repr__(self) -> str:
        return f"<EmbeddingCache {str(self.path)!r} max_entries={self.max_entries}>"

    def __reduce__(self) -> tuple[Any, ...]:
        # A copy in another process (a Ray worker) opens the same file itself;
        # connections, locks and counters stay with this one.
        return (_cache_from_settings, (str(self.path), self.max_entries, self.url_ttl))

    def _conn(self) -> sqlite3.Connection | None:
        if not self._opened:
            self._opened = True
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, check_same_thread=False, timeout=5.0)
                db.executescript(_SCHEMA)
                self._db = db
            except (sqlite3.Error, OSError) as exc:
                self._disable(exc)
        return self._db

    def _disable(self, exc: Exception) -> None:
        if not self._disabled:
            logger.warning("embedding cache %s disabled: %s", self.path, exc)
        self._disabled = True
        if self._db is not None:
            self._db.close()
        self._db = None

    def stats(self) -> EmbeddingCacheStats:
        """Hits, misses, damaged entries dropped, vectors refused, and whether it is off."""
        with self._lock:
            return EmbeddingCacheStats(
                hits=self._hits, misses=self._misses, dropped=self._dropped,
                refused=self._refused, disabled=self._disabled,
            )

    @property
    def dropped(self) -> int:
        """Damaged entries found on read and dropped (see :meth:`stats`)."""
        with self._lock:
            return self._dropped

    def _dim(self, db: sqlite3.Connection, model_id: str) -> int | None:
        """The dimension of ``model_id``'s vectors: as recorded by ``put``, or else
        the length most of its stored vectors have (caches written before
        dimensions were recorded)."""
        if model_id in self._dims:
            return self._dims[model_id]
        row = db.execute("SELECT dim FROM models WHERE model_id = ?", (model_id,)).fetchone()
        if row is not None and isinstance(row[0], int) and row[0] > 0:
            self._dims[model_id] = row[0]
            return row[0]
        row = db.execute(
            "SELECT length(vector) / 4 FROM embeddings WHERE model_id = ? "
            "GROUP BY length(vector) ORDER BY COUNT(*) DESC LIMIT 1", (model_id,),
        ).fetchone()
        return int(row[0]) if row is not None and row[0] else None

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
            self._db = None

    def _with_db(self, work: Callable[[sqlite3.Connection], _T], default: _T) -> _T:
        """``work(db)`` under the lock, or ``default`` when the cache is off or
        its file fails (the cache then turns itself off)."""
        with self._lock:
            db = self._conn()
            if db is None:
                return default
            try:
                return work(db)
            except sqlite3.Error as exc:
                self._disable(exc)
                return default

    def __len__(self) -> int:
        return self._with_db(
            lambda db: int(db.execute("SELECT COUNT(*) FROM embeddings").fetchone()[0]), 0)

    def sha_for_url(self, url: str) -> str | None:
        """The content hash ``url`` served within the last ``url_ttl`` seconds."""
        row = self._with_db(lambda db: db.execute(
            "SELECT sha256 FROM urls WHERE url_hash = ? AND seen >= ?",
            (_url_key(url), time.time() - self.url_ttl),
        ).fetchone(), None)
        return None if row is None else str(row[0])

    def _take(self, db: sqlite3.Connection, sha256: str,
              model_id: str) -> tuple[np.ndarray, str | None] | None:
        """The stored entry and its problem (a damaged one deleted, a sound one
        marked used), or None when there is none."""
        row = db.execute("SELECT vector FROM embeddings WHERE model_id = ? AND sha256 = ?",
                         (model_id, sha256)).fetchone()
        if row is None:
            return None
        vector, problem = self._decode(db, row[0], model_id)
        with db:
            if problem is not None:
                db.execute("DELETE FROM embeddings WHERE model_id = ? AND sha256 = ?",
                           (model_id, sha256))
            else:
                db.execute("UPDATE embeddings SET used = ? WHERE model_id = ? AND sha256 = ?",
                           (time.time(), model_id, sha256))
        return vector, problem

    def get(self, sha256: str, model_id: str) -> np.ndarray | None:
        """The stored embedding, or None; a damaged entry is dropped and counted."""
        found = self._with_db(lambda db: self._take(db, sha256, model_id) or _ABSENT, _OFF)
        if found is _OFF:
            return None
        with self._lock:
            if found is _ABSENT:
                self._misses += 1
                return None
            vector: np.ndarray = found[0]
            problem: str | None = found[1]
            if problem is not None:
                self._dropped += 1
                self._misses += 1
                log = logger.warning if self._dropped == 1 else logger.debug
                log("embedding cache %s: dropped a damaged entry (%s); %d so far",
                    self.path, problem, self._dropped)
                return None
            self._hits += 1
            return vector

    def _decode(self, db: sqlite3.Connection, blob: object,
                model_id: str) -> tuple[np.ndarray, str | None]:
        if not isinstance(blob, bytes) or len(blob) % 4:
            return np.zeros(0, np.float32), "not a float32 vector"
        vector = np.frombuffer(blob, dtype=np.float32).copy()
        return vector, vector_problem(vector, self._dim(db, model_id))

    def put(self, sha256: str, model_id: str, vector: np.ndarray, *,
            url: str | None = None) -> None:
        """Store ``vector``; one that is not a finite unit vector is refused (and counted).

        A vector of another dimension than the model's recorded one replaces
        the record: the encoder that just produced it is the authority.
        """
        array = np.ascontiguousarray(vector, dtype=np.float32)
        problem = vector_problem(array, None)
        now = time.time()
        with self._lock:
            if problem is not None:
                self._refused += 1
                logger.debug("embedding cache: refused a vector with %s", problem)
                return
            db = self._conn()
            if db is None:
                return
            try:
                with db:
                    if self._dims.get(model_id) != array.size:
                        db.execute("INSERT OR REPLACE INTO models VALUES (?, ?)",
                                   (model_id, array.size))
                        # Entries of another length can only be damaged or stale.
                        db.execute("DELETE FROM embeddings WHERE model_id = ? "
                                   "AND length(vector) != ?", (model_id, array.size * 4))
                        self._dims[model_id] = array.size
                    db.execute("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?)",
                               (model_id, sha256, array.tobytes(), now))
                    if url is not None:
                        db.execute("INSERT OR REPLACE INTO urls VALUES (?, ?, ?)",
                                   (_url_key(url), sha256, now))
                self._writes += 1
                # Check the bound every few writes (counting rows is not free).
                if self._writes % max(1, min(64, self.max_entries // 10)) == 0:
                    self._evict(db)
            except sqlite3.Error as exc:
                self._disable(exc)

    def remember_url(self, url: str, sha256: str) -> None:
        with self._lock:
            db = self._conn()
            if db is None:
                return
            try:
                with db:
                    db.execute("INSERT OR REPLACE INTO urls VALUES (?, ?, ?)",
                               (_url_key(url), sha256, time.time()))
            except sqlite3.Error as exc:
                self._disable(exc)

    def _evict(self, db: sqlite3.Connection) -> None:
        # Trim to 90% so eviction runs rarely, not on every write at the limit.
        with db:
            (count,) = db.execute("SELECT COUNT(*) FROM embeddings").fetchone()
            if count > self.max_entries:
                keep = int(self.max_entries * 0.9)
                db.execute(
                    "DELETE FROM embeddings WHERE rowid IN (SELECT rowid FROM embeddings "
                    "ORDER BY used ASC LIMIT ?)",
                    (count - keep,),
                )
            db.execute("DELETE FROM urls WHERE seen < ?", (time.time() - self.url_ttl,))
            (urls,) = db.execute("SELECT COUNT(*) FROM urls").fetchone()
            if urls > 2 * self.max_entries:
                db.execute(
                    "DELETE FROM urls WHERE rowid IN (SELECT rowid FROM urls "
                    "ORDER BY seen ASC LIMIT ?)",
                    (urls - self.max_entries,),
                )


def _cache_from_settings(path: str, max_entries: int, url_ttl: float) -> EmbeddingCache:
    return EmbeddingCache(path, max_entries=max_entries, url_ttl=url_ttl)

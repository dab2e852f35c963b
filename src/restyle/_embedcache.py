"""An on-disk cache of comp image embeddings, keyed by image content hash and model id.

A second table maps a hash of each image URL to the content hash it served,
so a comp seen recently is neither downloaded nor encoded again. URL entries
expire after ``url_ttl`` seconds because the image behind a URL can change;
content-hash entries never go stale, only old (least recently used). Only a
hash of the URL is stored: signed image URLs carry tokens that must not sit
on disk. Any damage to the cache file disables the cache, never the pipeline.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np

from restyle import _settings

__all__ = ["EmbeddingCache"]

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
"""


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
        self._writes = 0

    def __repr__(self) -> str:
        return f"<EmbeddingCache {str(self.path)!r} max_entries={self.max_entries}>"

    def _conn(self) -> sqlite3.Connection | None:
        if not self._opened:
            self._opened = True
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(self.path, check_same_thread=False, timeout=5.0)
                db.executescript(_SCHEMA)
                self._db = db
            except (sqlite3.Error, OSError) as exc:
                logger.warning("embedding cache %s disabled: %s", self.path, exc)
        return self._db

    def _disable(self, exc: Exception) -> None:
        logger.warning("embedding cache %s disabled: %s", self.path, exc)
        if self._db is not None:
            self._db.close()
        self._db = None

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
            self._db = None

    def __len__(self) -> int:
        with self._lock:
            db = self._conn()
            if db is None:
                return 0
            (count,) = db.execute("SELECT COUNT(*) FROM embeddings").fetchone()
            return int(count)

    def sha_for_url(self, url: str) -> str | None:
        """The content hash ``url`` served within the last ``url_ttl`` seconds."""
        with self._lock:
            db = self._conn()
            if db is None:
                return None
            try:
                row = db.execute(
                    "SELECT sha256 FROM urls WHERE url_hash = ? AND seen >= ?",
                    (_url_key(url), time.time() - self.url_ttl),
                ).fetchone()
            except sqlite3.Error as exc:
                self._disable(exc)
                return None
        return None if row is None else str(row[0])

    def get(self, sha256: str, model_id: str) -> np.ndarray | None:
        with self._lock:
            db = self._conn()
            if db is None:
                return None
            try:
                row = db.execute(
                    "SELECT vector FROM embeddings WHERE model_id = ? AND sha256 = ?",
                    (model_id, sha256),
                ).fetchone()
                if row is not None:
                    with db:
                        db.execute(
                            "UPDATE embeddings SET used = ? WHERE model_id = ? AND sha256 = ?",
                            (time.time(), model_id, sha256),
                        )
            except sqlite3.Error as exc:
                self._disable(exc)
                return None
        if row is None:
            return None
        return np.frombuffer(row[0], dtype=np.float32).copy()

    def put(self, sha256: str, model_id: str, vector: np.ndarray, *,
            url: str | None = None) -> None:
        blob = np.ascontiguousarray(vector, dtype=np.float32).tobytes()
        now = time.time()
        with self._lock:
            db = self._conn()
            if db is None:
                return
            try:
                with db:
                    db.execute("INSERT OR REPLACE INTO embeddings VALUES (?, ?, ?, ?)",
                               (model_id, sha256, blob, now))
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

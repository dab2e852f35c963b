"""The history of analyses: every analysis the command line makes, kept in a
small SQLite database under ``$RESTYLE_HOME`` for ``restyle logs``.

Bounded: no photo bytes are stored, only the photo's path, its small thumbnail
and the analysis with its first :data:`KEPT_COMPS` comps (inline comp images
left out), each entry at most :data:`MAX_ENTRY_CHARS` of JSON, and only the
newest :data:`MAX_ENTRIES` entries. The schema's version is the database's
``user_version``; a database a newer restyle wrote is read by none older.
Writers in several processes at once are safe: each entry is one short
transaction in WAL mode, and a writer waits its turn for a while.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from restyle import _settings
from restyle._errors import ConfigurationError
from restyle._types import Analysis

__all__ = ["KEPT_COMPS", "MAX_ENTRIES", "MAX_ENTRY_CHARS", "SCHEMA_VERSION", "History",
           "HistoryEntry", "default_path"]

#: The schema this restyle writes and reads.
SCHEMA_VERSION = 1
#: Newest entries kept; older ones are removed as new ones come.
MAX_ENTRIES = 10_000
#: Comps kept with each analysis, most alike first.
KEPT_COMPS = 20
#: Most characters of one entry's JSON: past it, the comps and opinions are dropped.
MAX_ENTRY_CHARS = 256 * 1024
#: Largest photo thumbnail kept (a data URI), in characters.
MAX_THUMBNAIL_CHARS = 32 * 1024
#: Seconds a writer waits for another to finish.
BUSY_SECONDS = 10.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS analyses (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    photo TEXT NOT NULL,
    status TEXT NOT NULL,
    brand TEXT,
    product TEXT,
    category TEXT,
    summary TEXT,
    price TEXT,
    currency TEXT,
    basis TEXT,
    error TEXT,
    analysis TEXT
);
CREATE INDEX IF NOT EXISTS analyses_brand ON analyses (brand);
"""
_COLUMNS = ("id", "created_at", "photo", "status", "brand", "product", "category", "summary",
            "price", "currency", "basis", "error", "analysis")


def default_path() -> Path:
    """``$RESTYLE_HOME/history.sqlite``."""
    return _settings.home() / "history.sqlite"


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One logged analysis (or failure: ``status`` failed, ``error`` why)."""

    id: int
    created_at: str
    photo: str
    status: str
    brand: str | None
    product: str | None
    category: str | None
    summary: str | None
    price: str | None
    currency: str | None
    basis: str | None
    error: str | None
    analysis: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _COLUMNS}


def _bounded(analysis: Analysis) -> str:
    """The analysis as JSON, within the entry's bounds."""
    data = analysis.to_dict()
    data["comps"] = data.get("comps", [])[:KEPT_COMPS]
    for comp in data["comps"]:
        listing = comp.get("listing", {})
        if str(listing.get("image_url") or "").startswith("data:"):
            listing["image_url"] = None
    photo = data.get("photo", {})
    if len(photo.get("thumbnail") or "") > MAX_THUMBNAIL_CHARS:
        photo["thumbnail"] = None
    text = json.dumps(data)
    if len(text) > MAX_ENTRY_CHARS:
        data.update(comps=[], opinions=[], trimmed=True)
        text = json.dumps(data)
    if len(text) > MAX_ENTRY_CHARS:  # pathological: keep only what the columns say
        text = json.dumps({"trimmed": True})
    return text


class History:
    """The history database at ``path`` (default :func:`default_path`)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = default_path() if path is None else Path(path)

    def _connect(self, *, create: bool) -> sqlite3.Connection | None:
        if not create and not self.path.exists():
            return None
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=BUSY_SECONDS, isolation_level=None)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ConfigurationError(
                    f"the history at {self.path} was written by a newer restyle (schema "
                    f"{version}; this one reads {SCHEMA_VERSION})")
            if version < SCHEMA_VERSION and create:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            elif version < SCHEMA_VERSION:
                conn.close()
                return None  # nothing logged yet
        except BaseException:
            conn.close()
            raise
        return conn

    def add(self, photo: str, result: Analysis | str, *, degraded: bool = False) -> int:
        """Log one photo's analysis (``degraded`` when something in it went
        less than fully right), or its failure (``result`` the reason); its id."""
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        if isinstance(result, str):
            values: tuple[object, ...] = (now, photo, "failed", None, None, None, None, None,
                                          None, None, result, None)
        else:
            ident, price = result.identification, result.price
            values = (now, photo, "degraded" if degraded else "ok", ident.brand,
                      ident.product_name, ident.category, ident.summary,
                      str(price.estimate) if price.ok else None, price.currency,
                      price.basis.value if price.ok and price.basis else None, None,
                      _bounded(result))
        conn = self._connect(create=True)
        assert conn is not None
        with closing(conn):
            conn.execute("BEGIN IMMEDIATE")
            cursor = conn.execute(
                f"INSERT INTO analyses ({', '.join(_COLUMNS[1:])}) VALUES "
                f"({', '.join('?' * (len(_COLUMNS) - 1))})", values)
            entry = int(cursor.lastrowid or 0)
            conn.execute("DELETE FROM analyses WHERE id <= ?", (entry - MAX_ENTRIES,))
            conn.execute("COMMIT")
        return entry

    def entries(self, *, text: str | None = None, brand: str | None = None,
                product: str | None = None, limit: int | None = 20,
                oldest_first: bool = False) -> list[HistoryEntry]:
        """Logged entries, newest first, those matching every filter given:
        ``brand`` and ``product`` as substrings of those fields, ``text`` of
        the photo, brand, product, category, summary or error (any case)."""
        return list(self._select(text=text, brand=brand, product=product, limit=limit,
                                 oldest_first=oldest_first))

    def get(self, entry: int) -> HistoryEntry | None:
        found = list(self._select(entry=entry, limit=1))
        return found[0] if found else None

    def _select(self, *, text: str | None = None, brand: str | None = None,
                product: str | None = None, entry: int | None = None,
                limit: int | None = 20, oldest_first: bool = False) -> Iterator[HistoryEntry]:
        where: list[str] = ["1"]
        params: list[object] = []
        if entry is not None:
            where.append("id = ?")
            params.append(entry)
        for column, value in (("brand", brand), ("product", product)):
            if value:
                where.append(f"{column} LIKE ? ESCAPE '\\'")
                params.append(_like(value))
        if text:
            fields = ("photo", "brand", "product", "category", "summary", "error")
            where.append("(" + " OR ".join(f"{f} LIKE ? ESCAPE '\\'" for f in fields) + ")")
            params += [_like(text)] * len(fields)
        order = "ASC" if oldest_first else "DESC"
        sql = (f"SELECT {', '.join(_COLUMNS)} FROM analyses WHERE {' AND '.join(where)} "
               f"ORDER BY id {order}" + ("" if limit is None else f" LIMIT {int(limit)}"))
        conn = self._connect(create=False)
        if conn is None:
            return
        with closing(conn):
            for row in conn.execute(sql, params):
                values = dict(zip(_COLUMNS, row, strict=True))
                values["analysis"] = json.loads(row[-1]) if row[-1] else None
                yield HistoryEntry(**values)


def _like(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"

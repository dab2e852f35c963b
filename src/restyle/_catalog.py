"""The local catalog: listings in SQLite, their image vectors in a faiss index.

One directory holds ``catalog.sqlite`` and ``vectors.faiss``. The encoder's
model id and dimension are recorded; opening the catalog with another encoder
is refused. Builds are resumable: a listing already stored with the same image
is skipped.
"""

from __future__ import annotations

import csv
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import numpy as np

from restyle._components import Encoder
from restyle._errors import CatalogError, ImageError
from restyle._imaging import load_photo
from restyle._index import VectorIndex
from restyle._progress import progress_bar
from restyle._types import Condition, Listing, Money, Query

__all__ = ["BuildReport", "Catalog", "Rejection"]

logger = logging.getLogger("restyle.catalog")

DB_NAME = "catalog.sqlite"
INDEX_NAME = "vectors.faiss"
REJECTED_NAME = "rejected.jsonl"
MARKETPLACE_NAME = "catalog"

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
    sold INTEGER
);
"""


# One list of a listing's columns, in the order of _columns() and _to_listing().
_COLUMNS = ("listing_id", "title", "brand", "category", "condition", "price", "currency", "url",
            "image_path", "sold")
_SELECT = f"SELECT id, {', '.join(_COLUMNS)} FROM items"
_SET_METADATA = ", ".join(f"{c}=?" for c in _COLUMNS[1:])


@dataclass(frozen=True, slots=True, kw_only=True)
class Rejection:
    """A source row the build could not use, and why."""

    row: int
    reason: str
    data: dict[str, Any]


@dataclass(slots=True, kw_only=True)
class BuildReport:
    added: int = 0
    updated: int = 0
    skipped: int = 0
    rejected: list[Rejection] = field(default_factory=list)
    rejected_file: Path | None = None


@dataclass(frozen=True, slots=True)
class _Row:
    listing_id: str
    title: str
    brand: str | None
    category: str | None
    condition: Condition
    price: Decimal
    currency: str
    url: str | None
    image_path: Path
    sold: bool | None


class Catalog:
    """A local catalog directory, opened for one encoder model."""

    def __init__(self, directory: str | Path, *, model_id: str, dim: int, create: bool = False):
        self.directory = Path(directory).expanduser()
        db_path = self.directory / DB_NAME
        if not create and not db_path.is_file():
            raise CatalogError(
                f"no catalog at {self.directory}; build one with "
                "'restyle catalog build LISTINGS.jsonl --dir DIR'"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(db_path, check_same_thread=False)
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise CatalogError(f"catalog database {db_path} is damaged: {exc}") from exc
        stored_model = self._meta("model_id")
        stored_dim = self._meta("dim")
        if stored_model is None:
            with self._db:
                self._db.execute("INSERT INTO meta VALUES ('model_id', ?)", (model_id,))
                self._db.execute("INSERT INTO meta VALUES ('dim', ?)", (str(dim),))
        elif stored_model != model_id or int(stored_dim or 0) != dim:
            raise CatalogError(
                f"the catalog at {self.directory} was built with model {stored_model} "
                f"(dimension {stored_dim}); this encoder is {model_id} (dimension {dim}). "
                "Use the same model, or rebuild the catalog into a new directory"
            )
        self.model_id = model_id
        self.dim = dim
        index_path = self.directory / INDEX_NAME
        self.index = (
            VectorIndex.load(index_path, dim=dim) if index_path.is_file() else VectorIndex(dim)
        )

    @classmethod
    def open(cls, directory: str | Path, encoder: Encoder, *, create: bool = False) -> Catalog:
        return cls(directory, model_id=encoder.model_id, dim=encoder.dim, create=create)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._db.execute("SELECT COUNT(*) FROM items").fetchone()
        return int(count)

    def __repr__(self) -> str:
        return f"<Catalog {str(self.directory)!r} model={self.model_id!r} items={len(self)}>"

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    # -- building ------------------------------------------------------------

    def build(
        self,
        source: str | Path,
        encoder: Encoder,
        *,
        batch_size: int = 32,
        checkpoint_every: int = 2000,
        progress: bool | None = None,
    ) -> BuildReport:
        """Add the listings of a JSONL or CSV file (see docs/catalog.md for its columns).

        Bad rows are skipped and written to ``rejected.jsonl`` in the catalog
        directory; rows already stored with the same image and vector are
        skipped. Work is saved every ``checkpoint_every`` listings (and at least
        once a minute): a build that is interrupted or fails keeps everything up
        to its last checkpoint, and running it again carries on from there.
        """
        if encoder.model_id != self.model_id:
            raise CatalogError(
                f"encoder {encoder.model_id} does not match the catalog's model {self.model_id}"
            )
        source = Path(source)
        report = BuildReport()
        pending: list[tuple[_Row, str, Any]] = []
        rows = list(_read_rows(source))
        bar = progress_bar(total=len(rows), desc="Building catalog", unit="item", enabled=progress)
        unsaved = 0
        saved_at = time.monotonic()
        try:
            for number, raw in rows:
                try:
                    row = _validate(raw, base=source.parent)
                    photo = load_photo(row.image_path)
                except (ValueError, ImageError) as exc:
                    report.rejected.append(Rejection(row=number, reason=str(exc), data=raw))
                    bar.update(1)
                    continue
                if self._has_current_vector(row.listing_id, photo.sha256):
                    self._update_metadata(row)
                    report.skipped += 1
                    bar.update(1)
                    continue
                pending.append((row, photo.sha256, photo.image))
                if len(pending) >= batch_size:
                    self._store(pending, encoder, report)
                    bar.update(len(pending))
                    unsaved += len(pending)
                    pending = []
                    if unsaved >= checkpoint_every or time.monotonic() - saved_at > 60:
                        self._checkpoint()
                        unsaved, saved_at = 0, time.monotonic()
            if pending:
                self._store(pending, encoder, report)
                bar.update(len(pending))
            self._checkpoint()
        except BaseException:
            self._abandon()
            raise
        finally:
            bar.close()
        if report.rejected:
            report.rejected_file = self.directory / REJECTED_NAME
            with report.rejected_file.open("w", encoding="utf-8") as fh:
                for rejection in report.rejected:
                    fh.write(json.dumps({"row": rejection.row, "reason": rejection.reason,
                                         "data": rejection.data}, default=str) + "\n")
        return report

    def _has_current_vector(self, listing_id: str, sha256: str) -> bool:
        """Whether the listing is stored with this image and its vector is in the index."""
        with self._lock:
            row = self._db.execute(
                "SELECT id, image_sha256 FROM items WHERE listing_id = ?", (listing_id,)
            ).fetchone()
        return row is not None and row[1] == sha256 and self.index.reconstruct(row[0]) is not None

    def _checkpoint(self) -> None:
        """Make the build so far durable: the index first, then the rows.

        A crash between the two leaves vectors without rows, which searches
        ignore and the next build overwrites.
        """
        with self._lock:
            self.index.save(self.directory / INDEX_NAME)
            self._db.commit()

    def _abandon(self) -> None:
        """Forget the work since the last checkpoint, in the database and in memory."""
        with self._lock:
            self._db.rollback()
            path = self.directory / INDEX_NAME
            self.index = VectorIndex.load(path, dim=self.dim) if path.is_file() else (
                VectorIndex(self.dim)
            )

    def _update_metadata(self, row: _Row) -> None:
        with self._lock:
            self._db.execute(
                f"UPDATE items SET {_SET_METADATA} WHERE listing_id=?",
                (*_columns(row)[1:], row.listing_id),
            )

    def _store(self, pending: list[tuple[_Row, str, Any]], encoder: Encoder,
               report: BuildReport) -> None:
        """Write a batch's rows and vectors, uncommitted until the next checkpoint."""
        vectors = encoder.encode_images([image for _, _, image in pending])
        with self._lock:
            ids = []
            for row, sha, _ in pending:
                existing = self._db.execute(
                    "SELECT id FROM items WHERE listing_id = ?", (row.listing_id,)
                ).fetchone()
                values = (*_columns(row), sha)
                if existing is None:
                    cur = self._db.execute(
                        f"INSERT INTO items ({', '.join(_COLUMNS)}, image_sha256)"
                        f" VALUES ({', '.join('?' * len(values))})",
                        values,
                    )
                    ids.append(int(cur.lastrowid or 0))
                    report.added += 1
                else:
                    self._db.execute(
                        f"UPDATE items SET {_SET_METADATA}, image_sha256=? WHERE listing_id=?",
                        (*values[1:], row.listing_id),
                    )
                    ids.append(int(existing[0]))
                    report.updated += 1
            self.index.upsert(ids, vectors)

    def remove(self, listing_ids: Sequence[str]) -> int:
        """Remove listings (rows and vectors) without a rebuild; returns how many."""
        with self._lock:
            ids = []
            for listing_id in listing_ids:
                row = self._db.execute(
                    "SELECT id FROM items WHERE listing_id = ?", (listing_id,)
                ).fetchone()
                if row is not None:
                    ids.append(int(row[0]))
            if not ids:
                return 0
            try:
                self._db.executemany("DELETE FROM items WHERE id = ?", [(i,) for i in ids])
                self.index.remove(ids)
                # Index first: a crash before the commit leaves rows without
                # vectors, which the next build re-embeds.
                self.index.save(self.directory / INDEX_NAME)
                self._db.commit()
            except BaseException:
                self._db.rollback()
                raise
        return len(ids)

    # -- reading -------------------------------------------------------------

    def listing(self, item_id: int) -> Listing | None:
        with self._lock:
            row = self._db.execute(f"{_SELECT} WHERE id = ?", (item_id,)).fetchone()
        return None if row is None else _to_listing(row)

    def search_vector(
        self, vector: np.ndarray, query: Query | None = None, *, limit: int = 20
    ) -> list[tuple[Listing, float]]:
        """Nearest listings to ``vector`` that match ``query``'s filters, best first."""
        if len(self.index) == 0:
            return []
        wanted = limit if query is None else max(limit * 5, 50)
        scores, ids = self.index.search(vector, wanted)
        found: list[tuple[Listing, float]] = []
        for score, item_id in zip(scores[0], ids[0], strict=True):
            if item_id < 0:
                continue
            listing = self.listing(int(item_id))
            if listing is None or (query is not None and not _matches(listing, query)):
                continue
            found.append((listing, float(score)))
            if len(found) >= limit:
                break
        return found

    def search_text(self, query: Query) -> list[Listing]:
        """Listings whose title, brand or category share words with the query."""
        words = [w for w in query.text.lower().split() if len(w) > 1][:12]
        with self._lock:
            rows = self._db.execute(_SELECT).fetchall()
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
        result: dict[str, np.ndarray] = {}
        for listing_id in listing_ids:
            with self._lock:
                row = self._db.execute(
                    "SELECT id FROM items WHERE listing_id = ?", (listing_id,)
                ).fetchone()
            if row is None:
                continue
            vector = self.index.reconstruct(int(row[0]))
            if vector is not None:
                result[listing_id] = vector
        return result


def _columns(row: _Row) -> tuple[Any, ...]:
    return (
        row.listing_id,
        row.title,
        row.brand,
        row.category,
        row.condition.value,
        str(row.price),
        row.currency,
        row.url,
        str(row.image_path),
        None if row.sold is None else int(row.sold),
    )


def _to_listing(row: Sequence[Any]) -> Listing:
    _, listing_id, title, brand, category, condition, price, currency, url, image, sold = row
    return Listing(
        marketplace=MARKETPLACE_NAME,
        listing_id=listing_id,
        title=title,
        price=Money(amount=Decimal(price), currency=currency) if price is not None else None,
        url=url,
        image_url=Path(image).resolve().as_uri(),
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


def _read_rows(source: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if not source.is_file():
        raise CatalogError(f"listings file not found: {source}")
    suffix = source.suffix.lower()
    try:
        with source.open(encoding="utf-8", newline="") as fh:
            if suffix in (".jsonl", ".ndjson", ".json"):
                for number, line in enumerate(fh, start=1):
                    if not line.strip():
                        continue
                    try:
                        data = json.loads(line)
                    except json.JSONDecodeError as exc:
                        data = {"_line": line.strip()[:200], "_error": f"invalid JSON: {exc.msg}"}
                    if not isinstance(data, dict):
                        data = {"_line": line.strip()[:200], "_error": "not a JSON object"}
                    yield number, data
            elif suffix == ".csv":
                for number, data in enumerate(csv.DictReader(fh), start=2):
                    yield number, {k: v for k, v in data.items() if k is not None}
            else:
                raise CatalogError(f"listings file must be .jsonl or .csv, got {source.name}")
    except UnicodeDecodeError as exc:
        raise CatalogError(f"listings file {source} is not UTF-8 text") from exc


def _validate(raw: dict[str, Any], *, base: Path) -> _Row:
    if "_error" in raw:
        raise ValueError(raw["_error"])

    def text(key: str, *alts: str) -> str | None:
        for k in (key, *alts):
            value = raw.get(k)
            if value is not None and str(value).strip():
                return str(value).strip()
        return None

    listing_id = text("id", "listing_id")
    title = text("title")
    image = text("image", "image_path")
    if listing_id is None:
        raise ValueError("missing id")
    if title is None:
        raise ValueError("missing title")
    if image is None:
        raise ValueError("missing image")
    price_text = text("price")
    if price_text is None:
        raise ValueError("missing price")
    try:
        price = Decimal(price_text)
    except InvalidOperation as exc:
        raise ValueError(f"bad price {price_text!r}") from exc
    if not price.is_finite() or price < 0:
        raise ValueError(f"bad price {price_text!r}")
    currency = (text("currency") or "USD").upper()
    Money(amount=price, currency=currency)  # validates the currency
    image_path = Path(image)
    if not image_path.is_absolute():
        image_path = (base / image_path).resolve()
    if not image_path.is_file():
        raise ValueError(f"image not found: {image}")
    sold_text = text("sold")
    sold = None if sold_text is None else sold_text.lower() in {"1", "true", "yes", "sold"}
    return _Row(
        listing_id=listing_id,
        title=title,
        brand=text("brand"),
        category=text("category"),
        condition=Condition.parse(text("condition")),
        price=price,
        currency=currency,
        url=text("url"),
        image_path=image_path,
        sold=sold,
    )

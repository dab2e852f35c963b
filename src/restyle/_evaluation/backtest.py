"""Backtests: how close restyle's estimates come to the prices items sold for.

Each item of a data set (listings with photos and the prices they sold for)
is analysed by the Engine with the item itself, and its copies, held out
(the same image bytes, or the same picture recompressed: see
``restyle._store.holdout.near_duplicates``): no marketplace answers with them and
the local catalog hides them, so the
estimate is made as it would have been before the item was listed. The
report compares each headline estimate with the realised price. With no data
set, the Engine's own catalog is the data set, one item left out at a time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from restyle._errors import ConfigurationError, RestyleError
from restyle._evaluation.report import (
    LABEL_CHARACTERS,
    BacktestGroup,
    BacktestItem,
    BacktestReport,
    error_histogram,
    summarise,
)
from restyle._ingestion.listings import (
    FORMATS,
    ListingRow,
    Refused,
    Rejection,
    image_location,
    read_listings,
    validate_listing,
)
from restyle._input.imaging import Photo, load_photo
from restyle._input.item import ITEM_MAX_PHOTOS, Item
from restyle._progress import progress_bar
from restyle._store.catalog import MARKETPLACE_NAME, image_hashes
from restyle._store.holdout import (
    fingerprint,
    near_duplicates,
)
from restyle._types import (
    Analysis,
    Listing,
    Money,
    PhotoRole,
    Query,
)

if TYPE_CHECKING:
    from restyle._engine import Engine

__all__ = [
    "LABEL_CHARACTERS",
    "BacktestGroup",
    "BacktestItem",
    "BacktestReport",
    "Sale",
    "backtest",
    "error_histogram",
    "read_sales",
    "summarise",
]

logger = logging.getLogger("restyle.backtest")

@dataclass(frozen=True, slots=True, kw_only=True)
class Sale:
    """One item of a backtest: the listing as it sold (``price`` is what it sold
    for), where its photo is (a path or an http(s) URL) and where the item's
    other photos are, each with its role when the data set gives one."""

    listing: Listing
    image: str
    photos: tuple[tuple[str, PhotoRole | None], ...] = ()

    @property
    def realised(self) -> Money:
        assert self.listing.price is not None
        return self.listing.price


# -- the data set -------------------------------------------------------------------


def read_sales(
    path: str | Path, *, images_root: str | Path | None = None
) -> tuple[list[Sale], list[str]]:
    """The sales of a backtest data set, and the rows rejected (with why).

    The file is a listings file read and checked as a catalog build reads it
    (JSONL, CSV, or Parquet with pyarrow; the same columns, limits and image
    rules, images inside ``images_root``, by default the file's folder), whose
    ``price`` is what each item sold for and whose ``sold`` is true.
    """
    source = Path(path).expanduser()
    if not source.is_file():
        raise ConfigurationError(f"backtest data set not found: {source}")
    if source.suffix.lower() not in FORMATS:
        raise ConfigurationError(f"a backtest data set is .jsonl, .csv or .parquet, "
                                 f"not {source.name}")
    root = None if images_root is None else Path(images_root).expanduser()
    sales: list[Sale] = []
    rejected: list[str] = []
    seen: set[str] = set()
    for raw in read_listings(source):
        row = validate_listing(raw, base=source.parent, images_root=root)
        if isinstance(row, Rejection):
            rejected.append(f"row {row.row}: {row.reason}")
        elif row.sold is not True:
            rejected.append(f"row {row.number}: not marked sold (a backtest needs realised "
                            "prices: sold true)")
        elif row.listing_id in seen:
            rejected.append(f"row {row.number}: id {row.listing_id} seen before")
        else:
            try:
                photos = _other_photos(raw.data.get("photos"), base=source.parent,
                                       images_root=root or source.parent)
            except Refused as exc:
                rejected.append(f"row {row.number}: photos: {exc}")
                continue
            seen.add(row.listing_id)
            sales.append(Sale(listing=_sold_listing(row), image=row.image, photos=photos))
    return sales, rejected


def _other_photos(value: object, *, base: Path, images_root: Path
                  ) -> tuple[tuple[str, PhotoRole | None], ...]:
    """A data set's ``photos`` column: the item's other photos, a list (JSONL)
    or ``|``-separated (CSV), each a path or URL as ``image`` is, optionally
    ``ROLE=`` first (``tag=tag.jpg``)."""
    if value is None or value == "":
        return ()
    entries = value.split("|") if isinstance(value, str) else value
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise Refused("must be a list of paths or URLs (in CSV: separated by |)")
    if len(entries) >= ITEM_MAX_PHOTOS:
        raise Refused(f"at most {ITEM_MAX_PHOTOS - 1} other photos, got {len(entries)}")
    photos = []
    for entry in entries:
        word, _, rest = entry.strip().partition("=")
        role = PhotoRole(word.lower()) if rest and word.lower() in _ROLES else None
        where = rest if role is not None else entry.strip()
        photos.append((image_location(where, base=base, images_root=images_root), role))
    return tuple(photos)


_ROLES = {role.value for role in PhotoRole}


def _sold_listing(row: ListingRow) -> Listing:
    return Listing(
        marketplace="dataset", listing_id=row.listing_id, title=row.title,
        price=Money(amount=row.price, currency=row.currency), brand=row.brand,
        category=row.category, condition=row.condition, url=row.url, sold=True,
    )


def _catalog_images(engine: Engine) -> dict[str, str]:
    """Image hash of every listing in the Engine's catalog, by listing id (empty
    without a catalog), as the catalog stores them."""
    return image_hashes(engine.catalog_dir)


def catalog_sales(engine: Engine) -> list[Sale]:
    """Every listing of the Engine's catalog as a sale at its catalog price."""
    catalog = engine.catalog
    # A query with no words and no filters matches every listing, in catalog order.
    listings = catalog.search_text(Query(text="", limit=max(1, len(catalog))))
    return [Sale(listing=x, image=x.image_url or "") for x in listings if x.price is not None]


def _image_path(image: str) -> Path | None:
    parts = urlsplit(image)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if parts.scheme in ("", None) or len(parts.scheme) == 1:  # a path (or a drive letter)
        return Path(image)
    return None


def _load(engine: Engine, image: str) -> Photo:
    path = _image_path(image)
    if path is not None:
        return load_photo(path)
    if not image:
        raise RestyleError("the listing has no image")
    return load_photo(engine.fetcher.fetch(image))


# -- running ------------------------------------------------------------------------


def backtest(
    engine: Engine,
    dataset: str | Path | None = None,
    *,
    limit: int | None = None,
    deadline: float | None = None,
    progress: bool | None = None,
    images_root: str | Path | None = None,
) -> BacktestReport:
    """Analyse every sale of ``dataset`` with itself held out, and compare.

    ``dataset`` is a listings file of realised sales (see :func:`read_sales`);
    None backtests the Engine's catalog, one listing left out at a time, its
    catalog price taken as the realised one. Each item is held out with its
    copies: the catalog listings with the same id or the same image hash, on
    every marketplace of the Engine, and its near-duplicates in the catalog
    (the same picture in other bytes: see
    :func:`restyle._store.holdout.near_duplicates`). ``limit`` takes the first items only;
    ``images_root`` is the folder a data set's local images must be in (by
    default the data set's).
    """
    rejected: list[str] = []
    if dataset is None:
        sales = catalog_sales(engine)
        source = f"leave-one-out over the catalog at {engine.catalog_dir}"
    else:
        sales, rejected = read_sales(dataset, images_root=images_root)
        source = str(dataset)
    if limit is not None:
        sales = sales[:limit]
    engine.warm_up()  # the model and prompts before the first sale: its answer is as full
    images = _catalog_images(engine)
    by_image: dict[str, set[str]] = {}
    for listing_id, sha in images.items():
        by_image.setdefault(sha, set()).add(listing_id)
    marketplaces = {MARKETPLACE_NAME, *(m.name for m in engine.marketplaces)}
    items: list[BacktestItem] = []
    bar = progress_bar(total=len(sales), desc="Backtesting", unit="item", enabled=progress)
    try:
        for sale in sales:
            items.append(_one(engine, sale, by_image, images, marketplaces, deadline))
            bar.update(1)
    finally:
        bar.close()
    return summarise(items, source=source, rejected=rejected)


def _one(engine: Engine, sale: Sale, by_image: dict[str, set[str]], images: dict[str, str],
         marketplaces: set[str], deadline: float | None) -> BacktestItem:
    listing = sale.listing
    base = BacktestItem(listing_id=listing.listing_id, title=listing.title,
                        category=listing.category, realised=sale.realised)
    try:
        photo = _load(engine, sale.image)
    except RestyleError as exc:
        return _replace(base, failure=f"photo: {exc}")
    ids = {listing.listing_id} | by_image.get(photo.sha256, set())
    sha = images.get(listing.listing_id)
    if sha is not None:
        ids |= by_image.get(sha, set())
    near: list[str] = []
    if images:  # a catalog to look in: the same picture, other bytes
        try:
            near = near_duplicates(engine.catalog, engine.encoder.photo_vector(photo),
                                   fingerprint(photo.image),
                                   lambda image: _load(engine, image).image)
        except Exception as exc:  # an encoder's failure fails this item, as in analyze
            return _replace(base, failure=f"looking for near-duplicates: {exc}")
    near = sorted(set(near) - ids)
    held_out = tuple(sorted(f"{m}:{i}" for m in marketplaces for i in {*ids, *near}))
    base = _replace(base, near_duplicates=tuple(near))
    item: Photo | Item = photo
    if sale.photos:
        try:
            others = [_load(engine, where) for where, _ in sale.photos]
        except RestyleError as exc:
            return _replace(base, held_out=held_out, failure=f"photos: {exc}")
        item = Item(photo, *others, roles=[PhotoRole.WHOLE, *(r for _, r in sale.photos)])
    try:
        analysis = engine.analyze(item, exclude=held_out, deadline=deadline)
    except RestyleError as exc:
        return _replace(base, held_out=held_out, failure=str(exc))
    return _compare(base, analysis, held_out)


def _replace(item: BacktestItem, **changes: Any) -> BacktestItem:
    return replace(item, **changes)


def _compare(base: BacktestItem, analysis: Analysis, held_out: tuple[str, ...]) -> BacktestItem:
    price = analysis.price
    realised = base.realised
    error = inside = None
    if price.ok and price.currency == realised.currency and price.estimate is not None:
        error = float(abs(price.estimate - realised.amount) / realised.amount)
        assert price.low is not None and price.high is not None
        inside = price.low <= realised.amount <= price.high
    return _replace(
        base, status=price.status, basis=price.basis, currency=price.currency,
        estimate=price.estimate, low=price.low, high=price.high, comps_used=price.comps_used,
        confidence=analysis.identification.confidence, error=error, inside=inside,
        held_out=held_out,
    )

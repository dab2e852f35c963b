"""A catalog build: its stages in this process, what runs them elsewhere (a
:class:`BuildExecutor`), and the one write loop that stores what they hand back.

Builds stream the listings file through the stages of
``restyle._ingestion.listings`` and are resumable: a listing already stored
with the same image is skipped. In-process and Ray builds write with the same
:class:`Writer`, so both give the same catalog.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import numpy as np

from restyle._errors import ConfigurationError
from restyle._indexes.flat import temporary_for
from restyle._indexes.sharded import Runner, run_here
from restyle._ingestion.listings import (
    CurrentImages,
    DecodedListing,
    ListingLimits,
    ListingRow,
    LoadedImage,
    Rejection,
    SourceRow,
    StoredAlready,
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
from restyle._store.files import REJECTED_NAME, REJECTED_STEM

if TYPE_CHECKING:
    from PIL import Image

    from restyle._input.fetching import Fetcher

__all__ = [
    "EXECUTORS", "REPORTED_REJECTIONS", "BuildExecutor", "BuildReport", "BuildTarget", "Encoded",
    "EncodedBatch", "EncodedRun", "RejectedFile", "Writer", "build_executor", "embed_rows",
    "encoded_here", "write_build",
]

#: Rejections a BuildReport keeps in memory; rejected.jsonl has them all.
REPORTED_REJECTIONS = 1000
# A build reads ahead at most this many source rows past its last full batch,
# so a file of nothing but bad rows never piles up in memory.
_MAX_SPAN = 1024

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


class BuildTarget(Protocol):
    """What a build writes into (a :class:`~restyle.Catalog` opened for writing)."""

    @property
    def directory(self) -> Path: ...

    def current_images(self, listing_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        """The image and its sha256 of each listing stored with its vector."""

    def store(self, kept: Sequence[DecodedListing | LoadedImage], vectors: np.ndarray,
              report: BuildReport) -> None:
        """Write rows and vectors, uncommitted until the next checkpoint."""

    def update_metadata(self, row: ListingRow) -> None:
        """Update a stored listing's metadata, keeping its image and vector."""

    def checkpoint(self) -> None:
        """Make the build so far durable."""

    def abandon(self) -> None:
        """Forget the work since the last checkpoint."""

    def run_index_on(self, runner: Runner) -> None:
        """Where the index trains and encodes from now on."""

    def finish(self) -> None:
        """End the build: its index made compact (a sharded index's segments
        merged) and durable."""


def write_build(target: BuildTarget, run: AbstractContextManager[EncodedRun],
                encoder: Encoder, *, fetcher: Fetcher | None, limits: ListingLimits,
                checkpoint_every: int, progress: bool | None,
                total: Callable[[], int | None] | None = None) -> BuildReport:
    """Write a build's encoded batches into ``target`` with the one write loop;
    on any failure, forget the work since the last checkpoint. ``total`` is
    about how many rows the listings file holds (the progress bar's, found only
    for a bar shown)."""
    report = BuildReport()
    rejected = RejectedFile(target.directory)
    writer = Writer(target, encoder, report, rejected, fetcher=fetcher, limits=limits,
                    checkpoint_every=checkpoint_every)
    bar = progress_bar(total=total, desc="Building catalog", unit="row", enabled=progress)
    try:
        with run as encoded:
            target.run_index_on(encoded.index_runner)
            try:
                for batch in encoded.batches:
                    writer.write(batch)
                    bar.update(batch.rows)
                writer.checkpoint()
                target.finish()
            finally:
                target.run_index_on(run_here)
    except BaseException:
        target.abandon()
        rejected.discard()
        raise
    finally:
        bar.close()
    report.rejected_file = rejected.finish()
    return report


class RejectedFile:
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
            fd, self._tmp = temporary_for(self.directory / REJECTED_STEM, ".jsonl")
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


class Writer:
    """The build's one write loop, for batches encoded here or elsewhere.

    Each row is judged against what the rows before it left, as if they had
    been stored one at a time: a row the catalog holds with this image is
    skipped (its metadata updated), the others stored; a row skipped when it
    was loaded whose stored image a row before it changed is embedded here.
    Rejections are written in row order. A checkpoint (one transaction and the
    index saved) comes every ``checkpoint_every`` listings or minute, after
    which the batches it covers are told they are done."""

    def __init__(self, target: BuildTarget, encoder: Encoder, report: BuildReport,
                 rejected: RejectedFile, *, fetcher: Fetcher | None, limits: ListingLimits,
                 checkpoint_every: int) -> None:
        self.target = target
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
        target, report = self.target, self.report
        pending: dict[str, tuple[LoadedImage | DecodedListing, np.ndarray]] = {}
        rejections: list[Rejection] = []
        embedded = 0

        def flush() -> None:
            if pending:
                kept, vectors = zip(*pending.values(), strict=True)
                target.store(list(kept), np.stack(vectors), report)
                pending.clear()

        for item in batch.items:
            if isinstance(item, Rejection):
                rejections.append(item)
                continue
            row, sha256 = (item.row, item.sha256) if isinstance(item, StoredAlready) else (
                item[0].row, item[0].sha256)
            if row.listing_id in pending:
                flush()  # the same listing again: judge it against the first one stored
            image, stored_sha256 = target.current_images([row.listing_id]).get(
                row.listing_id, (None, None))
            if (row.image_is_url and image == row.image) or (
                    sha256 is not None and stored_sha256 == sha256):
                target.update_metadata(row)
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
        self._finish(batch, rejections, embedded)

    def _finish(self, batch: EncodedBatch, rejections: list[Rejection], embedded: int) -> None:
        """Record a written batch's rejections, and checkpoint when it is time."""
        for rejection in sorted(rejections, key=lambda r: r.row):
            self.report._reject(rejection)
            self.rejected.write(rejection)
        self.report.rows += batch.rows
        self.unsaved += embedded
        if batch.done is not None:
            self.written.append(batch.done)
        if self.unsaved >= self.checkpoint_every or time.monotonic() - self.saved_at > 60:
            self.checkpoint()

    def _embed_here(self, rows: list[ListingRow]) -> list[Rejection]:
        """Embed, in this process, rows whose stored image changed after they were loaded."""
        kept, vectors, failed = embed_rows(rows, self.encoder, fetcher=self.fetcher,
                                           limits=self.limits)
        self.target.store(kept, vectors, self.report)
        return failed

    def checkpoint(self) -> None:
        self.target.checkpoint()
        for done in self.written:
            done()
        self.written.clear()
        self.unsaved, self.saved_at = 0, time.monotonic()


def embed_rows(rows: Sequence[ListingRow], encoder: Encoder, *, fetcher: Fetcher | None,
               limits: ListingLimits) -> tuple[list[DecodedListing], np.ndarray, list[Rejection]]:
    """Load, decode and embed rows in this process: those kept, their vectors,
    and the rows refused (image unloadable or undecodable, vector unusable)."""
    decoded: list[DecodedListing] = []
    failed: list[Rejection] = []
    for loaded in load_images(rows, fetcher=fetcher, limits=limits):
        result = loaded if isinstance(loaded, Rejection) else decode_listing_image(
            loaded, limits=limits, side=draft_side(encoder))
        if isinstance(result, Rejection):
            failed.append(result)
        else:
            decoded.append(result)
    kept, vectors, unusable = embed_listings(decoded, encoder)
    return kept, vectors, [*failed, *unusable]


# -- the stages in this process --------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Batch:
    """One contiguous span of source rows, prepared for the encoder."""

    rows: int
    decoded: list[DecodedListing]
    skipped: list[StoredAlready]
    rejected: list[Rejection]


@dataclass(frozen=True, slots=True)
class _EncodedBatch:
    rows: int
    items: list[Encoded]
    done: Callable[[], None] | None = None


@dataclass(frozen=True, slots=True)
class _Run:
    batches: Iterator[EncodedBatch]
    index_runner: Runner


@contextmanager
def encoded_here(
    source: Path, encoder: Encoder, *, current: CurrentImages, base: Path, images_root: Path,
    limits: ListingLimits, fetcher: Fetcher | None, batch_size: int,
) -> Iterator[EncodedRun]:
    """The build's stages in this process: the next batch is read, loaded
    and decoded in a thread while the encoder works on this one. ``current``
    looks up the images the catalog holds."""
    prepared = _prepare(
        read_listings(source, limits=limits), current=current, base=base,
        images_root=images_root, limits=limits, fetcher=fetcher, batch_size=batch_size,
        side=draft_side(encoder),
    )
    with _read_ahead(prepared) as ready:
        yield _Run(batches=_encoded(ready, encoder), index_runner=run_here)


def _prepare(
    rows: Iterable[SourceRow], *, current: CurrentImages, base: Path, images_root: Path,
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
        for result in load_unstored(listings, current=current, fetcher=fetcher, limits=limits,
                                    side=side):
            if isinstance(result, Rejection):
                rejected.append(result)
            elif isinstance(result, StoredAlready):
                skipped.append(result)
            else:
                decoded.append(result)
        yield _Batch(rows=len(span), decoded=decoded, skipped=skipped, rejected=rejected)


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

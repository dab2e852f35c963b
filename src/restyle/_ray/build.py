"""Catalog builds on Ray: the listings file's rows read, loaded, decoded and
embedded by Ray tasks and actors, handed back to the store in source order.

A build is a Ray Data pipeline over the stages of :mod:`restyle._ingestion.listings`:
slices of the listings file are read in tasks; rows are validated, checked
against the catalog, fetched and decoded in tasks; an actor pool of encoders
(one model load per actor) embeds them; tasks write the results as shards in
a staging folder of the catalog. The driver reads the shards back, in source
order, and hands their rows to the store's write loop, the one an in-process
build stores with, so both give the same catalog. What this module knows of
the catalog is what the store hands it: the folder to stage in, and a
factory of the lookup of the images it holds.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from restyle._errors import CatalogError, RestyleError
from restyle._indexes.sharded import Runner, train_shard_template
from restyle._ingestion.listings import (
    CurrentImages,
    DecodedListing,
    ListingLimits,
    ListingRow,
    LoadedImage,
    Rejection,
    SourcePart,
    SourceRow,
    StoredAlready,
    batches,
    draft_side,
    embed_listings,
    load_unstored,
    read_listings,
    split_listings,
    validate_listing,
)
from restyle._input.fetching import Fetcher
from restyle._ray.cluster import (
    ACTOR_OPTIONS,
    TASK_OPTIONS,
    Failure,
    Pool,
    adopt,
    batch_of,
    objects,
    on_actors,
    ordered,
    results,
    run_failed,
)
from restyle._types import Condition

if TYPE_CHECKING:
    from restyle._plugin.components import Encoder

__all__ = ["STAGING_NAME", "EncodedShard", "RayBuild", "encoded_listings"]

logger = logging.getLogger("restyle.ray")

#: The folder of a catalog where a Ray build's workers leave their shards.
STAGING_NAME = "staging"
#: Source rows read from a slice of the listings file at a time.
READ_BLOCK = 256
#: Rows per staged shard, at most.
SHARD_ROWS = 512
#: What a read task reserves: reading and parsing rows is light.
READ_CPUS = 0.25
#: Memory a fetch-and-decode task reserves: a worker process with restyle
#: imported, and a decoded image of up to about 1,000 x 1,400 pixels per row.
#: Declaring it also keeps the stage unfused from its neighbours (Ray Data
#: fuses stages that reserve the same), so fetching and decoding never run
#: inside the read tasks or the encoder actors.
WORKER_BYTES = 256 << 20
DECODED_BYTES = 4 << 20
#: CPUs a sharded index's training task reserves, at most (never more than a node has).
TRAIN_CPUS = 16
#: Slices of a JSONL or Parquet file are at least this big, and at most ``MAX_PART_BYTES``.
MIN_PART_BYTES = 64 << 10
MAX_PART_BYTES = 64 << 20

_RUN_FILE = "RUN"
_LOCK_FILE = ".lock"

#: Each stage by the name Ray's messages give it, as a failure names it.
STAGES = {
    "_read_part": "reading the listings file",
    "_load_rows": "validating, fetching and decoding images",
    "_StoredImages": "looking up the images the catalog holds",
    "_Embedder": "encoding images",
    "_write_shard": "writing shards",
    "train_shard_template": "training the index",
    "encode_codes": "adding vectors to the index",
}
#: What a failed build tells to do.
RERUN = ("; the catalog keeps its last checkpoint: run the same build again and it "
         "resumes from there")

#: One source row's outcome, as the store's write loop takes it: a rejection,
#: a listing stored already with this image, or a listing and its vector.
Encoded = Rejection | StoredAlready | tuple[LoadedImage | DecodedListing, np.ndarray]


@dataclass(frozen=True, slots=True)
class EncodedShard:
    """One shard's rows, in source order; ``done`` deletes the shard once a
    checkpoint holds its rows."""

    rows: int
    items: list[Encoded]
    done: Callable[[], None] | None


@dataclass(frozen=True, slots=True)
class RayBuild:
    """A build running on Ray: its shards, in source order, and the runner a
    sharded index trains and encodes with (Ray tasks) while it runs."""

    batches: Iterator[EncodedShard]
    index_runner: Runner


# -- the build's stages, as Ray Data transforms ------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Embedded:
    row: ListingRow
    sha256: str
    vector: np.ndarray
    node: str


def _read_part(batch: Mapping[str, Any], *, source: str,
               limits: ListingLimits) -> Iterator[dict[str, np.ndarray]]:
    """Read: the source rows of one slice of the listings file."""
    for start, stop, first in zip(batch["start"], batch["stop"], batch["first_row"], strict=True):
        part = SourcePart(start=int(start), stop=None if stop < 0 else int(stop),
                          first_row=int(first))
        try:
            for rows in batches(read_listings(source, limits=limits, part=part), READ_BLOCK):
                yield batch_of(rows)
        except RestyleError as exc:
            yield batch_of([Failure(exc)])
            return


def _load_rows(batch: Mapping[str, Any], *, base: str, images_root: str,
               limits: ListingLimits, fetcher: Fetcher, stored: Any,
               side: int) -> dict[str, np.ndarray]:
    """Validate, skip what the catalog holds already, fetch or read, decode."""
    try:
        return batch_of(_load(objects(batch), base=Path(base), images_root=Path(images_root),
                              limits=limits, fetcher=fetcher, stored=stored, side=side))
    except RestyleError as exc:
        return batch_of([Failure(exc)])


def _load(sources: list[SourceRow | Failure], *, base: Path, images_root: Path,
          limits: ListingLimits, fetcher: Fetcher, stored: Any, side: int) -> list[Any]:
    out: list[Any] = [
        s if isinstance(s, Failure)
        else validate_listing(s, base=base, images_root=images_root, limits=limits)
        for s in sources
    ]
    listings = [i for i, item in enumerate(out) if isinstance(item, ListingRow)]

    def current(listing_ids: Sequence[str]) -> Mapping[str, tuple[str, str]]:
        if stored is None:
            return {}
        import ray

        return ray.get(stored.current.remote(list(listing_ids)))  # type: ignore[no-any-return]

    results = load_unstored([out[i] for i in listings], current=current, fetcher=fetcher,
                            limits=limits, side=side)
    for i, result in zip(listings, results, strict=True):
        out[i] = result
    return out


class _Embedder:
    """Embed: one encoder per actor, its model loaded once, when the actor starts."""

    def __init__(self, encoder: Encoder, environment: Mapping[str, str], cwd: str) -> None:
        import ray

        adopt(environment, cwd)
        self.encoder = encoder
        self.node = ray.get_runtime_context().get_node_id()
        self.failure: Failure | None = None
        try:
            encoder.dim  # noqa: B018 - loads the model now, not in the first batch
        except RestyleError as exc:
            self.failure = Failure(exc)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if self.failure is not None:
            return batch_of([self.failure])
        items = objects(batch)
        decoded = [item for item in items if isinstance(item, DecodedListing)]
        try:
            kept, vectors, unusable = embed_listings(decoded, self.encoder)
        except RestyleError as exc:
            return batch_of([Failure(exc)])
        embedded = {id(d): _Embedded(row=d.row, sha256=d.sha256, vector=vector, node=self.node)
                    for d, vector in zip(kept, vectors, strict=True)}
        refused = {r.row: r for r in unusable}
        return batch_of(
            (embedded.get(id(item)) or refused[item.row.number])
            if isinstance(item, DecodedListing) else item
            for item in items
        )


class _StoredImages:
    """Which listings the catalog holds, with which image: asked by the fetch
    tasks before they fetch, answered on the driver's node by the lookup the
    store's factory opens there."""

    def __init__(self, open_lookup: Callable[[], CurrentImages]) -> None:
        self._lookup = open_lookup()

    def current(self, listing_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        return dict(self._lookup(listing_ids))


# -- shards --------------------------------------------------------------------------

_LISTING_FIELDS = ("listing_id", "title", "brand", "category", "condition", "price", "currency",
                   "url", "image", "image_as_written", "sold")


def _shard_table(items: Sequence[Any]) -> Any:
    """Rows, their vectors and the rejections, as an Arrow table in row order."""
    import pyarrow as pa

    columns: dict[str, list[Any]] = {name: [] for name in (
        "row", "kind", *_LISTING_FIELDS, "sha256", "vector", "node", "reason", "data")}
    for item in items:
        record: dict[str, Any] = dict.fromkeys(columns)
        if isinstance(item, Rejection):
            record.update(row=item.row, kind="rejected", reason=item.reason,
                          data=json.dumps(item.data))
        else:
            row: ListingRow = item.row
            record.update({name: getattr(row, name) for name in _LISTING_FIELDS})
            record.update(row=row.number, price=str(row.price), condition=row.condition.value,
                          sha256=item.sha256, data=json.dumps(row.preview))
            if isinstance(item, _Embedded):
                record.update(kind="listing", vector=item.vector.astype(np.float32).tobytes(),
                              node=item.node)
            else:
                record["kind"] = "skipped"
        for name, value in record.items():
            columns[name].append(value)
    schema = pa.schema([
        ("row", pa.int64()), ("kind", pa.string()),
        *[(name, pa.bool_() if name == "sold" else pa.string()) for name in _LISTING_FIELDS],
        ("sha256", pa.string()), ("vector", pa.binary()), ("node", pa.string()),
        ("reason", pa.string()), ("data", pa.string()),
    ])
    return pa.table(columns, schema=schema)


def _write_shard(batch: Mapping[str, Any], *, directory: str, run: str) -> dict[str, np.ndarray]:
    """Write: the batch as a Parquet shard in the run's staging folder, or, where
    that folder cannot be seen (a node without the catalog's file system), as
    bytes for the driver."""
    import pyarrow.parquet as pq

    items = objects(batch)
    failures = [item for item in items if isinstance(item, Failure)]
    if failures:
        return _descriptor(error=pickle.dumps(failures[0].error))
    table = _shard_table(items)
    folder = Path(directory)
    path = ""
    payload = b""
    try:
        visible = (folder / _RUN_FILE).read_text() == run
    except OSError:
        visible = False
    if visible:
        # Named by its rows: a task run again (its worker lost) writes the same
        # file again, never a second one; a temporary of its own until renamed.
        first = items[0].row if isinstance(items[0], Rejection) else items[0].row.number
        target = folder / f"rows-{first:012d}.parquet"
        tmp = folder / f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        path = str(target)
    else:
        sink = io.BytesIO()
        pq.write_table(table, sink)
        payload = sink.getvalue()
    return _descriptor(path=path, payload=payload)


def _descriptor(*, path: str = "", payload: bytes = b"",
                error: bytes = b"") -> dict[str, np.ndarray]:
    """Where a shard is (a file, or its bytes), or the error that stopped it."""
    blobs = np.empty(2, dtype=object)
    blobs[:] = [payload, error]
    return {"path": np.array([path]), "payload": blobs[:1], "error": blobs[1:]}


def _read_shard(path: str, payload: bytes) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    source: Any = path if path else pa.BufferReader(payload)
    rows: list[dict[str, Any]] = pq.read_table(source).to_pylist()
    return rows



def _listing_row(record: Mapping[str, Any]) -> ListingRow:
    return ListingRow(
        number=int(record["row"]), listing_id=record["listing_id"], title=record["title"],
        brand=record["brand"], category=record["category"],
        condition=Condition(record["condition"]), price=Decimal(record["price"]),
        currency=record["currency"], url=record["url"], image=record["image"],
        image_as_written=record["image_as_written"], sold=record["sold"],
        preview=json.loads(record["data"]),
    )


class _Staging:
    """This run's folder under ``<catalog>/staging``, locked while the run lives.

    Folders that runs killed before they finished left behind hold shards
    never merged (or merged and not yet deleted): they are discarded, which is
    safe because a catalog only ever holds what a checkpoint committed. A
    folder still locked belongs to a build running now, which is refused.
    """

    def __init__(self, catalog_dir: Path) -> None:
        root = catalog_dir / STAGING_NAME
        root.mkdir(exist_ok=True)
        for folder in sorted(root.glob("run-*")):
            if not _discard_if_dead(folder):
                raise CatalogError(
                    f"another build is writing the catalog at {catalog_dir} (its staging "
                    f"folder {folder.name} is in use); wait for it to finish"
                )
        self.directory = Path(tempfile.mkdtemp(prefix="run-", dir=root))
        self._lock: IO[str] | None = _lock(self.directory / _LOCK_FILE)
        self.run = uuid.uuid4().hex
        (self.directory / _RUN_FILE).write_text(self.run)

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
        with suppress(OSError):
            (self.directory.parent).rmdir()  # only if no other run is there
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def _lock(path: Path) -> IO[str] | None:
    """Hold an exclusive lock on ``path`` for as long as the file stays open
    (POSIX only; elsewhere, None)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    fh = path.open("a")
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        fh.close()
        raise
    return fh


def _discard_if_dead(folder: Path) -> bool:
    """Remove a staging folder whose run is over; False if its run still holds it."""
    lock = folder / _LOCK_FILE
    if lock.exists():
        try:
            held = _lock(lock)
        except OSError:
            return False
        if held is None:  # pragma: no cover - without locks, leave other runs' folders be
            logger.info("staging folder %s left in place: cannot tell whether its run lives",
                        folder)
            return True
        held.close()
    logger.info("discarding %s, left by a build that did not finish", folder)
    shutil.rmtree(folder, ignore_errors=True)
    return True



# -- the build -------------------------------------------------------------------------


def _part_bytes(source: Path, cpus: float) -> int:
    # A few slices per CPU, so reading spreads over the cluster.
    try:
        size = source.stat().st_size
    except OSError:
        size = 0
    return int(min(MAX_PART_BYTES, max(MIN_PART_BYTES, size // max(1, int(4 * cpus)))))


@contextmanager
def encoded_listings(
    ray: Any, pool: Pool, *, source: Path, encoder: Encoder, base: Path, images_root: Path,
    limits: ListingLimits, fetcher: Fetcher | None, batch_size: int, encoder_batch: int,
    checkpoint_every: int, directory: Path, stored_images: Callable[[], CurrentImages] | None,
) -> Iterator[RayBuild]:
    """Run the build's stages on Ray (see the module docstring): ``directory`` is
    the catalog's, where the shards are staged; ``stored_images`` opens, on an
    actor on this node, the lookup of the images the catalog holds (None: it
    holds none). Staging folder and actor are gone when the block ends."""
    parts = split_listings(source, part_bytes=_part_bytes(
        source, float(ray.cluster_resources().get("CPU", 1))))
    staging = _Staging(directory)
    stored = None
    try:
        if stored_images is not None:
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            here = ray.get_runtime_context().get_node_id()
            # Restarted if lost (it opens the lookup again), its calls sent again.
            stored = ray.remote(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
                here, soft=False), **ACTOR_OPTIONS)(_StoredImages).remote(stored_images)
        ds = ray.data.from_items(
            [{"start": p.start, "stop": -1 if p.stop is None else p.stop,
              "first_row": p.first_row} for p in parts],
            override_num_blocks=len(parts),
        )
        ds = ds.map_batches(_read_part, batch_size=1, num_cpus=READ_CPUS,
                            fn_kwargs={"source": str(source), "limits": limits}, **TASK_OPTIONS)
        # Blocks of one batch: a task's input is whole blocks, and a slice's rows
        # would otherwise be one block, fetched and decoded by one task.
        ds = ds.repartition(target_num_rows_per_block=batch_size)
        ds = ds.map_batches(
            _load_rows, batch_size=batch_size, num_cpus=pool.task_cpus,
            memory=WORKER_BYTES + batch_size * DECODED_BYTES,
            fn_kwargs={"base": str(base), "images_root": str(images_root), "limits": limits,
                       "fetcher": fetcher or Fetcher(), "stored": stored,
                       "side": draft_side(encoder)},
            **TASK_OPTIONS,
        )
        ds = on_actors(ray, ds, _Embedder, pool, size=pool.actors, batch_size=encoder_batch,
                       encoder=encoder)
        # A shard holds no more than a checkpoint, so checkpoints come as often as asked.
        shard_rows = max(1, min(SHARD_ROWS, checkpoint_every))
        ds = ds.map_batches(_write_shard, batch_size=shard_rows, num_cpus=READ_CPUS,
                            fn_kwargs={"directory": str(staging.directory), "run": staging.run},
                            **TASK_OPTIONS)
        yield RayBuild(batches=_shards(ordered(ds)), index_runner=_runner(ray))
    finally:
        staging.close()
        if stored is not None:
            with suppress(Exception):
                ray.kill(stored)


def _shards(ds: Any) -> Iterator[EncodedShard]:
    """The shards' rows, in source order; a stage's RestyleError raised as it was."""
    return results(ds.iter_rows(), "the catalog build", _shard, stages=STAGES, advice=RERUN)


def _shard(shard: Mapping[str, Any]) -> EncodedShard:
    if shard["error"]:
        raise pickle.loads(shard["error"])
    path = str(shard["path"])
    return _encoded(_read_shard(path, shard["payload"]),
                    partial(Path(path).unlink, missing_ok=True) if path else None)


def _encoded(records: list[dict[str, Any]], done: Callable[[], None] | None) -> EncodedShard:
    items: list[Encoded] = []
    nodes: set[str] = set()
    for record in records:
        if record["kind"] == "rejected":
            items.append(Rejection(row=int(record["row"]), reason=record["reason"],
                                   data=json.loads(record["data"])))
        elif record["kind"] == "skipped":
            items.append(StoredAlready(_listing_row(record), record["sha256"]))
        else:
            loaded = LoadedImage(row=_listing_row(record), data=b"", sha256=record["sha256"])
            items.append((loaded, np.frombuffer(record["vector"], dtype=np.float32)))
            nodes.add(record["node"])
    logger.debug("a shard of %d rows (%d embedded on %s)", len(records),
                 sum(isinstance(item, tuple) for item in items),
                 ", ".join(sorted(nodes)) or "no node")
    return EncodedShard(rows=len(records), items=items, done=done)


def _runner(ray: Any) -> Runner:
    """Run a sharded index's training and encoding as Ray tasks."""
    shipped: dict[str, Any] = {"object": object()}
    # Training is one task: it takes a whole node (faiss uses as many threads as
    # the task reserves CPUs); encoding is many one-CPU tasks.
    node_cpus = max((n["Resources"].get("CPU", 1) for n in ray.nodes() if n["Alive"]),
                    default=1)
    train_cpus = max(1, min(int(node_cpus), TRAIN_CPUS))

    def run(fn: Callable[[Any, Any], Any], shared: Any, items: Sequence[Any]) -> list[Any]:
        if shipped["object"] is not shared:  # the trained index, put once
            shipped.update(object=shared, ref=ray.put(shared))
        task = ray.remote(num_cpus=train_cpus if fn is train_shard_template else 1,
                          **TASK_OPTIONS)(fn)
        try:
            return list(ray.get([task.remote(shipped["ref"], item) for item in items]))
        except RestyleError:
            raise
        except Exception as exc:
            raise run_failed("the catalog build", exc, stages=STAGES, advice=RERUN) from exc

    return run

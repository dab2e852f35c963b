"""Catalog builds and bulk analysis on a Ray cluster, with the stages of the in-process ones.

A build is a Ray Data pipeline over the stages of :mod:`restyle._ingestion.listings`:
slices of the listings file are read in tasks; rows are validated, checked
against the catalog, fetched and decoded in tasks; an actor pool of encoders
(one model load per actor) embeds them; tasks write the results as shards in
a staging folder of the catalog. The driver merges the shards, in source
order, with the code an in-process build stores with, so both give the same
catalog. Bulk analysis runs one Engine per actor, built from the driver
Engine's constructor arguments and ``RESTYLE_*`` settings.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import numpy as np

from restyle._errors import CatalogError, ConfigurationError, RestyleError
from restyle._indexes.sharded import Runner, ShardedIndex, _train, run_here
from restyle._ingestion.listings import (
    DecodedListing,
    ListingLimits,
    ListingRow,
    LoadedImage,
    Rejection,
    SourcePart,
    SourceRow,
    batches,
    decode_listing_image,
    draft_side,
    embed_listings,
    load_images,
    load_unstored,
    read_listings,
    split_listings,
    validate_listing,
)
from restyle._progress import progress_bar
from restyle._types import Condition

if TYPE_CHECKING:
    from restyle._engine import Engine
    from restyle._input.fetching import Fetcher
    from restyle._input.imaging import ImageInput, Photo
    from restyle._plugin.components import Encoder
    from restyle._store.catalog import BuildReport, Catalog
    from restyle._types import Analysis

__all__ = ["Executor", "RayExecutor", "analyze_on_ray", "build_on_ray", "ray_executor"]

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
#: Environment variables an actor takes from the driver, so that components
#: read the same settings there (credentials included: the actors need them).
FORWARDED_ENVIRONMENT = ("RESTYLE_", "HF_", "HUGGINGFACE_", "XDG_CACHE_HOME", "TORCH_HOME")

_RUN_FILE = "RUN"
_LOCK_FILE = ".lock"


@dataclass(frozen=True, slots=True, kw_only=True)
class RayExecutor:
    """Where and how a catalog build or a bulk analysis runs on Ray.

    ``address`` picks the cluster: ``"auto"`` is the one in ``RAY_ADDRESS`` or
    started on this machine with ``ray start``, else a new local Ray on this
    machine's cores; ``"local"`` is always a new local Ray; anything else is a
    cluster's address (``"10.0.0.5:6379"``, ``"ray://head:10001"``). A process
    already connected (``ray.init`` was called) keeps its connection.

    ``actors`` is the number of encoder actors (Engine actors for analysis):
    by default one per GPU, or one per two CPUs of a cluster without GPUs.
    Each reserves ``actor_cpus`` CPUs and ``actor_gpus`` GPUs (by default one
    when the cluster has GPUs, else none). ``batch_size`` is the number of
    images per encoder call. ``task_cpus`` is what each fetch-and-decode task
    reserves.
    """

    address: str = "auto"
    actors: int | None = None
    batch_size: int = 64
    actor_cpus: float = 1.0
    actor_gpus: float | None = None
    task_cpus: float = 0.5

    def __post_init__(self) -> None:
        if not isinstance(self.address, str) or not self.address.strip():
            raise ConfigurationError(f"RayExecutor.address must be 'auto', 'local' or a "
                                     f"cluster address, got {self.address!r}")
        if self.actors is not None and (isinstance(self.actors, bool) or self.actors < 1):
            raise ConfigurationError(f"RayExecutor.actors must be at least 1, got {self.actors!r}")
        if isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise ConfigurationError("RayExecutor.batch_size must be at least 1")
        if not self.actor_cpus > 0 or not self.task_cpus > 0:
            raise ConfigurationError("RayExecutor.actor_cpus and task_cpus must be positive")
        if self.actor_gpus is not None and self.actor_gpus < 0:
            raise ConfigurationError("RayExecutor.actor_gpus must not be negative")


#: What ``executor=`` accepts: ``None`` (in this process), ``"ray"`` (a
#: default :class:`RayExecutor`) or a :class:`RayExecutor`.
Executor = Literal["ray"] | RayExecutor | None


def ray_executor(executor: str | RayExecutor) -> RayExecutor:
    """``executor`` as a :class:`RayExecutor`; ``"ray"`` is the default one."""
    if isinstance(executor, RayExecutor):
        return executor
    if executor == "ray":
        return RayExecutor()
    raise ConfigurationError(
        f"executor must be None, 'ray' or a restyle.RayExecutor, got {executor!r}"
    )


def _connect(options: RayExecutor) -> Any:
    try:
        import ray
        import ray.data  # Ray without its data extra cannot build
    except ImportError as exc:
        raise ConfigurationError(
            "running on Ray needs Ray Data: pip install 'restyle[ray]'"
        ) from exc
    if not ray.is_initialized():
        address = None if options.address == "auto" else options.address
        try:
            ray.init(address=address)
        except (ConnectionError, ValueError, RuntimeError, TimeoutError) as exc:
            raise ConfigurationError(
                f"cannot connect to the Ray cluster at {options.address!r}: {exc}"
            ) from exc
    return ray


@dataclass(frozen=True, slots=True)
class _Pool:
    """Actors and what each reserves, fitted to the cluster."""

    actors: int
    cpus: float
    gpus: float


def _pool(ray: Any, options: RayExecutor) -> _Pool:
    resources = ray.cluster_resources()
    cluster_cpus, cluster_gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    gpus = options.actor_gpus if options.actor_gpus is not None else (
        1.0 if cluster_gpus >= 1 else 0.0)
    actors = options.actors
    if actors is None:
        per_cpus = cluster_cpus // (2 * options.actor_cpus)
        actors = max(1, int(cluster_gpus // gpus if gpus else per_cpus))
    if actors * options.actor_cpus + options.task_cpus > cluster_cpus:
        logger.warning("%d actors of %g CPUs and tasks of %g CPUs need more than the cluster's "
                       "%g CPUs: the work waits for the autoscaler, or for ever",
                       actors, options.actor_cpus, options.task_cpus, cluster_cpus)
    return _Pool(actors=actors, cpus=options.actor_cpus, gpus=gpus)


def _environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items()
            if name.startswith(FORWARDED_ENVIRONMENT)}


def _adopt(environment: Mapping[str, str], cwd: str) -> None:
    """Make this worker process see the driver's settings and working directory."""
    for name in [n for n in os.environ if n.startswith(FORWARDED_ENVIRONMENT)]:
        if name not in environment:
            del os.environ[name]
    os.environ.update(environment)
    if os.path.isdir(cwd):
        os.chdir(cwd)


def _run_failed(what: str, exc: BaseException) -> RestyleError:
    """A failure of Ray itself (a node lost, a worker killed) as a RestyleError.

    Errors restyle raises in a stage do not come this way: they travel as
    data (:class:`_Failure`) and are raised as they were."""
    first = str(exc).strip().splitlines()
    return RestyleError(f"{what} failed on Ray: {type(exc).__name__}: "
                        f"{first[0] if first else ''}")


@dataclass(frozen=True, slots=True)
class _Failure:
    """A RestyleError raised in a stage, carried to the driver in place of the
    rows it stopped: Ray would keep only its text."""

    error: RestyleError


def _close(rows: Iterator[Any]) -> None:
    """Stop a dataset's iteration now, while Ray is up, not when it is collected."""
    close = getattr(rows, "close", None)
    if close is not None:
        with suppress(Exception):
            close()


def _ordered(ds: Any) -> Any:
    context = ds.context
    # Shards merge in source order, so row ids are the ones an in-process build gives;
    # results of an analysis come back in input order.
    context.execution_options.preserve_order = True
    # restyle shows its own progress bar, counting rows merged.
    context.enable_progress_bars = False
    return ds


# -- the build's stages, as Ray Data transforms ------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Embedded:
    row: ListingRow
    sha256: str
    vector: np.ndarray
    node: str


def _objects(batch: Mapping[str, Any]) -> list[Any]:
    return [pickle.loads(blob) for blob in batch["item"]]


def _batch(items: Iterable[Any]) -> dict[str, np.ndarray]:
    blobs = [pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL) for item in items]
    column = np.empty(len(blobs), dtype=object)
    column[:] = blobs
    return {"item": column}


def _read_part(batch: Mapping[str, Any], *, source: str,
               limits: ListingLimits) -> Iterator[dict[str, np.ndarray]]:
    """Read: the source rows of one slice of the listings file."""
    for start, stop, first in zip(batch["start"], batch["stop"], batch["first_row"], strict=True):
        part = SourcePart(start=int(start), stop=None if stop < 0 else int(stop),
                          first_row=int(first))
        try:
            for rows in batches(read_listings(source, limits=limits, part=part), READ_BLOCK):
                yield _batch(rows)
        except RestyleError as exc:
            yield _batch([_Failure(exc)])
            return


def _load_rows(batch: Mapping[str, Any], *, base: str, images_root: str,
               limits: ListingLimits, fetcher: Fetcher, stored: Any,
               side: int) -> dict[str, np.ndarray]:
    """Validate, skip what the catalog holds already, fetch or read, decode."""
    try:
        return _batch(_load(_objects(batch), base=Path(base), images_root=Path(images_root),
                            limits=limits, fetcher=fetcher, stored=stored, side=side))
    except RestyleError as exc:
        return _batch([_Failure(exc)])


def _load(sources: list[SourceRow | _Failure], *, base: Path, images_root: Path,
          limits: ListingLimits, fetcher: Fetcher, stored: Any, side: int) -> list[Any]:
    out: list[Any] = [
        s if isinstance(s, _Failure)
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

        _adopt(environment, cwd)
        self.encoder = encoder
        self.node = ray.get_runtime_context().get_node_id()
        self.failure: _Failure | None = None
        try:
            encoder.dim  # noqa: B018 - loads the model now, not in the first batch
        except RestyleError as exc:
            self.failure = _Failure(exc)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if self.failure is not None:
            return _batch([self.failure])
        items = _objects(batch)
        decoded = [item for item in items if isinstance(item, DecodedListing)]
        try:
            kept, vectors, unusable = embed_listings(decoded, self.encoder)
        except RestyleError as exc:
            return _batch([_Failure(exc)])
        embedded = {id(d): _Embedded(row=d.row, sha256=d.sha256, vector=vector, node=self.node)
                    for d, vector in zip(kept, vectors, strict=True)}
        refused = {r.row: r for r in unusable}
        return _batch(
            (embedded.get(id(item)) or refused[item.row.number])
            if isinstance(item, DecodedListing) else item
            for item in items
        )


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

    items = _objects(batch)
    failures = [item for item in items if isinstance(item, _Failure)]
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
        first = items[0].row if isinstance(items[0], Rejection) else items[0].row.number
        target = folder / f"rows-{first:012d}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = folder / f".{target.name}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, target)
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


class _StoredImages:
    """Which listings the catalog holds, with which image: asked by the fetch
    tasks before they fetch, answered from the database on the driver's node."""

    def __init__(self, db_path: str) -> None:
        from restyle._store.catalog import _connect

        self._db = _connect(Path(db_path), readonly=True)

    def current(self, listing_ids: Sequence[str]) -> dict[str, tuple[str, str]]:
        from restyle._store.catalog import _where_in

        return {listing_id: (image, sha256) for listing_id, image, sha256 in _where_in(
            self._db, "SELECT listing_id, image_path, image_sha256 FROM items "
            "WHERE vector IS NOT NULL AND listing_id", listing_ids)}


# -- the build -------------------------------------------------------------------------


def _part_bytes(source: Path, cpus: float) -> int:
    # A few slices per CPU, so reading spreads over the cluster.
    try:
        size = source.stat().st_size
    except OSError:
        size = 0
    return int(min(MAX_PART_BYTES, max(MIN_PART_BYTES, size // max(1, int(4 * cpus)))))


def build_on_ray(
    catalog: Catalog,
    source: Path,
    encoder: Encoder,
    *,
    base: Path,
    images_root: Path,
    limits: ListingLimits,
    fetcher: Fetcher | None,
    batch_size: int,
    checkpoint_every: int,
    progress: bool | None,
    executor: str | RayExecutor,
) -> BuildReport:
    """:meth:`Catalog.build` on Ray (see the module docstring)."""
    from restyle._input.fetching import Fetcher
    from restyle._store.catalog import BuildReport, _RejectedFile

    options = ray_executor(executor)
    ray = _connect(options)
    pool = _pool(ray, options)
    parts = split_listings(source, part_bytes=_part_bytes(
        source, float(ray.cluster_resources().get("CPU", 1))))
    report = BuildReport()
    rejected = _RejectedFile(catalog.directory)
    staging = _Staging(catalog.directory)
    _index_runner(catalog, _runner(ray))
    stored = None
    bar = progress_bar(total=None, desc="Building catalog", unit="row", enabled=progress)
    try:
        if len(catalog):
            from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

            here = ray.get_runtime_context().get_node_id()
            stored = ray.remote(num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(
                here, soft=False))(_StoredImages).remote(str(catalog.directory / "catalog.sqlite"))
        ds = ray.data.from_items(
            [{"start": p.start, "stop": -1 if p.stop is None else p.stop,
              "first_row": p.first_row} for p in parts],
            override_num_blocks=len(parts),
        )
        ds = ds.map_batches(_read_part, batch_size=1, num_cpus=READ_CPUS,
                            fn_kwargs={"source": str(source), "limits": limits})
        # Blocks of one batch: a task's input is whole blocks, and a slice's rows
        # would otherwise be one block, fetched and decoded by one task.
        ds = ds.repartition(target_num_rows_per_block=batch_size)
        ds = ds.map_batches(
            _load_rows, batch_size=batch_size, num_cpus=options.task_cpus,
            memory=WORKER_BYTES + batch_size * DECODED_BYTES,
            fn_kwargs={"base": str(base), "images_root": str(images_root), "limits": limits,
                       "fetcher": fetcher or Fetcher(), "stored": stored,
                       "side": draft_side(encoder)},
        )
        ds = ds.map_batches(
            _Embedder, batch_size=options.batch_size,
            compute=ray.data.ActorPoolStrategy(size=pool.actors),
            num_cpus=pool.cpus, num_gpus=pool.gpus or None,
            fn_constructor_kwargs={"encoder": encoder, "environment": _environment(),
                                   "cwd": os.getcwd()},
        )
        # A shard holds no more than a checkpoint, so checkpoints come as often as asked.
        shard_rows = max(1, min(SHARD_ROWS, checkpoint_every))
        ds = ds.map_batches(_write_shard, batch_size=shard_rows, num_cpus=READ_CPUS,
                            fn_kwargs={"directory": str(staging.directory), "run": staging.run})
        merger = _Merger(catalog, encoder, report, rejected, fetcher=fetcher, limits=limits,
                         checkpoint_every=checkpoint_every)
        shards = iter(_ordered(ds).iter_rows())
        try:
            for shard in shards:
                if shard["error"]:
                    raise pickle.loads(shard["error"])
                bar.update(merger.merge(str(shard["path"]), shard["payload"]))
        except RestyleError:
            raise
        except Exception as exc:
            raise _run_failed("the catalog build", exc) from exc
        finally:
            _close(shards)
        merger.finish()
    except BaseException:
        catalog._abandon()
        rejected.discard()
        raise
    finally:
        bar.close()
        staging.close()
        _index_runner(catalog, run_here)
        if stored is not None:
            with suppress(Exception):
                ray.kill(stored)
    report.rejected_file = rejected.finish()
    return report


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
        task = ray.remote(num_cpus=train_cpus if fn is _train else 1)(fn)
        return list(ray.get([task.remote(shipped["ref"], item) for item in items]))

    return run


def _index_runner(catalog: Catalog, runner: Runner) -> None:
    catalog.index_runner = runner
    if isinstance(catalog.index, ShardedIndex):
        catalog.index.runner = runner


class _Merger:
    """Stores shards in the catalog as an in-process build stores its batches:
    rows already current are skipped (their metadata updated), the others
    stored, rejections written; a checkpoint (one transaction and the index
    saved) every ``checkpoint_every`` listings or minute, after which the
    shards it covers are deleted."""

    def __init__(self, catalog: Catalog, encoder: Encoder, report: BuildReport, rejected: Any,
                 *, fetcher: Fetcher | None, limits: ListingLimits,
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
        self.merged: list[Path] = []

    def merge(self, path: str, payload: bytes) -> int:
        """Store one shard's rows in order, each judged against what the rows
        before it left, as if they had been built one at a time."""
        catalog, report = self.catalog, self.report
        records = _read_shard(path, payload)
        pending: dict[str, tuple[LoadedImage, np.ndarray]] = {}
        rejections: list[Rejection] = []
        nodes: set[str] = set()
        embedded = 0

        def flush() -> None:
            if pending:
                kept, vectors = zip(*pending.values(), strict=True)
                catalog._store(list(kept), np.stack(vectors), report)
                pending.clear()

        for record in records:
            if record["kind"] == "rejected":
                rejections.append(Rejection(row=int(record["row"]), reason=record["reason"],
                                            data=json.loads(record["data"])))
                continue
            row = _listing_row(record)
            if row.listing_id in pending:
                flush()  # the same listing again: judge it against the first one stored
            sha256 = record["sha256"]
            image, stored_sha256 = catalog._current_images([row.listing_id]).get(
                row.listing_id, (None, None))
            current = (row.image_is_url and image == row.image) or (
                sha256 is not None and stored_sha256 == sha256)
            if current:
                catalog._update_metadata(row)
                report.skipped += 1
            elif record["kind"] == "skipped":
                # Current when its task looked; a row before it in this build changed it.
                flush()
                rejections.extend(self._embed_here([row]))
                embedded += 1
            else:
                pending[row.listing_id] = (LoadedImage(row=row, data=b"", sha256=sha256),
                                           np.frombuffer(record["vector"], dtype=np.float32))
                nodes.add(record["node"])
                embedded += 1
        flush()
        for rejection in sorted(rejections, key=lambda r: r.row):
            report._reject(rejection)
            self.rejected.write(rejection)
        report.rows += len(records)
        self.unsaved += embedded
        if path:
            self.merged.append(Path(path))
        logger.debug("merged a shard of %d rows (%d embedded on %s)", len(records), embedded,
                     ", ".join(sorted(nodes)) or "no node")
        if self.unsaved >= self.checkpoint_every or time.monotonic() - self.saved_at > 60:
            self.checkpoint()
        return len(records)

    def _embed_here(self, rows: list[ListingRow]) -> list[Rejection]:
        """Embed, in this process, rows whose stored image changed after their task looked."""
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
        for path in self.merged:
            path.unlink(missing_ok=True)
        self.merged.clear()
        self.unsaved, self.saved_at = 0, time.monotonic()

    def finish(self) -> None:
        self.checkpoint()


# -- bulk analysis ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Upload:
    """A photo read from a file object on the driver, with the file's name."""

    data: bytes
    name: str | None

    def read(self, size: int = -1) -> bytes:
        return self.data if size < 0 else self.data[:size]


@dataclass(frozen=True, slots=True)
class _PhotoParts:
    """A decoded Photo, as the parts it is made of."""

    image: Any
    data: bytes | None
    fmt: str
    source: str | None


def _portable(image: ImageInput | Photo) -> Any:
    """``image`` as something an actor can receive and give to ``load_photo``, which
    then behaves as it would here: paths stay as written (the actor works in this
    process's directory), file objects are read here."""
    from PIL import Image

    from restyle._input.imaging import DEFAULT_MAX_BYTES, Photo

    if isinstance(image, Photo):
        return _PhotoParts(image.image, image.data, image.format, image.source)
    if isinstance(image, os.PathLike):
        return os.fspath(image)
    if isinstance(image, (bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, bytes, Image.Image)) or not hasattr(image, "read"):
        return image
    name = getattr(image, "name", None)
    # One byte past the limit, so that load_photo in the actor says it is too large.
    return _Upload(image.read(DEFAULT_MAX_BYTES + 1), name if isinstance(name, str) else None)


def _local(image: Any) -> Any:
    if isinstance(image, _PhotoParts):
        from restyle._input.imaging import Photo

        return Photo(image=image.image, data=image.data, fmt=image.fmt, source=image.source)
    return image


class _Analyst:
    """One Engine per actor, made from the driver Engine's constructor arguments."""

    def __init__(self, arguments: dict[str, Any], environment: Mapping[str, str], cwd: str,
                 deadline: float | None) -> None:
        _adopt(environment, cwd)
        from restyle._engine import Engine

        self.deadline = deadline
        self.failure: _Failure | None = None
        try:
            self.engine = Engine(**arguments)
        except RestyleError as exc:
            self.failure = _Failure(exc)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        images = [_local(image) for image in _objects(batch)]
        if self.failure is not None:
            return _batch([self.failure] * len(images))
        return _batch(self.engine._analyze_stream(images, deadline=self.deadline))


def analyze_on_ray(
    engine: Engine, images: Sequence[ImageInput | Photo], *, deadline: float | None,
    executor: str | RayExecutor,
) -> Iterator[Analysis | RestyleError]:
    """Each photo's Analysis or RestyleError, in input order, from Engines on Ray actors."""
    from restyle._engine import BATCH_PHOTOS

    options = ray_executor(executor)
    if not images:
        return
    ray = _connect(options)
    pool = _pool(ray, options)
    arguments = dict(engine._arguments)
    # The directory this Engine resolved (from the environment, or relative to here).
    arguments["catalog"] = str(engine.catalog_dir.absolute())
    try:
        pickle.dumps(arguments)  # what cannot travel is named here, not deep inside Ray
    except Exception:
        try:
            from ray import cloudpickle

            cloudpickle.dumps(arguments)  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise ConfigurationError(
                "to analyze on Ray, the Engine's arguments (components, fetcher, reranker, "
                f"plugins) must be picklable: {type(exc).__name__}: {exc}"
            ) from exc
    ds = ray.data.from_items([{"item": pickle.dumps(_portable(image))} for image in images])
    ds = ds.repartition(target_num_rows_per_block=BATCH_PHOTOS)
    # No more actors than batches: the others would load their models for nothing.
    actors = min(pool.actors, -(-len(images) // BATCH_PHOTOS))
    ds = ds.map_batches(
        _Analyst, batch_size=BATCH_PHOTOS, compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=pool.cpus, num_gpus=pool.gpus or None,
        fn_constructor_kwargs={"arguments": arguments, "environment": _environment(),
                               "cwd": os.getcwd(), "deadline": deadline},
    )
    rows = iter(_ordered(ds).iter_rows())
    try:
        for row in rows:
            result = pickle.loads(row["item"])
            if isinstance(result, _Failure):
                raise result.error  # the Engine could not be made on the actor
            yield result
    except RestyleError:
        raise
    except Exception as exc:
        raise _run_failed("the analysis", exc) from exc
    finally:
        _close(rows)

"""What every job on Ray shares: the connection, the actor pool fitted to the
cluster, the driver's settings carried to the workers, rows as pickled items,
and failures carried as data."""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import numpy as np

from restyle._errors import ConfigurationError, RestyleError

logger = logging.getLogger("restyle.ray")

#: Environment variables an actor takes from the driver, so that components
#: read the same settings there (credentials included: the actors need them).
FORWARDED_ENVIRONMENT = ("RESTYLE_", "HF_", "HUGGINGFACE_", "XDG_CACHE_HOME", "TORCH_HOME")


def connect(address: str) -> Any:
    """The ``ray`` module, connected to the cluster at ``address`` (see RayExecutor)."""
    try:
        import ray
        import ray.data  # Ray without its data extra cannot build
    except ImportError as exc:
        raise ConfigurationError(
            "running on Ray needs Ray Data: pip install 'restyle[ray]'"
        ) from exc
    if not ray.is_initialized():
        try:
            ray.init(address=None if address == "auto" else address)
        except (ConnectionError, ValueError, RuntimeError, TimeoutError) as exc:
            raise ConfigurationError(
                f"cannot connect to the Ray cluster at {address!r}: {exc}"
            ) from exc
    return ray


@dataclass(frozen=True, slots=True)
class Pool:
    """Actors and what each reserves, fitted to the cluster, and what a task reserves."""

    actors: int
    cpus: float
    gpus: float
    task_cpus: float


def fit_pool(ray: Any, *, actors: int | None, actor_cpus: float, actor_gpus: float | None,
             task_cpus: float) -> Pool:
    """The pool asked for, with its defaults taken from the cluster's resources."""
    resources = ray.cluster_resources()
    cluster_cpus, cluster_gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    gpus = actor_gpus if actor_gpus is not None else (1.0 if cluster_gpus >= 1 else 0.0)
    if actors is None:
        per_cpus = cluster_cpus // (2 * actor_cpus)
        actors = max(1, int(cluster_gpus // gpus if gpus else per_cpus))
    if actors * actor_cpus + task_cpus > cluster_cpus:
        logger.warning("%d actors of %g CPUs and tasks of %g CPUs need more than the cluster's "
                       "%g CPUs: the work waits for the autoscaler, or for ever",
                       actors, actor_cpus, task_cpus, cluster_cpus)
    return Pool(actors=actors, cpus=actor_cpus, gpus=gpus, task_cpus=task_cpus)


def environment() -> dict[str, str]:
    """The driver's settings an actor takes (see :data:`FORWARDED_ENVIRONMENT`)."""
    return {name: value for name, value in os.environ.items()
            if name.startswith(FORWARDED_ENVIRONMENT)}


def adopt(environment: Mapping[str, str], cwd: str) -> None:
    """Make this worker process see the driver's settings and working directory."""
    for name in [n for n in os.environ if n.startswith(FORWARDED_ENVIRONMENT)]:
        if name not in environment:
            del os.environ[name]
    os.environ.update(environment)
    if os.path.isdir(cwd):
        os.chdir(cwd)


def run_failed(what: str, exc: BaseException) -> RestyleError:
    """A failure of Ray itself (a node lost, a worker killed) as a RestyleError.

    Errors restyle raises in a stage do not come this way: they travel as
    data (:class:`Failure`) and are raised as they were."""
    first = str(exc).strip().splitlines()
    return RestyleError(f"{what} failed on Ray: {type(exc).__name__}: "
                        f"{first[0] if first else ''}")


@dataclass(frozen=True, slots=True)
class Failure:
    """A RestyleError raised in a stage, carried to the driver in place of the
    rows it stopped: Ray would keep only its text."""

    error: RestyleError


def close_rows(rows: Iterator[Any]) -> None:
    """Stop a dataset's iteration now, while Ray is up, not when it is collected."""
    close = getattr(rows, "close", None)
    if close is not None:
        with suppress(Exception):
            close()


def ordered(ds: Any) -> Any:
    """``ds``, its rows coming back in order, without Ray's progress bars."""
    context = ds.context
    # Shards merge in source order, so row ids are the ones an in-process build gives;
    # results of an analysis come back in input order.
    context.execution_options.preserve_order = True
    # restyle shows its own progress bar, counting rows merged.
    context.enable_progress_bars = False
    return ds


def objects(batch: Mapping[str, Any]) -> list[Any]:
    """The items of a batch made by :func:`batch_of`."""
    return [pickle.loads(blob) for blob in batch["item"]]


def batch_of(items: Iterable[Any]) -> dict[str, np.ndarray]:
    """Items as a Ray Data batch: one column of pickled objects."""
    blobs = [pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL) for item in items]
    column = np.empty(len(blobs), dtype=object)
    column[:] = blobs
    return {"item": column}


def on_actors(ray: Any, ds: Any, actor: type, pool: Pool, *, size: int, batch_size: int,
              **arguments: Any) -> Any:
    """``ds`` mapped by ``actor`` on a pool of ``size`` actors, each given the
    pool's CPUs and GPUs and started with this driver's environment and
    working folder (see :func:`adopt`) besides ``arguments``."""
    return ds.map_batches(
        actor, batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=size),
        num_cpus=pool.cpus, num_gpus=pool.gpus or None,
        fn_constructor_kwargs={**arguments, "environment": environment(), "cwd": os.getcwd()},
    )


def results(rows: Iterable[Any], what: str, read: Callable[[Any], Any]) -> Iterator[Any]:
    """``read(row)`` of each row, in order; a stage's RestyleError raised as it
    was, any other failure one plain line naming ``what`` (:func:`run_failed`);
    the rows closed whenever the reading stops."""
    rows = iter(rows)
    try:
        for row in rows:
            yield read(row)
    except RestyleError:
        raise
    except Exception as exc:
        raise run_failed(what, exc) from exc
    finally:
        close_rows(rows)

"""What every job on Ray shares: the connection, the actor pool fitted to the
cluster, the driver's settings carried to the workers, rows as pickled items,
and failures carried as data."""

from __future__ import annotations

import logging
import os
import pickle
import re
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import numpy as np

from restyle._errors import ConfigurationError, RestyleError

logger = logging.getLogger("restyle.ray")

#: How often Ray re-runs a task whose worker died, and restarts an actor (and
#: re-sends the calls it had not answered) before a job gives up. Every stage
#: is safe to run again: reads and lookups change nothing, and a shard is
#: written to a temporary and renamed to a name its rows decide.
TASK_RETRIES = 4
ACTOR_RESTARTS = 4
#: What a task and an actor of every stage are started with.
TASK_OPTIONS: dict[str, Any] = {"max_retries": TASK_RETRIES}
ACTOR_OPTIONS: dict[str, Any] = {"max_restarts": ACTOR_RESTARTS,
                                 "max_task_retries": TASK_RETRIES}

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
        _check_access(address)
        try:
            ray.init(address=None if address == "auto" else address)
        except (ConnectionError, ValueError, RuntimeError, TimeoutError) as exc:
            if _authentication_failed(exc):
                raise ConfigurationError(_needs_token(address)) from exc
            raise ConfigurationError(
                f"cannot connect to the Ray cluster at {address!r}: {exc}"
            ) from exc
    return ray


def _needs_token(address: str) -> str:
    return (f"the Ray cluster at {address!r} requires authentication (it was started with "
            "RAY_AUTH_MODE=token) and this process has no token for it: set "
            "RAY_AUTH_MODE=token and the cluster's token in RAY_AUTH_TOKEN (or the path of "
            "a file holding it in RAY_AUTH_TOKEN_PATH), then run again; see docs/scale.md")


def _authentication_failed(exc: BaseException | None) -> bool:
    while exc is not None:
        if type(exc).__name__ == "AuthenticationError" or "InvalidAuthToken" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _check_access(address: str) -> None:
    """Ask the cluster's GCS at once whether this process may connect: a
    cluster that wants a token this process lacks answers in milliseconds,
    where ``ray.init`` would retry for tens of seconds and not say why."""
    host, _, port = address.rpartition(":")
    if address in ("local", "auto") or "://" in address or not port.isdigit():
        return
    try:  # nothing listening: say so now, not after ray.init's retries
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot connect to the Ray cluster at {address!r}: nothing answers there ({exc})"
        ) from exc
    try:
        from ray._raylet import GcsClient  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - another Ray: ray.init says what it says
        return
    try:
        GcsClient(address=address)
    except Exception as exc:
        if _authentication_failed(exc):
            raise ConfigurationError(_needs_token(address)) from exc
        # Anything else: ray.init tries again and says what it finds.


@dataclass(frozen=True, slots=True)
class Pool:
    """Actors and what each reserves, fitted to the cluster, and what a task reserves."""

    actors: int
    cpus: float
    gpus: float
    task_cpus: float


#: CPUs a job's stages other than its actors hold at once, besides one task of
#: ``task_cpus``: Ray Data's repartition task (one CPU) and a read and a write
#: task (a quarter each).
BESIDE_ACTORS = 1.5
#: The least an actor reserves when the cluster has less room.
MIN_ACTOR_CPUS = 0.25


def fit_pool(ray: Any, *, actors: int | None, actor_cpus: float, actor_gpus: float | None,
             task_cpus: float) -> Pool:
    """The pool asked for, with its defaults taken from the cluster's resources,
    fitted to the cluster: a pool that cannot all start beside the other
    stages' tasks would wait for ever, so it gets fewer actors (or one actor
    of the CPUs there are: at least :data:`MIN_ACTOR_CPUS`), with a warning
    when the actors were asked for."""
    resources = ray.cluster_resources()
    cluster_cpus, cluster_gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    gpus = actor_gpus if actor_gpus is not None else (1.0 if cluster_gpus >= 1 else 0.0)
    if gpus and cluster_gpus < gpus:
        raise ConfigurationError(f"an actor of {gpus:g} GPUs does not fit the Ray cluster's "
                                 f"{cluster_gpus:g} GPUs")
    wanted = actors if actors is not None else max(1, int(
        cluster_gpus // gpus if gpus else cluster_cpus // (2 * actor_cpus)))
    room = max(MIN_ACTOR_CPUS, cluster_cpus - task_cpus - BESIDE_ACTORS)
    fits = int(min(room // actor_cpus, cluster_gpus // gpus if gpus else wanted))
    fitted, cpus = min(wanted, max(1, fits)), actor_cpus if fits >= 1 else room
    if actors is not None and (fitted, cpus) != (wanted, actor_cpus):
        logger.warning(
            "%d actors of %g CPUs (%g GPUs) and tasks of %g CPUs do not fit the Ray cluster's "
            "%g CPUs and %g GPUs, and would wait for ever: running %d actors of %g CPUs",
            wanted, actor_cpus, gpus, task_cpus, cluster_cpus, cluster_gpus, fitted, cpus)
    return Pool(actors=fitted, cpus=cpus, gpus=gpus, task_cpus=task_cpus)


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


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def plain(text: str) -> str:
    """``text`` without terminal colour codes."""
    return _ANSI.sub("", text)


def run_failed(what: str, exc: BaseException, *, stages: Mapping[str, str] | None = None,
               advice: str = "") -> RestyleError:
    """A failure past what Ray retries (a worker killed too often, an error
    that is not restyle's) as a RestyleError of one plain line: ``what``
    failed, in which stage (the label in ``stages`` of the first function or
    class named in Ray's message), why (the user exception's own message, or
    Ray's first line, without colour codes), and ``advice``.

    Errors restyle raises in a stage do not come this way: they travel as
    data (:class:`Failure`) and are raised as they were."""
    text = plain(str(exc))
    stage = next((label for name, label in (stages or {}).items()
                  if re.search(rf"\b{re.escape(name)}\b", text)), None)
    where = f" while {stage}" if stage else ""
    return RestyleError(f"{what} failed on Ray{where}: {_cause(exc)}{advice}")


def _cause(exc: BaseException) -> str:
    """The first exception in ``exc``'s chain that is not Ray's, as
    ``Type: message``; else the first line of Ray's own that says something."""
    from ray.exceptions import RayError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if not isinstance(current, RayError):
            return _one_line(f"{type(current).__name__}: {plain(str(current))}")
        current = getattr(current, "cause", None) or current.__cause__
    text = plain(str(exc))
    # Ray keeps the user exception only in its traceback's text: "ValueError: ...".
    for match in _RAISED.finditer(text):
        if not match["type"].startswith("ray.") and match["type"] not in _RAY_NAMES:
            return f"{match['type'].rpartition('.')[2]}: {match['message'].strip()}"
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("ray::", "Traceback", "File ", "(", "^")):
            return _one_line(f"{type(exc).__name__}: {line}")
    return type(exc).__name__


_RAISED = re.compile(r"^(?P<type>[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)): "
                     r"(?P<message>.*)$", re.MULTILINE)
_RAY_NAMES = {"RayTaskError", "RayActorError", "ActorDiedError", "WorkerCrashedError",
              "UserCodeException", "RaySystemError", "ObjectLostError", "NodeDiedError"}


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else text


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
    working folder (see :func:`adopt`) besides ``arguments``; an actor lost
    is restarted and its batches sent again (:data:`ACTOR_OPTIONS`)."""
    return ds.map_batches(
        actor, batch_size=batch_size, compute=ray.data.ActorPoolStrategy(size=size),
        num_cpus=pool.cpus, num_gpus=pool.gpus or None,
        fn_constructor_kwargs={**arguments, "environment": environment(), "cwd": os.getcwd()},
        **ACTOR_OPTIONS,
    )


def results(rows: Iterable[Any], what: str, read: Callable[[Any], Any], *,
            stages: Mapping[str, str] | None = None, advice: str = "") -> Iterator[Any]:
    """``read(row)`` of each row, in order; a stage's RestyleError raised as it
    was, any other failure one plain line naming ``what`` and the stage
    (:func:`run_failed`); the rows closed whenever the reading stops."""
    rows = iter(rows)
    try:
        for row in rows:
            yield read(row)
    except RestyleError:
        raise
    except Exception as exc:
        raise run_failed(what, exc, stages=stages, advice=advice) from exc
    finally:
        close_rows(rows)

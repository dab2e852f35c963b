"""Where restyle's stages run on Ray: :class:`RayExecutor`, and the two jobs it
runs, a catalog build's encoding (:meth:`RayExecutor.encoded_listings`, for
the store's write loop) and a bulk analysis (:func:`analyze_on_ray`, with an
analyst factory the Engine hands over).

This package knows neither the store nor the Engine: they hand it the stages
it runs. The store takes an executor by what it does (``encoded_listings``),
and is told the name ``"ray"`` by the Engine's module, above both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from restyle._errors import ConfigurationError, RestyleError
from restyle._ray import analyze, build
from restyle._ray.cluster import Pool, connect, fit_pool

if TYPE_CHECKING:
    from restyle._ingestion.listings import CurrentImages, ListingLimits
    from restyle._input.fetching import Fetcher
    from restyle._input.imaging import ImageInput, Photo
    from restyle._plugin.components import Encoder
    from restyle._types import Analysis

__all__ = ["Executor", "RayExecutor", "analyze_on_ray", "ray_executor"]


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

    def connect(self) -> None:
        """Connect to the cluster now, and fit the pool to it (a job does both
        itself): what the command line does before it creates a catalog, so
        that a cluster out of reach, or one that wants a token this process
        lacks, leaves nothing behind."""
        self._connect()

    def _connect(self) -> tuple[Any, Pool]:
        ray = connect(self.address)
        return ray, fit_pool(ray, actors=self.actors, actor_cpus=self.actor_cpus,
                             actor_gpus=self.actor_gpus, task_cpus=self.task_cpus)

    def encoded_listings(
        self, source: Path, encoder: Encoder, *, base: Path, images_root: Path,
        limits: ListingLimits, fetcher: Fetcher | None, batch_size: int,
        checkpoint_every: int, directory: Path,
        stored_images: Callable[[], CurrentImages] | None,
    ) -> AbstractContextManager[build.RayBuild]:
        """A catalog build's stages up to the vectors, run on Ray: its rows come
        back in source order, a shard at a time, for the store to write (see
        docs/scale.md). ``directory`` is the catalog's (shards are staged
        there); ``stored_images`` opens the lookup of the images it holds."""
        ray, pool = self._connect()
        return build.encoded_listings(
            ray, pool, source=source, encoder=encoder, base=base, images_root=images_root,
            limits=limits, fetcher=fetcher, batch_size=batch_size,
            encoder_batch=self.batch_size, checkpoint_every=checkpoint_every,
            directory=directory, stored_images=stored_images,
        )


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


def analyze_on_ray(
    make_analyst: Callable[[], analyze.Analyst], images: Sequence[ImageInput | Photo], *,
    deadline: float | None, executor: str | RayExecutor, batch_photos: int,
) -> Iterator[Analysis | RestyleError]:
    """Each photo's Analysis or RestyleError, in input order, from analysts made
    by ``make_analyst`` (picklable) on Ray actors, ``batch_photos`` photos at a time."""
    options = ray_executor(executor)
    if not images:
        return
    ray, pool = options._connect()
    yield from analyze.analyze(ray, pool, make_analyst, images, deadline=deadline,
                               batch_photos=batch_photos)

"""The catalog's index, whichever kind: the chooser.

A catalog keeps a flat (or IVF) :class:`~restyle._indexes.flat.VectorIndex`
until it holds more than :data:`~restyle._indexes.sharded.SHARDED_ABOVE`
vectors, then a :class:`~restyle._indexes.sharded.ShardedIndex`
(:func:`grow_index`). This module loads and saves whichever kind is there, in
an order that leaves a loadable index whenever a save stops, and finds the
temporaries that stopped saves left behind.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from restyle._indexes import sharded as sharded_index
from restyle._indexes.flat import (
    VectorIndex,
    remove_stale_temporaries,
    stale_temporaries,
    temporary_pattern,
)
from restyle._indexes.sharded import (
    MANIFEST,
    MINIMUM_SIZE,
    PENDING,
    TRAIN_MAX,
    TRAIN_PER_LIST,
    ExactVectors,
    Runner,
    ShardedIndex,
    nlist_for,
    run_here,
    shards_path,
)

__all__ = [
    "TUNING_SAMPLE",
    "NearestIds",
    "TrainingPlan",
    "grow_index",
    "index_present",
    "load_index",
    "probes_near",
    "remove_stale_index_temporaries",
    "save_index",
    "sharded_above",
    "stale_index_temporaries",
    "training_schedule",
    "training_size",
]

logger = logging.getLogger("restyle.catalog")

#: Stored vectors drawn to tune a grown index's nprobe (its probes are 200 of them).
TUNING_SAMPLE = 2_000


def index_present(path: Path) -> bool:
    """Whether an index (flat, IVF or sharded) is saved for ``path``."""
    return path.is_file() or (shards_path(path) / MANIFEST).is_file()


def load_index(path: Path, *, dim: int, exact: ExactVectors | None = None,
               mapped: bool = False) -> VectorIndex | ShardedIndex:
    """The index saved for ``path``: the sharded one if its manifest is there.
    ``mapped``: a flat index's vectors mapped from its file, to search only
    (a sharded index maps its segments always)."""
    if (shards_path(path) / MANIFEST).is_file():
        return ShardedIndex.load(path, dim=dim, exact=exact)
    return VectorIndex.load(path, dim=dim, mapped=mapped)


def _temporary_patterns(path: Path) -> list[tuple[Path, list[re.Pattern[str]]]]:
    """Where the saves of the index for ``path`` put their temporaries, and their names."""
    shard_files = (r"(?:trained(?:-[0-9a-f]+)?\.faiss|" + re.escape(MANIFEST) + "|"
                   + re.escape(PENDING) + r"|shard-\d+\.g\d+(?:\.\d+)?\.faiss)")
    return [(path.parent, [temporary_pattern(re.escape(path.name))]),
            (shards_path(path), [temporary_pattern(shard_files)])]


def stale_index_temporaries(path: Path) -> list[Path]:
    """Temporaries left by saves of the index for ``path`` that were stopped
    (killed, or the machine went down) between writing and renaming."""
    return [found for folder, patterns in _temporary_patterns(path)
            for found in stale_temporaries(folder, patterns)]


def remove_stale_index_temporaries(path: Path) -> list[Path]:
    """Remove :func:`stale_index_temporaries`, never a live writer's file."""
    return [found for folder, patterns in _temporary_patterns(path)
            for found in remove_stale_temporaries(folder, patterns)]


def save_index(index: VectorIndex | ShardedIndex, path: Path) -> None:
    """Save ``index`` for ``path`` and remove the other kind, in an order that
    leaves a loadable index whenever it stops; first remove the temporaries
    that earlier saves, stopped midway, left behind."""
    remove_stale_index_temporaries(path)
    folder = shards_path(path)
    if isinstance(index, ShardedIndex):
        index.save(path)
        path.unlink(missing_ok=True)
        return
    (folder / MANIFEST).unlink(missing_ok=True)
    index.save(path)
    if folder.exists():
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class TrainingPlan:
    """A build's sharded index planned before the build starts: trained once,
    for the ``size`` vectors the catalog will hold at its end, on a sample
    drawn evenly across the whole input. ``drawn`` are the vectors of the rows
    drawn from the part of the input stored after the training (encoded ahead);
    the rest of the sample is drawn from the vectors stored by then."""

    size: int
    drawn: np.ndarray


def sharded_above(above: int | None = None) -> int:
    """The size past which a flat index becomes a sharded one: ``above``
    (default :data:`~restyle._indexes.sharded.SHARDED_ABOVE`), never below the
    least a sharded index takes."""
    return max(MINIMUM_SIZE, sharded_index.SHARDED_AT_LEAST,
               sharded_index.SHARDED_ABOVE if above is None else above)


class NearestIds:
    """The exact 10 nearest ids of a few probe vectors, kept up to date while
    vectors stream past in chunks (so no more than a chunk is in memory)."""

    def __init__(self, probes: np.ndarray, k: int = 10) -> None:
        self.probes = np.ascontiguousarray(probes, dtype=np.float32)
        self.k = k
        self.scores = np.full((len(probes), k), -np.inf, np.float32)
        self.ids = np.full((len(probes), k), -1, np.int64)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        scores = self.probes @ np.ascontiguousarray(vectors, dtype=np.float32).T
        all_scores = np.concatenate([self.scores, scores], axis=1)
        all_ids = np.concatenate([self.ids, np.broadcast_to(ids, scores.shape)], axis=1)
        order = np.argsort(-all_scores, axis=1, kind="stable")[:, : self.k]
        self.scores = np.take_along_axis(all_scores, order, 1)
        self.ids = np.take_along_axis(all_ids, order, 1)


def probes_near(vectors: np.ndarray, n: int = 200, seed: int = 0) -> np.ndarray:
    """Queries like a new photo of a catalog item: stored vectors moved by noise."""
    rng = np.random.default_rng(seed)
    picks = vectors[rng.choice(len(vectors), size=min(n, len(vectors)), replace=False)]
    noise = rng.standard_normal(picks.shape).astype(np.float32)
    noise *= 0.5 / np.linalg.norm(noise, axis=1, keepdims=True)
    probes = picks + noise
    probes /= np.linalg.norm(probes, axis=1, keepdims=True)
    return probes


def grow_index(
    index: VectorIndex | ShardedIndex, *,
    vectors: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]],
    sample: Callable[[int], np.ndarray], exact: ExactVectors | None,
    runner: Runner = run_here, above: int | None = None, plan: TrainingPlan | None = None,
) -> VectorIndex | ShardedIndex:
    """``index``, kept fit for its size (what a checkpoint calls).

    A flat index that holds more than ``above`` vectors (default
    :data:`~restyle._indexes.sharded.SHARDED_ABOVE`, never below
    :data:`~restyle._indexes.sharded.SHARDED_AT_LEAST`, under which flat
    search is faster) becomes a sharded IVF-PQ index of the same vectors:
    trained on ``sample(n)`` (n stored vectors drawn at random across the
    catalog), filled from ``vectors()`` (all of them, in chunks of ids and
    vectors) and tuned. A sharded index is tuned again once it holds
    :data:`~restyle._indexes.sharded.RETUNE_GROWTH` times the vectors it was
    tuned with, and trained again from a fresh sample once it holds more than
    :data:`~restyle._indexes.sharded.RETRAIN_GROWTH` times the vectors it was
    trained for. With a ``plan``, the flat index is trained for the plan's
    size on its sample (:class:`TrainingPlan`)."""
    if isinstance(index, ShardedIndex):
        size = len(index)
        if size > sharded_index.RETRAIN_GROWTH * max(index.trained_size, 1):
            logger.info("the sharded index holds %d vectors, trained for %d: training it again",
                        size, index.trained_size)
            return _trained(size, vectors=vectors, sample=sample, exact=exact, runner=runner)
        if size >= sharded_index.RETUNE_GROWTH * max(index.tuned_size, 1):
            nearest = NearestIds(probes_near(sample(min(size, TUNING_SAMPLE))))
            for ids, chunk in vectors():
                nearest.add(ids, chunk)
            index.tune(nearest.probes, nearest.ids)
        return index
    if len(index) <= sharded_above(above):
        return index
    return _trained(len(index), vectors=vectors, sample=sample, exact=exact, runner=runner,
                    plan=plan)


def _trained(size: int, *, vectors: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]],
             sample: Callable[[int], np.ndarray], exact: ExactVectors | None,
             runner: Runner, plan: TrainingPlan | None = None) -> ShardedIndex:
    """A sharded index of every vector, trained for ``size`` (the plan's, when
    larger) on a sample (the stored vectors' part of the plan's), and tuned."""
    if plan is not None and plan.size > size:
        size = plan.size
        wanted = training_size(size)
        drawn = plan.drawn[:wanted]
        stored = sample(max(0, wanted - len(drawn)))
        training = np.concatenate([stored, drawn]) if len(drawn) else stored
        logger.info("training the sharded index once, for the %d vectors the build ends with, "
                    "on %d drawn across its input (%d of them ahead of the build)",
                    size, len(training), len(drawn))
    else:
        training = sample(training_size(size))
    grown = ShardedIndex.train(training, size=size, exact=exact, runner=runner)
    nearest = NearestIds(probes_near(training))
    for ids, chunk in vectors():
        grown.upsert(ids, chunk)
        nearest.add(ids, chunk)
    grown.flush()
    grown.tune(nearest.probes, nearest.ids)
    return grown


def training_size(size: int) -> int:
    """The sample an index for ``size`` vectors is trained on."""
    return min(size, TRAIN_MAX, TRAIN_PER_LIST * nlist_for(size))


def training_schedule(final: int, *, checkpoint_every: int) -> list[tuple[int, int, int]]:
    """When a catalog built from empty to ``final`` vectors, a checkpoint every
    ``checkpoint_every``, trains its sharded index: (vectors held, lists,
    sample) at each training (what docs/scale.md's plan quotes). The build
    knows the size it ends with (its input's rows, counted or estimated: see
    :class:`TrainingPlan`), so it trains once, at its first checkpoint past
    the threshold, for that size."""
    limit = sharded_above()
    if final <= limit:
        return []
    held = min(final, (limit // checkpoint_every + 1) * checkpoint_every)
    return [(held, nlist_for(final), training_size(final))]

"""The parts of the sharded index that need none of its state: a shard's
segments and their files, written once each and atomically; searching
segments with the coarse lists' answer, and re-ranking with exact vectors."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from restyle._indexes.flat import _faiss, temporary_for

__all__ = ["Segment", "by_shard", "candidates", "list_ids", "npy", "positions_by_shard",
           "refines", "rerank", "saved_generation", "write_atomically"]


class Segment:
    """Part of a shard: an IVF index of codes, in memory or mapped from its file
    (``name``, None until written; a segment changed after it was written is
    written again under a new name)."""

    __slots__ = ("ivf", "keep", "mapped", "name")

    def __init__(self, keep: list[Any], ivf: Any, name: str | None, *, mapped: bool) -> None:
        self.keep, self.ivf, self.name, self.mapped = keep, ivf, name, mapped

    @property
    def size(self) -> int:
        return int(self.ivf.ntotal)


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def write_atomically(target: Path, data: bytes) -> None:
    fd, tmp = temporary_for(target)
    try:
        with os.fdopen(fd, "wb") as fh:  # closed, and unlocked, after the rename
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
            os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def list_ids(ivf: Any) -> np.ndarray:
    faiss = _faiss()
    invlists = ivf.invlists
    parts = [faiss.rev_swig_ptr(invlists.get_ids(n), invlists.list_size(n)).copy()
             for n in range(ivf.nlist) if invlists.list_size(n)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def positions_by_shard(ids: np.ndarray, shard_ids: int) -> Iterable[tuple[int, np.ndarray]]:
    shards = ids // shard_ids
    for shard in np.unique(shards):
        yield int(shard), np.flatnonzero(shards == shard)


def by_shard(ids: np.ndarray, shard_ids: int) -> Iterable[tuple[int, np.ndarray]]:
    for shard, positions in positions_by_shard(ids, shard_ids):
        yield shard, ids[positions]


def candidates(quantizer: Any, segments: list[Any], nprobe: int, rotated: np.ndarray,
               wanted: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``wanted`` (scores, ids) of each rotated query by code, over
    all ``segments`` (IVF indexes sharing ``quantizer``), ``nprobe`` lists each."""
    n = len(rotated)
    coarse_scores, coarse = quantizer.search(rotated, nprobe)
    found_scores, found_ids = [], []
    for ivf in segments:
        ivf.nprobe = nprobe
        scores, ids = ivf.search_preassigned(rotated, wanted, coarse, coarse_scores)
        found_scores.append(scores)
        found_ids.append(ids)
    if not found_ids:
        return np.full((n, wanted), -np.inf, np.float32), np.full((n, wanted), -1, np.int64)
    scores = np.concatenate(found_scores, axis=1)
    ids = np.concatenate(found_ids, axis=1)
    scores[ids < 0] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :wanted]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


def rerank(exact: Callable[[np.ndarray], np.ndarray], queries: np.ndarray,
           candidates: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of each query's ``candidates`` by exact inner product."""
    unique = np.unique(candidates[candidates >= 0])
    out_scores = np.full((len(queries), k), -np.inf, np.float32)
    out_ids = np.full((len(queries), k), -1, np.int64)
    if not len(unique):
        return out_scores, out_ids
    vectors = exact(unique)
    row_of = {int(item): row for row, item in enumerate(unique)}
    for q, row in enumerate(candidates):
        found = row[row >= 0]
        rows = np.array([row_of[int(i)] for i in found], dtype=np.int64)
        scores = vectors[rows] @ queries[q]
        scores[~np.isfinite(scores)] = -np.inf  # ids the database no longer holds
        best = np.argsort(-scores, kind="stable")[:k]
        keep = np.isfinite(scores[best])
        out_scores[q, : keep.sum()] = scores[best][keep]
        out_ids[q, : keep.sum()] = found[best][keep]
    return out_scores, out_ids


def refines(first: int, most: int) -> list[int]:
    """The candidates per result tuning tries, fewest first, doubling."""
    out = [first]
    while out[-1] < most:
        out.append(min(most, out[-1] * 2))
    return out


def saved_generation(folder: Path, manifest: str) -> int:
    """The generation of the manifest saved in ``folder`` (0 if none): a save's
    file names never reuse one the saved manifest may name."""
    try:
        return int(json.loads((folder / manifest).read_text()).get("generation", 0))
    except (OSError, ValueError, AttributeError):
        return 0

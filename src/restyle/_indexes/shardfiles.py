"""The files of the sharded index: a shard's segments, written once each;
ids added but not yet encoded; writes that are atomic."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from restyle._indexes.flat import _faiss, temporary_for

__all__ = ["Segment", "by_shard", "list_ids", "npy", "positions_by_shard",
           "write_atomically"]


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

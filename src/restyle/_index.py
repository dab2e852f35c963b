"""A faiss vector index with stable integer ids and atomic persistence."""

from __future__ import annotations

import os
import tempfile
import threading
from pathlib import Path

import numpy as np

from restyle._errors import CatalogError

__all__ = ["VectorIndex"]


def _faiss():  # type: ignore[no-untyped-def]
    import faiss

    return faiss


class VectorIndex:
    """Inner-product search over unit vectors, keyed by caller-chosen int64 ids.

    Thread-safe: searches and updates take one lock (faiss indexes are not safe
    to mutate while searched).
    """

    def __init__(self, dim: int) -> None:
        if dim < 1:
            raise ValueError("dim must be positive")
        faiss = _faiss()
        self.dim = dim
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def __repr__(self) -> str:
        return f"<VectorIndex dim={self.dim} size={len(self)}>"

    def _check(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape (n, {self.dim}), got {vectors.shape}")
        return vectors

    def upsert(self, ids: np.ndarray | list[int], vectors: np.ndarray) -> None:
        """Add vectors under ``ids``, replacing any already stored under those ids."""
        id_array = np.asarray(ids, dtype=np.int64)
        vectors = self._check(vectors)
        if len(id_array) != len(vectors):
            raise ValueError("ids and vectors differ in length")
        with self._lock:
            self._index.remove_ids(id_array)
            self._index.add_with_ids(vectors, id_array)

    def remove(self, ids: np.ndarray | list[int]) -> int:
        with self._lock:
            return int(self._index.remove_ids(np.asarray(ids, dtype=np.int64)))

    def reconstruct(self, item_id: int) -> np.ndarray | None:
        with self._lock:
            try:
                return np.asarray(self._index.reconstruct(int(item_id)), dtype=np.float32)
            except RuntimeError:
                return None

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best (scores, ids) per query; missing results have id -1."""
        queries = self._check(queries)
        k = max(1, min(k, max(len(self), 1)))
        with self._lock:
            scores, ids = self._index.search(queries, k)
        return scores, ids

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to ``path`` atomically: a crash leaves the old file intact."""
        faiss = _faiss()
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        os.close(fd)
        try:
            with self._lock:
                faiss.write_index(self._index, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, dim: int) -> VectorIndex:
        faiss = _faiss()
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise CatalogError(f"vector index {path} cannot be read: {exc}") from exc
        if index.d != dim:
            raise CatalogError(f"vector index {path} has dimension {index.d}, expected {dim}")
        self = cls.__new__(cls)
        self.dim = dim
        self._index = index
        self._lock = threading.Lock()
        return self

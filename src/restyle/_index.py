"""A faiss vector index with stable integer ids, exact or approximate by size, saved atomically.

Small collections use exact inner-product search. Above ``approximate_above``
vectors the index becomes an inverted file (IVF) whose ``nprobe`` is tuned on
the data to a target recall@10, as autofaiss does. IVF rather than HNSW
because IVF removes and replaces vectors in place, so updates never need a
rebuild; HNSW cannot remove.
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from restyle._errors import CatalogError

__all__ = ["NORM_TOLERANCE", "VectorIndex", "vector_problem"]

#: Collections larger than this get an approximate index.
APPROXIMATE_ABOVE = 50_000
#: Query batches at least this large use BLAS (faiss's default is 20 for flat
#: search but 250 in places, which leaves mid-sized batches on a slow path).
BLAS_THRESHOLD = 16

#: How far an embedding's length may be from 1 (fp16 encoders round to ~1e-3).
NORM_TOLERANCE = 1e-2

_configured = False


def vector_problem(vector: np.ndarray, dim: int | None = None) -> str | None:
    """Why ``vector`` is not a usable embedding (a finite unit vector of ``dim``
    values), or None."""
    if vector.ndim != 1 or vector.size == 0:
        return f"shape {vector.shape}"
    if dim is not None and vector.size != dim:
        return f"dimension {vector.size}, not {dim}"
    if not np.all(np.isfinite(vector)):
        return "values that are not finite"
    norm = float(np.linalg.norm(vector.astype(np.float64)))
    if abs(norm - 1.0) > NORM_TOLERANCE:
        return f"length {norm:.3g}, not 1"
    return None


def _faiss() -> Any:
    import faiss

    global _configured
    if not _configured:
        # Process-wide faiss setting; lowering it only moves batches of 16+
        # queries to BLAS, never single queries.
        faiss.cvar.distance_compute_blas_threshold = BLAS_THRESHOLD
        _configured = True
    return faiss


def _nlist_for(n: int) -> int:
    """Inverted lists for ``n`` vectors: about 2*sqrt(n), a power of two."""
    return int(2 ** max(4, round(math.log2(2 * math.sqrt(max(n, 1))))))


class VectorIndex:
    """Inner-product search over unit vectors, keyed by caller-chosen int64 ids.

    Thread-safe: searches and updates take one lock (faiss indexes are not safe
    to mutate while searched).
    """

    def __init__(
        self, dim: int, *, approximate_above: int = APPROXIMATE_ABOVE,
        target_recall: float = 0.95,
    ) -> None:
        if dim < 1:
            raise ValueError("dim must be positive")
        if not 0 < target_recall <= 1:
            raise ValueError("target_recall must be in (0, 1]")
        faiss = _faiss()
        self.dim = dim
        self.approximate_above = approximate_above
        self.target_recall = target_recall
        self._index: Any = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._trained_size = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def __repr__(self) -> str:
        return f"<VectorIndex {self.kind} dim={self.dim} size={len(self)}>"

    @property
    def kind(self) -> str:
        """``"flat"`` (exact) or ``"ivf"`` (approximate)."""
        return "ivf" if hasattr(self._index, "nprobe") else "flat"

    @property
    def nprobe(self) -> int | None:
        return int(self._index.nprobe) if self.kind == "ivf" else None

    def _check(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim == 1:
            vectors = vectors[None, :]
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise ValueError(f"expected vectors of shape (n, {self.dim}), got {vectors.shape}")
        return vectors

    def upsert(self, ids: np.ndarray | list[int], vectors: np.ndarray) -> None:
        """Add vectors under ``ids``, replacing any already stored under those ids."""
        id_array = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = self._check(vectors)
        if len(id_array) != len(vectors):
            raise ValueError("ids and vectors differ in length")
        if len(np.unique(id_array)) != len(id_array):
            raise ValueError("ids must be unique")
        with self._lock:
            if len(self):
                self._index.remove_ids(id_array)
            self._index.add_with_ids(vectors, id_array)
            size = len(self)
            if self.kind == "flat" and size > self.approximate_above:
                self._become_approximate()
            elif self.kind == "ivf" and size > 4 * self._trained_size:
                # Centroids trained on a quarter of the data no longer fit it.
                self._become_approximate()

    def remove(self, ids: np.ndarray | list[int]) -> int:
        with self._lock:
            if not len(self):
                return 0
            return int(self._index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64)))

    def reconstruct(self, item_id: int) -> np.ndarray | None:
        with self._lock:
            try:
                return np.asarray(self._index.reconstruct(int(item_id)), dtype=np.float32)
            except RuntimeError:
                return None

    def ids(self) -> np.ndarray:
        """The ids of every stored vector (int64, in no particular order)."""
        faiss = _faiss()
        with self._lock:
            if not len(self):
                return np.zeros(0, np.int64)
            if self.kind == "flat":
                flat_ids: np.ndarray = faiss.vector_to_array(self._index.id_map).astype(np.int64)
                return flat_ids
            invlists = self._index.invlists
            parts = [
                faiss.rev_swig_ptr(invlists.get_ids(n), invlists.list_size(n)).copy()
                for n in range(self._index.nlist) if invlists.list_size(n)
            ]
            return np.concatenate(parts).astype(np.int64)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best (scores, ids) per query; missing results have id -1."""
        queries = self._check(queries)
        k = max(1, min(k, max(len(self), 1)))
        with self._lock:
            scores, ids = self._index.search(queries, k)
        return scores, ids

    # -- approximate -----------------------------------------------------------

    def _all(self) -> tuple[np.ndarray, np.ndarray]:
        faiss = _faiss()
        if self.kind == "flat":
            ids = faiss.vector_to_array(self._index.id_map).astype(np.int64)
            vectors = self._index.index.reconstruct_n(0, len(self))
            return ids, np.ascontiguousarray(vectors, dtype=np.float32)
        ids_list, vec_list = [], []
        invlists = self._index.invlists
        for list_no in range(self._index.nlist):
            size = invlists.list_size(list_no)
            if not size:
                continue
            ids_list.append(faiss.rev_swig_ptr(invlists.get_ids(list_no), size).copy())
            codes = faiss.rev_swig_ptr(invlists.get_codes(list_no), size * self.dim * 4)
            vec_list.append(np.frombuffer(codes.copy(), dtype=np.float32).reshape(size, self.dim))
        return np.concatenate(ids_list).astype(np.int64), np.concatenate(vec_list)

    def _become_approximate(self) -> None:
        """Rebuild as IVF trained on the current vectors, tuned to the target recall."""
        faiss = _faiss()
        ids, vectors = self._all()
        n = len(ids)
        nlist = _nlist_for(n)
        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = 10
        rng = np.random.default_rng(0)
        sample = vectors[rng.choice(n, size=min(n, 40 * nlist), replace=False)]
        index.train(sample)
        index.set_direct_map_type(faiss.DirectMap.Hashtable)
        index.add_with_ids(vectors, ids)
        index.nprobe = self._tune_nprobe(index, ids, vectors, rng)
        self._index = index
        self._trained_size = n

    def _tune_nprobe(self, index: Any, ids: np.ndarray, vectors: np.ndarray,
                     rng: np.random.Generator) -> int:
        """The smallest nprobe whose recall@10 reaches the target on sample queries.

        Queries are stored vectors moved by noise (a real query photo is near
        its catalog twin, not equal to it); the truth comes from exact search.
        """
        faiss = _faiss()
        picks = vectors[rng.choice(len(vectors), size=min(len(vectors), 256), replace=False)]
        noise = rng.standard_normal(picks.shape).astype(np.float32)
        noise *= 0.5 / np.linalg.norm(noise, axis=1, keepdims=True)
        queries = picks + noise
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        k = min(10, len(vectors))
        exact = faiss.IndexFlatIP(self.dim)
        exact.add(vectors)
        _, truth_rows = exact.search(queries, k)
        truth = [set(ids[row].tolist()) for row in truth_rows]
        nprobe = 1
        while True:
            index.nprobe = nprobe
            _, found = index.search(queries, k)
            hits = sum(len(t & set(f.tolist())) for t, f in zip(truth, found, strict=True))
            if hits >= self.target_recall * k * len(queries) or nprobe >= index.nlist:
                # A margin: the tuning queries are only a sample.
                return int(min(index.nlist, math.ceil(nprobe * 1.25)))
            nprobe = math.ceil(nprobe * (2 if nprobe < 8 else 1.5))

    # -- persistence -----------------------------------------------------------

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
            _fsync_dir(target.parent)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, dim: int,
        approximate_above: int = APPROXIMATE_ABOVE, target_recall: float = 0.95,
    ) -> VectorIndex:
        faiss = _faiss()
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise CatalogError(f"vector index {path} cannot be read: {exc}") from exc
        if index.d != dim:
            raise CatalogError(f"vector index {path} has dimension {index.d}, expected {dim}")
        self = cls(dim, approximate_above=approximate_above, target_recall=target_recall)
        if hasattr(index, "nprobe") and index.direct_map.type != faiss.DirectMap.Hashtable:
            index.set_direct_map_type(faiss.DirectMap.Hashtable)
        self._index = index
        self._trained_size = int(index.ntotal)
        return self


def _fsync_dir(directory: Path) -> None:
    # The rename itself must reach the disk, or a power cut can undo it.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

"""A faiss vector index with stable integer ids, exact or approximate by size, saved atomically.

Small collections use exact inner-product search. Above ``approximate_above``
vectors the index plans itself on the data: it trains an inverted file (IVF)
and tunes its ``nprobe`` to a target recall@10 on a sample, as autofaiss does,
and keeps it only if it then computes at most 1/:data:`MIN_SPEEDUP` of the
distances exact search does; otherwise (data without structure to exploit)
it stays exact, which is then as fast. IVF rather than HNSW because IVF
removes and replaces vectors in place, so updates never need a rebuild; HNSW
cannot remove. Building it streams the vectors in chunks into lists sized
beforehand, so an upsert holds little more than one copy of the data.
"""

from __future__ import annotations

import logging
import math
import os
import re
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from restyle._errors import CatalogError
from restyle._plugin.contracts import NORM_TOLERANCE, vector_problem

__all__ = [
    "NORM_TOLERANCE",
    "STALE_TEMPORARY_SECONDS",
    "VectorIndex",
    "remove_stale_temporaries",
    "stale_temporaries",
    "temporary_for",
    "temporary_pattern",
    "vector_problem",
]

logger = logging.getLogger("restyle.catalog")

#: Collections larger than this are considered for an approximate index.
APPROXIMATE_ABOVE = 50_000
#: Query batches at least this large use BLAS (faiss's default is 20 for flat
#: search but 250 in places, which leaves mid-sized batches on a slow path).
BLAS_THRESHOLD = 16
#: The approximate index is kept only when a query computes at most this
#: fraction of exact search's distances. Exact search over a batch of queries
#: runs as one matrix product (BLAS), three to four times faster per distance
#: than IVF's scan of its lists on this kind of CPU, so a smaller margin would
#: make batches slower than exact search.
MIN_SPEEDUP = 8.0


# Vectors handled at once when an index is built or searched in bulk.
_CHUNK = 8192
# Vectors an approximate index is first tried on, before it is built in full.
_PLAN_SAMPLE = 32_768
# Tuning queries: enough for a recall estimate within about a percent.
_TUNING_QUERIES = 256

#: A temporary file left by an atomic write is stale, and removed by the next
#: writer, when no live writer holds its lock and it has not changed for this
#: long (the time covers the instant between creating a file and locking it).
STALE_TEMPORARY_SECONDS = 60.0
# Where files cannot be locked (not POSIX), the age alone decides, and it is longer.
_STALE_WITHOUT_LOCKS = 3600.0
# The random part tempfile.mkstemp puts in a name.
_RANDOM_PART = "[a-z0-9_]{8}"

_configured = False

_Chunks = Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]


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



def ids_and_rows(ids: np.ndarray | list[int], vectors: np.ndarray,
                 dim: int) -> tuple[np.ndarray, np.ndarray]:
    """What an ``upsert`` is handed, checked: int64 ids, unique, one per row of
    ``vectors`` (see :func:`as_rows`)."""
    id_array = np.ascontiguousarray(ids, dtype=np.int64)
    rows = as_rows(vectors, dim)
    if len(id_array) != len(rows):
        raise ValueError("ids and vectors differ in length")
    if len(np.unique(id_array)) != len(id_array):
        raise ValueError("ids must be unique")
    return id_array, rows


def as_rows(vectors: np.ndarray, dim: int) -> np.ndarray:
    """``vectors`` as a C-ordered float32 array of shape (n, ``dim``) (one
    vector becomes one row), or ValueError."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim == 1:
        vectors = vectors[None, :]
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ValueError(f"expected vectors of shape (n, {dim}), got {vectors.shape}")
    return vectors

class VectorIndex:
    """Inner-product search over unit vectors, keyed by caller-chosen int64 ids.

    Thread-safe: searches and updates take one lock (faiss indexes are not safe
    to mutate while searched). ``scan_fraction`` is, after planning, the share
    of the stored vectors a query compares itself with (1.0 for exact search;
    None when not measured in this process).
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
        # The size at which the kind was last chosen: the next choice is made
        # when the collection has grown four times past it.
        self._planned_at = 0
        self.scan_fraction: float | None = None
        # What the last IVF tried would have scanned (for benchmarks).
        self._ivf_fraction: float | None = None
        # Mapped from its file (see load): searched in place, never changed.
        self._mapped = False
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

    @property
    def nlist(self) -> int | None:
        return int(self._index.nlist) if self.kind == "ivf" else None

    def _check(self, vectors: np.ndarray) -> np.ndarray:
        return as_rows(vectors, self.dim)

    def upsert(self, ids: np.ndarray | list[int], vectors: np.ndarray) -> None:
        """Add vectors under ``ids``, replacing any already stored under those ids.

        ``vectors`` is not copied beyond what the index stores: a float32,
        C-ordered array is read in place.
        """
        id_array, vectors = ids_and_rows(ids, vectors, self.dim)
        with self._lock:
            self._changeable()
            if len(self):
                self._index.remove_ids(id_array)
            size = len(self) + len(id_array)
            if size > self.approximate_above and size > 4 * self._planned_at:
                self._plan(id_array, vectors)
            else:
                for start in range(0, len(id_array), _CHUNK):
                    self._index.add_with_ids(vectors[start : start + _CHUNK],
                                             id_array[start : start + _CHUNK])

    def remove(self, ids: np.ndarray | list[int]) -> int:
        with self._lock:
            self._changeable()
            if not len(self):
                return 0
            return int(self._index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64)))

    def mapped(self) -> bool:
        """Whether the vectors are mapped from the index's file, to search only
        (a sharded index's ``mapped()`` counts its segments mapped)."""
        return self._mapped

    def _changeable(self) -> None:
        """Refuse to change a mapped index: faiss would abort the process."""
        if self._mapped:
            raise CatalogError("the vector index was opened to search, mapped from its file; "
                               "open the catalog for writing to change it")

    def reconstruct(self, item_id: int) -> np.ndarray | None:
        with self._lock:
            try:
                return np.asarray(self._index.reconstruct(int(item_id)), dtype=np.float32)
            except RuntimeError:
                return None

    def ids(self) -> np.ndarray:
        """The ids of every stored vector (int64, in no particular order)."""
        with self._lock:
            if not len(self):
                return np.zeros(0, np.int64)
            return np.concatenate([ids for ids, _ in _contents(self._index, self.dim)()])

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best (scores, ids) per query; missing results have id -1."""
        queries = self._check(queries)
        k = max(1, min(k, max(len(self), 1)))
        with self._lock:
            scores, ids = self._index.search(queries, k)
        return scores, ids

    # -- choosing and building ----------------------------------------------------

    def _plan(self, new_ids: np.ndarray, new_vectors: np.ndarray) -> None:
        """Choose the kind for the stored vectors plus the new ones and build it.

        An IVF is trained and tuned on a sample first; only if it beats exact
        search by :data:`MIN_SPEEDUP` there is it built in full (and tuned
        again on everything). Neither step holds a second copy of the data.
        """
        faiss = _faiss()
        current = _contents(self._index, self.dim)

        def everything() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            yield from current()
            for start in range(0, len(new_ids), _CHUNK):
                yield new_ids[start : start + _CHUNK], new_vectors[start : start + _CHUNK]

        n = len(self) + len(new_ids)
        nlist = _nlist_for(n)
        rng = np.random.default_rng(0)
        # Enough to train the lists (40 vectors each) and judge them; at most a
        # quarter of the data beyond that.
        size = min(n, max(40 * nlist, min(_PLAN_SAMPLE, n // 4)))
        sample = _gather(everything, np.sort(rng.choice(n, size=size, replace=False)),
                         self.dim)
        rng.shuffle(sample)
        quantizer = faiss.IndexFlatIP(self.dim)
        ivf = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.niter = 10
        ivf.cp.spherical = True  # centroids of unit vectors, compared by inner product
        ivf.train(sample[: 40 * nlist])
        queries = _tuning_queries(sample, rng)
        # First on a sample: does an IVF pay at all?
        trial = faiss.IndexIVFFlat(quantizer, self.dim, nlist, faiss.METRIC_INNER_PRODUCT)
        trial.add(sample)
        truth = faiss.knn(queries, sample, min(10, size), faiss.METRIC_INNER_PRODUCT)[1]
        _, fraction = self._tune(trial, queries, truth, n)
        self._ivf_fraction = fraction
        del trial, sample
        if 1 / fraction >= MIN_SPEEDUP:
            _fill(ivf, everything, n)
            ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
            truth_ids = _exact_top(everything, queries, min(10, n))
            nprobe, fraction = self._tune(ivf, queries, truth_ids, n)
            ivf.nprobe = nprobe
            self._ivf_fraction = fraction
            if 1 / fraction >= MIN_SPEEDUP:
                self._index, self.scan_fraction = ivf, fraction
                self._planned_at = n
                return
            del ivf  # the sample misled: exact search after all
        if self.kind == "flat":
            for start in range(0, len(new_ids), _CHUNK):
                self._index.add_with_ids(new_vectors[start : start + _CHUNK],
                                         new_ids[start : start + _CHUNK])
        else:
            flat = faiss.IndexIDMap2(faiss.IndexFlatIP(self.dim))
            for ids, vectors in everything():
                flat.add_with_ids(vectors, ids)
            self._index = flat
        self.scan_fraction = 1.0
        self._planned_at = n

    def _tune(self, index: Any, queries: np.ndarray, truth: np.ndarray,
              n: int) -> tuple[int, float]:
        """The smallest nprobe whose recall@10 on ``queries`` reaches the target
        (plus a margin: the queries are a sample), and the share of exact
        search's distances a query then computes among ``n`` vectors (the
        coarse quantizer's included). ``truth`` holds the exact answers' ids."""
        k = truth.shape[1]
        wanted = [set(row.tolist()) for row in truth]
        nprobe = 1
        while True:
            index.nprobe = nprobe
            _, found = index.search(queries, k)
            hits = sum(len(t & set(f.tolist())) for t, f in zip(wanted, found, strict=True))
            if hits >= self.target_recall * k * len(queries) or nprobe >= index.nlist:
                break
            nprobe = math.ceil(nprobe * (2 if nprobe < 8 else 1.5))
        nprobe = int(min(index.nlist, math.ceil(nprobe * 1.25)))
        sizes = np.array([index.invlists.list_size(i) for i in range(index.nlist)])
        _, probed = index.quantizer.search(queries, nprobe)
        scanned = float(sizes[probed].sum(axis=1).mean()) / max(1, int(sizes.sum()))
        return nprobe, min(1.0, scanned + index.nlist / n)

    # -- persistence -----------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to ``path`` atomically: a crash leaves the old file
        intact, and at worst a temporary file that the next writer removes
        (see :func:`remove_stale_temporaries`)."""
        faiss = _faiss()
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temporary_for(target)
        try:
            with self._lock:
                faiss.write_index(self._index, str(tmp))
            os.fsync(fd)  # the same file: faiss wrote it through another descriptor
            os.replace(tmp, target)
            _fsync_dir(target.parent)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        finally:
            os.close(fd)  # only now: the lock marks the file as being written

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], *, dim: int,
        approximate_above: int = APPROXIMATE_ABOVE, target_recall: float = 0.95,
        mapped: bool = False,
    ) -> VectorIndex:
        """The index saved at ``path``. ``mapped``: its vectors mapped from the
        file, not read (a million vectors open in a tenth of a second, and the
        processes that search one catalog share its pages); such an index is
        only searched (changing it raises CatalogError). Saves replace the file
        (:meth:`save`), so a mapped index keeps the file it opened."""
        faiss = _faiss()
        try:
            index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC if mapped else 0)
        except RuntimeError as exc:
            raise CatalogError(f"vector index {path} cannot be read: {exc}") from exc
        if index.d != dim:
            raise CatalogError(f"vector index {path} has dimension {index.d}, expected {dim}")
        self = cls(dim, approximate_above=approximate_above, target_recall=target_recall)
        if hasattr(index, "nprobe") and index.direct_map.type != faiss.DirectMap.Hashtable:
            index.set_direct_map_type(faiss.DirectMap.Hashtable)
        self._index, self._mapped = index, mapped
        if hasattr(index, "nprobe") or index.ntotal > approximate_above:
            self._planned_at = int(index.ntotal)  # chosen when it was built
        return self


# -- bulk helpers -------------------------------------------------------------------


def _contents(index: Any, dim: int) -> _Chunks:
    """A re-iterable source of the (ids, vectors) stored in ``index``, in chunks."""
    faiss = _faiss()

    def flat() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        ids = faiss.vector_to_array(index.id_map).astype(np.int64)
        for start in range(0, len(ids), _CHUNK):
            count = min(_CHUNK, len(ids) - start)
            yield ids[start : start + count], index.index.reconstruct_n(start, count)

    def lists() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        invlists = index.invlists
        for list_no in range(index.nlist):
            size = invlists.list_size(list_no)
            if size:
                ids = faiss.rev_swig_ptr(invlists.get_ids(list_no), size).copy()
                codes = faiss.rev_swig_ptr(invlists.get_codes(list_no), size * dim * 4)
                yield ids.astype(np.int64), np.frombuffer(codes, np.float32).reshape(size, dim)

    return lists if hasattr(index, "nprobe") else flat


def _gather(source: _Chunks, positions: np.ndarray, dim: int) -> np.ndarray:
    """The vectors at sorted ``positions`` of ``source``, copied."""
    vectors = np.empty((len(positions), dim), np.float32)
    done = offset = 0
    for chunk_ids, chunk in source():
        end = offset + len(chunk_ids)
        stop = int(np.searchsorted(positions, end))
        vectors[done:stop] = chunk[positions[done:stop] - offset]
        done, offset = stop, end
    return vectors


def _tuning_queries(vectors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stored vectors moved by noise: a real query photo is near its catalog
    twin, not equal to it."""
    picks = vectors[rng.choice(len(vectors), size=min(len(vectors), _TUNING_QUERIES),
                               replace=False)]
    noise = rng.standard_normal(picks.shape).astype(np.float32)
    noise *= 0.5 / np.linalg.norm(noise, axis=1, keepdims=True)
    queries = picks + noise
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return np.ascontiguousarray(queries, dtype=np.float32)


def _exact_top(source: _Chunks, queries: np.ndarray, k: int) -> np.ndarray:
    """The ids of the ``k`` best matches of each query among everything in
    ``source``, by exact search one chunk at a time."""
    faiss = _faiss()
    heap = faiss.ResultHeap(len(queries), k, keep_max=True)
    for ids, vectors in source():
        scores, rows = faiss.knn(queries, vectors, min(k, len(ids)),
                                 faiss.METRIC_INNER_PRODUCT)
        heap.add_result(np.ascontiguousarray(scores, np.float32),
                        np.ascontiguousarray(ids[rows], np.int64))
    heap.finalize()
    found: np.ndarray = heap.I
    return found


def _fill(ivf: Any, source: _Chunks, n: int) -> None:
    """Put the ``n`` vectors of ``source`` into the trained, empty ``ivf``.

    Each vector's list is found first, so every list is allocated once at its
    final size and filled in place: faiss's own ``add`` grows the lists as it
    goes, reallocating each several times.
    """
    faiss = _faiss()
    labels = np.empty(n, np.int64)
    offset = 0
    for ids, vectors in source():
        _, assigned = ivf.quantizer.search(vectors, 1)
        labels[offset : offset + len(ids)] = assigned[:, 0]
        offset += len(ids)
    invlists = ivf.invlists
    filled = np.zeros(ivf.nlist, np.int64)
    for list_no, count in enumerate(np.bincount(labels, minlength=ivf.nlist).tolist()):
        if count:
            invlists.resize(list_no, count)
    offset = 0
    for ids, vectors in source():
        chunk_labels = labels[offset : offset + len(ids)]
        offset += len(ids)
        order = np.argsort(chunk_labels, kind="stable")
        grouped_ids = np.ascontiguousarray(ids[order], dtype=np.int64)
        grouped = np.ascontiguousarray(vectors[order], dtype=np.float32)
        sorted_labels = chunk_labels[order]
        starts = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1]])
        ends = np.r_[starts[1:], len(order)]
        for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
            list_no = int(sorted_labels[start])
            invlists.update_entries(list_no, int(filled[list_no]), end - start,
                                    faiss.swig_ptr(grouped_ids[start:end]),
                                    faiss.swig_ptr(grouped[start:end].view(np.uint8)))
            filled[list_no] += end - start
    ivf.ntotal = n


# -- temporary files of atomic writes -----------------------------------------------


def temporary_for(target: Path, suffix: str = "") -> tuple[int, Path]:
    """A new, empty temporary file beside ``target`` for an atomic write, named
    ``.NAME.XXXXXXXX`` (plus ``suffix``), and its descriptor.

    The file is locked (``flock``, where the system has it) for as long as the
    descriptor stays open: a writer closes it only after the rename, so a
    cleaner in any process tells a live writer's file from a dead one's.
    """
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    try:
        fcntl = _fcntl()
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        Path(name).unlink(missing_ok=True)
        raise
    return fd, Path(name)


def temporary_pattern(name: str, suffix: str = "") -> re.Pattern[str]:
    """The names :func:`temporary_for` gives the temporaries of a file named
    ``name`` (a regular expression, for names that vary, as shards' do)."""
    return re.compile(r"\." + name + r"\." + _RANDOM_PART + re.escape(suffix))


def stale_temporaries(folder: Path, patterns: Iterable[re.Pattern[str]]) -> list[Path]:
    """The temporaries in ``folder`` (files whose whole name matches one of
    ``patterns``) that no live writer holds: regular files, unchanged for
    :data:`STALE_TEMPORARY_SECONDS`, and not locked. Writes nothing."""
    return list(_stale(folder, list(patterns), remove=False))


def remove_stale_temporaries(folder: Path, patterns: Iterable[re.Pattern[str]]) -> list[Path]:
    """Remove the stale temporaries of :func:`stale_temporaries`; the paths
    removed. A file a writer still holds, or one that changed meanwhile, stays."""
    removed = list(_stale(folder, list(patterns), remove=True))
    if removed:
        logger.info("removed %d temporary files left by an interrupted save: %s",
                    len(removed), ", ".join(p.name for p in removed))
    return removed


def _stale(folder: Path, patterns: list[re.Pattern[str]],
           *, remove: bool) -> Iterator[Path]:
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return
    fcntl = _fcntl()
    oldest = time.time() - (STALE_TEMPORARY_SECONDS if fcntl else _STALE_WITHOUT_LOCKS)
    for name in names:
        if not any(p.fullmatch(name) for p in patterns):
            continue
        path = folder / name
        try:
            info = os.lstat(path)
            if not stat.S_ISREG(info.st_mode) or info.st_mtime > oldest:
                continue
            if fcntl is None:
                if remove:
                    path.unlink()
                yield path
                continue
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)
                         | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live writer holds it
            opened = os.fstat(fd)
            now = os.lstat(path)
            if (opened.st_ino, opened.st_dev) != (now.st_ino, now.st_dev) \
                    or now.st_mtime > oldest:
                continue  # renamed into place, or written, since it was listed
            if remove:
                path.unlink()
            yield path
        except OSError:
            continue
        finally:
            os.close(fd)


def _fcntl() -> Any:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return None
    return fcntl


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

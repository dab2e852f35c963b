"""The vector index of catalogs past memory: IVF-PQ, sharded by id, re-ranked exactly.

Above :data:`SHARDED_ABOVE` vectors a catalog's index becomes an inverted file
of product-quantized codes (:data:`CODE_BYTES` bytes a vector, after an OPQ
rotation that also drops the dimensions PQ cannot use) trained once on a
sample of the catalog's vectors. Codes are kept in shards of
:data:`SHARD_IDS` consecutive ids, one faiss file each, which share the
trained coarse quantizer and are searched together; a catalog opened to
search maps them from disk instead of reading them, so the index need not fit
in memory. New listings only touch the last shard. The best
``REFINE * k`` candidates are re-ranked with the exact vectors the catalog
database stores, which is what brings recall@10 back above 0.9.

Training and encoding go through a *runner* (``runner(fn, shared, items)``,
like ``map``): in this process by default, Ray tasks in a Ray build.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from restyle._errors import CatalogError
from restyle._indexes.flat import (
    _faiss,
    _fsync_dir,
    as_rows,
    ids_and_rows,
    temporary_for,
)

__all__ = [
    "SHARDED_ABOVE",
    "Runner",
    "ShardedIndex",
    "train_shard_template",
]

#: Catalogs with more vectors than this get a sharded IVF-PQ index.
SHARDED_ABOVE = 1_000_000
#: Consecutive ids per shard (about 300 MB of codes and ids at 64 bytes a vector).
SHARD_IDS = 1 << 22
#: Bytes of PQ code per vector (ids add 8 more).
CODE_BYTES = 56
#: Candidates per wanted result that are re-ranked with exact vectors.
REFINE = 10
#: Vectors the coarse quantizer and PQ are trained on: per inverted list, and at most.
TRAIN_PER_LIST = 48
TRAIN_MAX = 500_000
#: The fewest vectors a sharded index is trained on (PQ's 256 centroids each need one).
MINIMUM_SIZE = 256
#: Vectors encoded per task, and vectors held back until encoded together
#: (encoding is the costly part of adding: each vector meets every coarse centroid).
ENCODE_CHUNK = 2_500
FLUSH_AT = 100_000
#: Recall@10 that nprobe is tuned to, on held-out queries, after re-ranking.
TARGET_RECALL = 0.95

MANIFEST = "manifest.json"
_FORMAT = 1

_T = TypeVar("_T")
_R = TypeVar("_R")
#: ``runner(fn, shared, items) -> [fn(shared, item) for item in items]``, run anywhere.
Runner = Callable[[Callable[[Any, Any], Any], Any, Sequence[Any]], list[Any]]
#: Exact vectors by id: ``exact(ids) -> (len(ids), dim)`` float32, NaN rows for ids not stored.
ExactVectors = Callable[[np.ndarray], np.ndarray]


def run_here(fn: Callable[[Any, Any], _R], shared: Any, items: Sequence[Any]) -> list[_R]:
    """The default runner: in this process, one item after another."""
    return [fn(shared, item) for item in items]


def shards_path(path: Path) -> Path:
    """Where the sharded form of the index at ``path`` (``vectors.faiss``) lives."""
    return path.with_suffix(".shards")


def nlist_for(n: int) -> int:
    """Inverted lists for ``n`` vectors: about 4 * sqrt(n), a power of two of at
    most 65,536, with at least 8 vectors per list to train on."""
    lists = 2 ** min(16, round(math.log2(4 * math.sqrt(max(n, 1)))))
    return int(max(1, min(lists, 2 ** int(math.log2(max(n // 8, 1))))))


def code_bytes_for(dim: int) -> tuple[int, int]:
    """(PQ sub-quantizers, dimensions kept by OPQ): at most :data:`CODE_BYTES`
    bytes, with at least 2 dimensions per sub-quantizer."""
    m = max(1, min(CODE_BYTES, dim // 2))
    kept = min(dim, m * max(1, dim // m))
    return m, kept


def train_shard_template(_: Any, job: tuple[np.ndarray, int]) -> bytes:
    """Train OPQ, the coarse quantizer and PQ on ``sample``; the empty trained
    index, serialized (run by a runner, anywhere)."""
    sample, nlist = job
    faiss = _faiss()
    dim = sample.shape[1]
    m, kept = code_bytes_for(dim)
    # "np": no polysemous training, which costs much and serves only Hamming filtering.
    index = faiss.index_factory(dim, f"OPQ{m}_{kept},IVF{nlist},PQ{m}np",
                                faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.niter = 10
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    return bytes(faiss.serialize_index(index))


_TEMPLATES: dict[str, Any] = {}


def _encode(template: tuple[str, bytes], vectors: np.ndarray) -> np.ndarray:
    """Codes (list number and PQ code) of rotated ``vectors`` (run by a runner,
    anywhere). The trained index is read once per process, by its digest."""
    faiss = _faiss()
    digest, data = template
    index = _TEMPLATES.get(digest)
    if index is None:
        _TEMPLATES.clear()
        index = _TEMPLATES[digest] = faiss.deserialize_index(np.frombuffer(data, np.uint8))
    ivf = faiss.extract_index_ivf(index)
    codes: np.ndarray = ivf.sa_encode(np.ascontiguousarray(vectors, dtype=np.float32))
    return codes


class ShardedIndex:
    """IVF-PQ over OPQ-rotated unit vectors, in shards of consecutive ids.

    The same methods as :class:`~restyle.VectorIndex`. ``exact`` gives the
    stored vectors by id: search re-ranks with them and :meth:`reconstruct`
    returns them; without it, search ranks by the compressed codes alone.
    Thread-safe: searches and updates take one lock.
    """

    def __init__(self, template: bytes, *, exact: ExactVectors | None = None,
                 nprobe: int = 16, runner: Runner = run_here) -> None:
        faiss = _faiss()
        self._template = template
        # What encoding tasks receive: one object, so a runner can ship it once.
        self._shared = (hashlib.sha256(template).hexdigest(), template)
        self._pre = faiss.deserialize_index(np.frombuffer(template, dtype=np.uint8))
        pre = faiss.downcast_index(self._pre)
        self._opq = faiss.downcast_VectorTransform(pre.chain.at(0))
        self._ivf = faiss.downcast_index(pre.index)
        self._quantizer = self._ivf.quantizer
        self.dim = int(pre.d)
        self.nlist = int(self._ivf.nlist)
        self.code_size = int(self._ivf.code_size)
        self.exact = exact
        self.runner = runner
        self._nprobe = nprobe
        # shard number -> (faiss objects kept alive, the shard's IVF index)
        self._shards: dict[int, tuple[list[Any], Any]] = {}
        self._folder: Path | None = None  # where the shards were loaded from
        self._files: dict[int, str] = {}  # shard number -> file name in the folder
        self._mapped: set[int] = set()  # shards read from disk as they are searched
        self._dirty: set[int] = set()
        self._present: dict[int, np.ndarray] = {}
        self._pending: dict[int, np.ndarray] = {}  # added, not yet encoded
        self._generation = 0
        self._lock = threading.RLock()

    # -- making one -------------------------------------------------------------

    @classmethod
    def train(cls, sample: np.ndarray, *, size: int, exact: ExactVectors | None = None,
              runner: Runner = run_here) -> ShardedIndex:
        """An empty index trained on ``sample`` for a catalog of about ``size`` vectors."""
        nlist = nlist_for(size)
        sample = np.ascontiguousarray(sample, dtype=np.float32)
        if len(sample) < nlist:
            raise ValueError(f"{len(sample)} training vectors for {nlist} lists; need more")
        (template,) = runner(train_shard_template, None, [(sample, nlist)])
        return cls(template, exact=exact, runner=runner)

    def __len__(self) -> int:
        with self._lock:
            stored = sum(int(ivf.ntotal) for _, ivf in self._shards.values())
            return stored + sum(1 for i in self._pending if not self._stored(i))

    def __repr__(self) -> str:
        return (f"<ShardedIndex ivfpq dim={self.dim} nlist={self.nlist} code={self.code_size}B "
                f"shards={len(self._shards)} size={len(self)}>")

    @property
    def kind(self) -> str:
        return "ivfpq"

    @property
    def nprobe(self) -> int:
        return self._nprobe

    @nprobe.setter
    def nprobe(self, value: int) -> None:
        self._nprobe = max(1, min(int(value), self.nlist))

    def bytes_per_vector(self) -> float:
        """Code and id bytes per stored vector, as held in the inverted lists."""
        return float(self.code_size + 8)

    # -- shards -----------------------------------------------------------------

    def _new_shard(self) -> tuple[list[Any], Any]:
        faiss = _faiss()
        m = self._ivf.pq.M
        ivf = faiss.IndexIVFPQ(self._quantizer, self._ivf.d, self.nlist, m, self._ivf.pq.nbits,
                               faiss.METRIC_INNER_PRODUCT)
        ivf.pq = self._ivf.pq
        ivf.by_residual = self._ivf.by_residual
        ivf.is_trained = True
        return [ivf], ivf

    def _writable(self, shard: int) -> Any:
        """The shard, in memory (created, or read whole if it was mapped from disk)."""
        held = self._shards.get(shard)
        if held is None:
            held = self._new_shard()
        elif shard in self._mapped:
            assert self._folder is not None
            held = self._read(str(self._folder / self._files[shard]), mmap=False)
            self._mapped.discard(shard)
        self._shards[shard] = held
        self._dirty.add(shard)
        return held[1]

    def _read(self, path: str, *, mmap: bool) -> tuple[list[Any], Any]:
        faiss = _faiss()
        flags = faiss.IO_FLAG_MMAP if mmap else 0
        try:
            loaded = faiss.read_index(path, flags)
        except RuntimeError as exc:
            raise CatalogError(f"vector index shard {path} cannot be read: {exc}") from exc
        ivf = faiss.downcast_index(loaded)
        if ivf.nlist != self.nlist or ivf.d != self._ivf.d:
            raise CatalogError(f"vector index shard {path} does not match its index")
        # The file holds an empty stand-in for the coarse quantizer (a few bytes, left
        # to leak: freeing it through SWIG is not safe); all shards share one.
        ivf.own_fields = False
        ivf.quantizer = self._quantizer
        return [loaded], ivf

    def _present_in(self, shard: int) -> np.ndarray:
        """A bitmap of the shard's ids (one bit each), made on first use."""
        bitmap = self._present.get(shard)
        if bitmap is None:
            bitmap = np.zeros(SHARD_IDS // 8, dtype=np.uint8)
            held = self._shards.get(shard)
            if held is not None:
                ids = _list_ids(held[1]) - shard * SHARD_IDS
                np.bitwise_or.at(bitmap, ids >> 3, (1 << (ids & 7)).astype(np.uint8))
            self._present[shard] = bitmap
        return bitmap

    def _mark(self, ids: np.ndarray, *, present: bool) -> None:
        for shard, part in _by_shard(ids):
            if shard not in self._present:
                continue  # made from the shard when first needed
            bitmap = self._present[shard]
            offsets = part - shard * SHARD_IDS
            bits = (1 << (offsets & 7)).astype(np.uint8)
            if present:
                np.bitwise_or.at(bitmap, offsets >> 3, bits)
            else:
                np.bitwise_and.at(bitmap, offsets >> 3, ~bits)

    # -- updating ---------------------------------------------------------------

    def _check(self, vectors: np.ndarray) -> np.ndarray:
        return as_rows(vectors, self.dim)

    def _rotate(self, vectors: np.ndarray) -> np.ndarray:
        rotated: np.ndarray = self._opq.apply(vectors)
        return rotated

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        """The codes of ``vectors``: by the runner in chunks of :data:`ENCODE_CHUNK`,
        or here when there are fewer (a task would cost more than it saves)."""
        rotated = self._rotate(self._check(vectors))
        if len(rotated) <= ENCODE_CHUNK:
            return _encode(self._shared, rotated)
        chunks = [rotated[i : i + ENCODE_CHUNK] for i in range(0, len(rotated), ENCODE_CHUNK)]
        return np.concatenate(self.runner(_encode, self._shared, chunks))

    def upsert(self, ids: np.ndarray | list[int], vectors: np.ndarray) -> None:
        """Add vectors under ``ids``, replacing any already stored under those ids.

        Vectors are encoded :data:`FLUSH_AT` at a time (see :meth:`flush`); until
        then they count as stored."""
        id_array, vectors = ids_and_rows(ids, vectors, self.dim)
        if len(id_array) and id_array.min() < 0:
            raise ValueError("ids must not be negative")
        with self._lock:
            for item_id, vector in zip(id_array.tolist(), vectors, strict=True):
                self._pending[item_id] = vector
            if len(self._pending) >= FLUSH_AT:
                self.flush()

    def flush(self) -> None:
        """Encode the vectors added since the last flush and put them in their shards."""
        with self._lock:
            if not self._pending:
                return
            id_array = np.fromiter(self._pending, dtype=np.int64, count=len(self._pending))
            codes = self.encode(np.stack(list(self._pending.values())))
            for shard, selected in _positions_by_shard(id_array):
                ivf = self._writable(shard)
                part = id_array[selected]
                if ivf.ntotal:
                    ivf.remove_ids(part)
                ivf.add_sa_codes(np.ascontiguousarray(codes[selected]), part)
            self._mark(id_array, present=True)
            self._pending.clear()

    def remove(self, ids: np.ndarray | list[int]) -> int:
        id_array = np.ascontiguousarray(ids, dtype=np.int64)
        removed = 0
        with self._lock:
            for item_id in id_array.tolist():
                if self._pending.pop(item_id, None) is not None and not self._stored(item_id):
                    removed += 1
            for shard, part in _by_shard(id_array):
                if shard in self._shards:
                    removed += int(self._writable(shard).remove_ids(part))
            self._mark(id_array, present=False)
        return removed

    def _stored(self, item_id: int) -> bool:
        shard, offset = divmod(item_id, SHARD_IDS)
        if shard not in self._shards:
            return False
        return bool(self._present_in(shard)[offset >> 3] & (1 << (offset & 7)))

    def __contains__(self, item_id: object) -> bool:
        if not isinstance(item_id, (int, np.integer)) or item_id < 0:
            return False
        with self._lock:
            return int(item_id) in self._pending or self._stored(int(item_id))

    def reconstruct(self, item_id: int) -> np.ndarray | None:
        """The stored vector of ``item_id`` (from ``exact``), or None if the index
        does not hold it."""
        if item_id not in self or self.exact is None:
            return None
        vector = self.exact(np.array([item_id], dtype=np.int64))[0]
        return None if not np.all(np.isfinite(vector)) else vector

    def ids(self) -> np.ndarray:
        with self._lock:
            self.flush()
            parts = [_list_ids(ivf) for _, ivf in self._shards.values()]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    # -- searching --------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best (scores, ids) per query; missing results have id -1.

        Scores are exact inner products when ``exact`` is set, else estimates."""
        queries = self._check(queries)
        k = max(1, min(k, max(len(self), 1)))
        wanted = k * REFINE if self.exact is not None else k
        with self._lock:
            self.flush()
            scores, ids = self._candidates(self._rotate(queries), wanted)
        if self.exact is None:
            return scores[:, :k], ids[:, :k]
        return self._rerank(queries, ids, k)

    def _candidates(self, rotated: np.ndarray, wanted: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(rotated)
        nprobe = min(self._nprobe, self.nlist)
        coarse_scores, coarse = self._quantizer.search(rotated, nprobe)
        found_scores, found_ids = [], []
        for _, ivf in self._shards.values():
            if not ivf.ntotal:
                continue
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

    def _rerank(self, queries: np.ndarray, candidates: np.ndarray,
                k: int) -> tuple[np.ndarray, np.ndarray]:
        assert self.exact is not None
        unique = np.unique(candidates[candidates >= 0])
        out_scores = np.full((len(queries), k), -np.inf, np.float32)
        out_ids = np.full((len(queries), k), -1, np.int64)
        if not len(unique):
            return out_scores, out_ids
        vectors = self.exact(unique)
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

    def tune(self, probes: np.ndarray, truth: np.ndarray, *,
             target: float = TARGET_RECALL) -> int:
        """Set nprobe to the smallest that gives ``target`` recall@10 for ``probes``
        against ``truth`` (their exact 10 nearest ids, see :class:`NearestIds`),
        with a margin; returns it."""
        probes = self._check(probes)
        truth_ids = [set(row[row >= 0].tolist()) for row in truth]
        wanted = sum(len(t) for t in truth_ids)
        nprobe = 1
        while True:
            self.nprobe = nprobe
            _, found = self.search(probes, 10)
            hits = sum(len(t & set(f.tolist())) for t, f in zip(truth_ids, found, strict=True))
            if hits >= target * wanted or nprobe >= self.nlist:
                # A margin: the probes are only a sample.
                self.nprobe = math.ceil(nprobe * 1.25)
                return self.nprobe
            nprobe = math.ceil(nprobe * (2 if nprobe < 8 else 1.5))

    # -- persistence ------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write changed shards and then the manifest, atomically: a crash leaves
        the previous manifest and the files it names intact."""
        faiss = _faiss()
        folder = shards_path(Path(path))
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            self.flush()
            if self._folder is not None and self._folder.resolve() != folder.resolve():
                self._dirty.update(self._shards)  # saved elsewhere: every shard is written
            generation = self._generation + 1
            written: dict[int, str] = {}
            if not (folder / "trained.faiss").is_file():
                _write_atomically(folder / "trained.faiss", self._template)
            for shard in sorted(self._dirty):
                _, ivf = self._shards[shard]
                name = f"shard-{shard:05d}.g{generation}.faiss"
                stand_in = faiss.IndexFlatIP(ivf.d)  # the shared quantizer is not copied in
                ivf.quantizer = stand_in
                try:
                    data = bytes(faiss.serialize_index(ivf))
                finally:
                    ivf.quantizer = self._quantizer
                _write_atomically(folder / name, data)
                written[shard] = name
            files = {**self._files, **written}
            manifest = {"format": _FORMAT, "dim": self.dim, "nprobe": self._nprobe,
                        "generation": generation, "shard_ids": SHARD_IDS,
                        "shards": {str(s): name for s, name in sorted(files.items())}}
            _write_atomically(folder / MANIFEST, json.dumps(manifest, indent=1).encode())
            _fsync_dir(folder)
            self._files, self._folder, self._generation = files, folder, generation
            self._dirty.clear()
            # The previous files of the shards written now. One still mapped by
            # this process stays readable until unmapped (POSIX).
            replaced = {name.split(".g")[0] for name in written.values()}
            for stale in folder.glob("shard-*.faiss"):
                if stale.name not in files.values() and stale.name.split(".g")[0] in replaced:
                    stale.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, dim: int,
             exact: ExactVectors | None = None, mmap: bool = True) -> ShardedIndex:
        """Open the sharded index saved for ``path``; shards are mapped from disk
        unless ``mmap=False``, and read whole only when changed."""
        folder = shards_path(Path(path))
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
            template = (folder / "trained.faiss").read_bytes()
        except (OSError, ValueError) as exc:
            raise CatalogError(f"sharded vector index {folder} cannot be read: {exc}") from exc
        if manifest.get("format") != _FORMAT or manifest.get("shard_ids") != SHARD_IDS:
            raise CatalogError(f"sharded vector index {folder} has a format this restyle "
                               "does not read")
        self = cls(template, exact=exact, nprobe=int(manifest.get("nprobe", 16)))
        if self.dim != dim:
            raise CatalogError(f"vector index {folder} has dimension {self.dim}, expected {dim}")
        self._generation = int(manifest.get("generation", 0))
        self._folder = folder
        for key, name in manifest["shards"].items():
            self._shards[int(key)] = self._read(str(folder / name), mmap=mmap)
            self._files[int(key)] = name
            if mmap:
                self._mapped.add(int(key))
        return self


def _write_atomically(target: Path, data: bytes) -> None:
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


def _list_ids(ivf: Any) -> np.ndarray:
    faiss = _faiss()
    invlists = ivf.invlists
    parts = [faiss.rev_swig_ptr(invlists.get_ids(n), invlists.list_size(n)).copy()
             for n in range(ivf.nlist) if invlists.list_size(n)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)


def _positions_by_shard(ids: np.ndarray) -> Iterable[tuple[int, np.ndarray]]:
    shards = ids // SHARD_IDS
    for shard in np.unique(shards):
        yield int(shard), np.flatnonzero(shards == shard)


def _by_shard(ids: np.ndarray) -> Iterable[tuple[int, np.ndarray]]:
    for shard, positions in _positions_by_shard(ids):
        yield shard, ids[positions]

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
import logging
import math
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from restyle._errors import CatalogError
from restyle._indexes.flat import (
    _faiss,
    _fsync_dir,
    as_rows,
    ids_and_rows,
)
from restyle._indexes.shardfiles import (
    Segment,
    by_shard,
    candidates,
    list_ids,
    npy,
    positions_by_shard,
    refines,
    rerank,
    saved_generation,
    write_atomically,
)
from restyle._indexes.training import (
    CODE_BYTES,
    code_bytes_for,
    encode_codes,
    nlist_for,
    train_shard_template,
)

__all__ = [
    "CODE_BYTES",
    "SHARDED_ABOVE",
    "SHARDED_AT_LEAST",
    "Runner",
    "ShardedIndex",
    "code_bytes_for",
    "nlist_for",
    "train_shard_template",
]

#: Catalogs with more vectors than this get a sharded IVF-PQ index.
SHARDED_ABOVE = 1_000_000
#: Below this many vectors flat search is faster than the sharded index (whose
#: query reads ``REFINE * k`` exact vectors from the database): the chooser
#: never makes one smaller, whatever threshold it is given (bench/index_scale.py).
SHARDED_AT_LEAST = 20_000
#: Consecutive ids per shard (about 300 MB of codes and ids at 64 bytes a vector).
SHARD_IDS = 1 << 22
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
#: When even every list probed falls short of the target, more candidates per
#: wanted result are re-ranked, up to this many.
MAX_REFINE = 8 * REFINE
#: nprobe is tuned again once the index holds this many times the vectors it
#: was tuned with, and the index trained again (lists, OPQ and PQ, on a fresh
#: sample, every vector encoded again) once it holds this many times the vectors
#: it was trained for.
RETUNE_GROWTH = 2
RETRAIN_GROWTH = 8
#: A shard is a list of segments, each written once: a checkpoint writes the
#: codes added since the last one as a new segment, and the newest segment is
#: merged into the one before it while that one is no larger than it (so a
#: shard has about log2(shard / checkpoint) segments, and a code is rewritten
#: about as many times, not once per checkpoint).
MERGE_RATIO = 1

MANIFEST = "manifest.json"
PENDING = "pending.npy"
_FORMAT = 2

logger = logging.getLogger("restyle.catalog")

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
        #: Candidates re-ranked per wanted result (tuned with nprobe).
        self.refine = REFINE
        #: Vectors the index was trained for, and held when nprobe was last tuned.
        self.trained_size = 0
        self.tuned_size = 0
        #: The recall@10 the last tuning reached, when it fell short of its target.
        self.short_of_target: float | None = None
        self._segments: dict[int, list[Segment]] = {}
        self._folder: Path | None = None  # where the segments were loaded from
        self._present: dict[int, np.ndarray] = {}
        self._pending: dict[int, np.ndarray] = {}  # added, not yet encoded
        self._saved_pending: np.ndarray = np.zeros(0, np.int64)
        # Ids saved as not yet encoded, loaded without the exact vectors to encode them.
        self._unencoded: set[int] = set()
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
        index = cls(template, exact=exact, runner=runner)
        index.trained_size = size
        return index

    def __len__(self) -> int:
        with self._lock:
            stored = sum(seg.size for segs in self._segments.values() for seg in segs)
            waiting = self._unencoded.union(self._pending)
            return stored + sum(1 for i in waiting if not self._stored(i))

    def __repr__(self) -> str:
        return (f"<ShardedIndex ivfpq dim={self.dim} nlist={self.nlist} code={self.code_size}B "
                f"shards={len(self._segments)} size={len(self)}>")

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

    @property
    def _trained_name(self) -> str:
        return f"trained-{self._shared[0][:16]}.faiss"

    def segments(self) -> dict[int, int]:
        """The number of segments of each shard."""
        with self._lock:
            return {shard: len(segs) for shard, segs in sorted(self._segments.items())}

    def mapped(self) -> int:
        """The segments mapped from disk (read as searched, not held in memory)."""
        with self._lock:
            return sum(seg.mapped for segs in self._segments.values() for seg in segs)

    # -- segments -----------------------------------------------------------------

    def _new_ivf(self) -> tuple[list[Any], Any]:
        faiss = _faiss()
        m = self._ivf.pq.M
        ivf = faiss.IndexIVFPQ(self._quantizer, self._ivf.d, self.nlist, m, self._ivf.pq.nbits,
                               faiss.METRIC_INNER_PRODUCT)
        ivf.pq = self._ivf.pq
        ivf.by_residual = self._ivf.by_residual
        ivf.is_trained = True
        return [ivf], ivf

    def _in_memory(self, segment: Segment) -> Segment:
        """``segment``, read whole if it was mapped from disk, to be changed."""
        if segment.mapped:
            assert self._folder is not None and segment.name is not None
            segment.keep, segment.ivf = self._read(str(self._folder / segment.name), mmap=False)
            segment.mapped = False
        return segment

    def _tail(self, shard: int) -> Segment:
        """Where the shard's new codes go: its newest segment while it is unwritten,
        else a new one (written segments are never appended to)."""
        segs = self._segments.setdefault(shard, [])
        if not segs or segs[-1].name is not None:
            segs.append(Segment(*self._new_ivf(), None, mapped=False))
        return segs[-1]

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
            for segment in self._segments.get(shard, []):
                ids = list_ids(segment.ivf) - shard * SHARD_IDS
                np.bitwise_or.at(bitmap, ids >> 3, (1 << (ids & 7)).astype(np.uint8))
            self._present[shard] = bitmap
        return bitmap

    def _mark(self, ids: np.ndarray, *, present: bool) -> None:
        for shard, part in by_shard(ids, SHARD_IDS):
            if shard not in self._present:
                continue  # made from the shard when first needed
            bitmap = self._present[shard]
            offsets = part - shard * SHARD_IDS
            bits = (1 << (offsets & 7)).astype(np.uint8)
            if present:
                np.bitwise_or.at(bitmap, offsets >> 3, bits)
            else:
                np.bitwise_and.at(bitmap, offsets >> 3, ~bits)

    def _remove_stored(self, shard: int, ids: np.ndarray) -> int:
        """Remove ``ids`` from the shard's segments; only those the bitmap holds
        are looked for (a build adds new ids: nothing is scanned)."""
        stored = ids[[self._stored(int(i)) for i in ids]] if len(ids) else ids
        removed = 0
        if not len(stored):
            return 0
        for segment in self._segments.get(shard, []):
            if not segment.size:
                continue
            held = self._in_memory(segment)
            gone = int(held.ivf.remove_ids(np.ascontiguousarray(stored)))
            if gone:
                held.name = None  # written again at the next save
                removed += gone
        return removed

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
            return encode_codes(self._shared, rotated)
        chunks = [rotated[i : i + ENCODE_CHUNK] for i in range(0, len(rotated), ENCODE_CHUNK)]
        return np.concatenate(self.runner(encode_codes, self._shared, chunks))

    def upsert(self, ids: np.ndarray | list[int], vectors: np.ndarray) -> None:
        """Add vectors under ``ids``, replacing any already stored under those ids.

        Vectors are encoded :data:`FLUSH_AT` at a time (see :meth:`flush`); until
        then they count as stored, and a save records their ids, not their codes
        (the exact vectors give them back when the index is loaded)."""
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
            for shard, selected in positions_by_shard(id_array, SHARD_IDS):
                part = id_array[selected]
                self._remove_stored(shard, part)
                self._tail(shard).ivf.add_sa_codes(np.ascontiguousarray(codes[selected]), part)
            self._mark(id_array, present=True)
            self._pending.clear()

    def remove(self, ids: np.ndarray | list[int]) -> int:
        id_array = np.ascontiguousarray(ids, dtype=np.int64)
        removed = 0
        with self._lock:
            for item_id in id_array.tolist():
                waiting = self._pending.pop(item_id, None) is not None
                if item_id in self._unencoded:
                    self._unencoded.discard(item_id)
                    waiting = True
                if waiting and not self._stored(item_id):
                    removed += 1
            for shard, part in by_shard(id_array, SHARD_IDS):
                if shard in self._segments:
                    removed += self._remove_stored(shard, part)
            self._mark(id_array, present=False)
        return removed

    def _stored(self, item_id: int) -> bool:
        shard, offset = divmod(item_id, SHARD_IDS)
        if shard not in self._segments:
            return False
        return bool(self._present_in(shard)[offset >> 3] & (1 << (offset & 7)))

    def __contains__(self, item_id: object) -> bool:
        if not isinstance(item_id, (int, np.integer)) or item_id < 0:
            return False
        with self._lock:
            item = int(item_id)
            return item in self._pending or item in self._unencoded or self._stored(item)

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
            parts = [list_ids(seg.ivf) for segs in self._segments.values() for seg in segs]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)

    # -- searching --------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best (scores, ids) per query; missing results have id -1.

        Scores are exact inner products when ``exact`` is set, else estimates."""
        queries = self._check(queries)
        k = max(1, min(k, max(len(self), 1)))
        wanted = k * self.refine if self.exact is not None else k
        with self._lock:
            self.flush()
            scores, ids = self._candidates(self._rotate(queries), wanted)
        if self.exact is None:
            return scores[:, :k], ids[:, :k]
        return rerank(self.exact, queries, ids, k)

    def _candidates(self, rotated: np.ndarray, wanted: int) -> tuple[np.ndarray, np.ndarray]:
        segments = [seg.ivf for segs in self._segments.values() for seg in segs if seg.size]
        return candidates(self._quantizer, segments, min(self._nprobe, self.nlist), rotated,
                          wanted)

    def recall(self, probes: np.ndarray, truth: np.ndarray) -> float:
        """Recall@10 of ``probes`` against ``truth`` (their exact 10 nearest ids)."""
        truth_ids = [set(row[row >= 0].tolist()) for row in truth]
        wanted = max(1, sum(len(t) for t in truth_ids))
        _, found = self.search(self._check(probes), 10)
        hits = sum(len(t & set(f.tolist())) for t, f in zip(truth_ids, found, strict=True))
        return hits / wanted

    def tune(self, probes: np.ndarray, truth: np.ndarray, *,
             target: float = TARGET_RECALL) -> int:
        """Set nprobe to the smallest that gives ``target`` recall@10 for ``probes``
        against ``truth`` (their exact 10 nearest ids, see :class:`NearestIds`),
        with a margin; returns it. Where every list probed falls short, more
        candidates are re-ranked (up to :data:`MAX_REFINE` a result); where even
        that falls short, a warning names the recall reached, which
        :attr:`short_of_target` keeps."""
        with self._lock:
            self.tuned_size = len(self)
            self.short_of_target = None
            reached = 0.0
            for refine in refines(REFINE, MAX_REFINE):
                self.refine = refine
                nprobe, reached = self._smallest_nprobe(probes, truth, target)
                if reached >= target:
                    self.nprobe = math.ceil(nprobe * 1.25)  # a margin: the probes are a sample
                    return self.nprobe
            self.short_of_target = reached
            logger.warning(
                "the sharded index reaches recall@10 %.3f, short of its target %.2f, with all "
                "%d lists probed and %d candidates re-ranked per result: its lists do not "
                "separate these vectors (see docs/scale.md)", reached, target, self.nlist,
                self.refine)
            return self.nprobe

    def _smallest_nprobe(self, probes: np.ndarray, truth: np.ndarray,
                         target: float) -> tuple[int, float]:
        nprobe = 1
        while True:
            self.nprobe = nprobe
            reached = self.recall(probes, truth)
            if reached >= target or nprobe >= self.nlist:
                return nprobe, reached
            nprobe = math.ceil(nprobe * (2 if nprobe < 8 else 1.5))

    # -- persistence ------------------------------------------------------------

    def _merged(self, shard: int) -> None:
        """Merge the shard's newest segment into the one before it while that one
        is no larger than :data:`MERGE_RATIO` times it."""
        segs = self._segments[shard]
        while len(segs) >= 2 and segs[-2].size <= MERGE_RATIO * segs[-1].size:
            last = segs.pop()
            into = self._in_memory(segs[-1])
            into.ivf.merge_from(self._in_memory(last).ivf, 0)
            into.name = None

    def merge(self) -> None:
        """Make each shard one segment again (written at the next save): what a
        build does once it has added everything."""
        with self._lock:
            self.flush()
            for segs in self._segments.values():
                while len(segs) >= 2:
                    last = segs.pop()
                    into = self._in_memory(segs[-1])
                    into.ivf.merge_from(self._in_memory(last).ivf, 0)
                    into.name = None

    def _write_segment(self, folder: Path, shard: int, position: int, segment: Segment,
                       generation: int) -> None:
        faiss = _faiss()
        name = f"shard-{shard:05d}.g{generation}.{position}.faiss"
        ivf = segment.ivf
        ivf.quantizer = faiss.IndexFlatIP(ivf.d)  # the shared quantizer is not copied in
        try:
            data = bytes(faiss.serialize_index(ivf))
        finally:
            ivf.quantizer = self._quantizer
        write_atomically(folder / name, data)
        segment.name = name

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the segments not yet written (the codes added since the last
        save, and segments merged or changed), the ids added but not yet
        encoded, and then the manifest, atomically: a crash leaves the previous
        manifest and the files it names intact. A segment once written is
        never written again unless merged or changed."""
        folder = shards_path(Path(path))
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if len(self._pending) >= FLUSH_AT or self.exact is None:
                self.flush()  # without exact vectors, pending ones could not be read back
            if self._folder is not None and self._folder.resolve() != folder.resolve():
                for segs in self._segments.values():  # saved elsewhere: every segment written
                    for segment in segs:
                        self._in_memory(segment).name = None
            generation = max(self._generation, saved_generation(folder, MANIFEST)) + 1
            if not (folder / self._trained_name).is_file():
                write_atomically(folder / self._trained_name, self._template)
            for shard in sorted(self._segments):
                if self._segments[shard] and self._segments[shard][-1].name is None:
                    self._merged(shard)
                for position, segment in enumerate(self._segments[shard]):
                    if segment.name is None:
                        self._write_segment(folder, shard, position, segment, generation)
            pending = np.array(sorted(self._unencoded.union(self._pending)), dtype=np.int64)
            if len(pending) or len(self._saved_pending):
                write_atomically(folder / PENDING, npy(pending))
            self._write_manifest(folder, generation)
            self._folder, self._generation, self._saved_pending = folder, generation, pending
            named = {seg.name for segs in self._segments.values() for seg in segs}
            named.add(self._trained_name)
            # Files no manifest names any more (an index trained again leaves all
            # of them). One still mapped by this process stays readable until
            # unmapped (POSIX).
            for stale in [*folder.glob("shard-*.faiss"), *folder.glob("trained*.faiss")]:
                if stale.name not in named:
                    stale.unlink(missing_ok=True)

    def _write_manifest(self, folder: Path, generation: int) -> None:
        manifest = {
            "format": _FORMAT, "dim": self.dim, "nprobe": self._nprobe, "refine": self.refine,
            "trained_size": self.trained_size, "tuned_size": self.tuned_size,
            "generation": generation, "shard_ids": SHARD_IDS, "trained": self._trained_name,
            "pending": PENDING if self._pending or self._unencoded else None,
            "shards": {str(shard): [seg.name for seg in segs]
                       for shard, segs in sorted(self._segments.items()) if segs},
        }
        write_atomically(folder / MANIFEST, json.dumps(manifest, indent=1).encode())
        _fsync_dir(folder)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, dim: int,
             exact: ExactVectors | None = None, mmap: bool = True) -> ShardedIndex:
        """Open the sharded index saved for ``path``; segments are mapped from disk
        unless ``mmap=False``, and read whole only when changed."""
        folder = shards_path(Path(path))
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
            template = (folder / manifest.get("trained", "trained.faiss")).read_bytes()
        except (OSError, ValueError) as exc:
            raise CatalogError(f"sharded vector index {folder} cannot be read: {exc}") from exc
        if manifest.get("format") not in (1, _FORMAT) or manifest.get("shard_ids") != SHARD_IDS:
            raise CatalogError(f"sharded vector index {folder} has a format this restyle "
                               "does not read")
        self = cls(template, exact=exact, nprobe=int(manifest.get("nprobe", 16)))
        if self.dim != dim:
            raise CatalogError(f"vector index {folder} has dimension {self.dim}, expected {dim}")
        self.refine = int(manifest.get("refine", REFINE))
        self._generation = int(manifest.get("generation", 0))
        self._folder = folder
        for key, names in manifest["shards"].items():
            self._segments[int(key)] = [
                Segment(*self._read(str(folder / name), mmap=mmap), name, mapped=mmap)
                for name in ([names] if isinstance(names, str) else names)]
        size = sum(seg.size for segs in self._segments.values() for seg in segs)
        self.trained_size = int(manifest.get("trained_size", size))
        self.tuned_size = int(manifest.get("tuned_size", size))
        if manifest.get("pending"):
            self._load_pending(folder / manifest["pending"], exact)
        return self

    def _load_pending(self, path: Path, exact: ExactVectors | None) -> None:
        """The ids saved as added but not yet encoded, their vectors read back."""
        try:
            ids = np.load(path, allow_pickle=False).astype(np.int64)
        except (OSError, ValueError) as exc:
            raise CatalogError(f"vector index file {path} cannot be read: {exc}") from exc
        if not len(ids):
            return
        self._saved_pending = ids
        if exact is None:  # counted, not searched, until opened with the vectors
            self._unencoded.update(ids.tolist())
            return
        vectors = exact(ids)
        found = np.all(np.isfinite(vectors), axis=1)
        for item_id, vector in zip(ids[found].tolist(), vectors[found], strict=True):
            self._pending[item_id] = vector

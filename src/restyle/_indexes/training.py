"""Training and encoding for the sharded index: the lists, OPQ and PQ, trained
on a sample; vectors encoded into codes. Both run through a *runner*, so they
can run anywhere (Ray tasks in a Ray build): they take and give bytes and arrays.

The coarse lists are k-means centroids, then the lists that hold more than
:data:`SPLIT_ABOVE` times their share of the sample are split by a k-means of
their own: a catalog where half the items look alike gets lists inside that
dense cluster, not one list holding half the catalog.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from restyle._indexes.flat import _faiss

__all__ = ["CODE_BYTES", "SPLIT_ABOVE", "code_bytes_for", "encode_codes", "nlist_for",
           "train_shard_template"]

#: Bytes of PQ code per vector (ids add 8 more).
CODE_BYTES = 56
#: A list holding more than this many times its share of the training sample
#: is split into as many lists as it holds shares.
SPLIT_ABOVE = 4
#: Lists splitting may add, at most, as a multiple of the lists asked for.
SPLIT_MAX = 2
#: Training sample per list the k-means needs, at least (faiss warns below 39).
_PER_LIST = 39
_ITERATIONS = 10
#: OPQ's rotation is refined this many times (faiss's default is 50): half
#: the training time; bench/index_scale.py measures the recall it gives.
_OPQ_ITERATIONS = 20


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
    """Train OPQ, the coarse lists (dense clusters split) and PQ on ``sample``;
    the empty trained index, serialized (run by a runner, anywhere)."""
    sample, nlist = job
    faiss = _faiss()
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    dim = sample.shape[1]
    m, kept = code_bytes_for(dim)
    opq = faiss.OPQMatrix(dim, m, kept)
    opq.niter = _OPQ_ITERATIONS
    opq.train(sample)
    rotated = np.ascontiguousarray(opq.apply(sample))
    centroids = split_dense_lists(rotated, _kmeans(rotated, nlist), limit=SPLIT_MAX * nlist)
    quantizer = faiss.IndexFlatIP(kept)
    quantizer.add(centroids)
    # "No polysemous training": it costs much and serves only Hamming filtering.
    ivf = faiss.IndexIVFPQ(quantizer, kept, len(centroids), m, 8, faiss.METRIC_INNER_PRODUCT)
    ivf.do_polysemous_training = False
    ivf.train(rotated)  # PQ only: the quantizer holds its lists already
    index = faiss.IndexPreTransform(opq, ivf)
    data = bytes(faiss.serialize_index(index))
    del index, ivf, quantizer, opq  # in this order: each holds a pointer to the next
    return data


def _kmeans(x: np.ndarray, k: int) -> np.ndarray:
    faiss = _faiss()
    k = max(1, min(k, len(x)))
    kmeans = faiss.Kmeans(x.shape[1], k, niter=_ITERATIONS, spherical=True, seed=1234,
                          max_points_per_centroid=256, min_points_per_centroid=1)
    kmeans.train(x)
    return np.ascontiguousarray(kmeans.centroids, dtype=np.float32)


def split_dense_lists(x: np.ndarray, centroids: np.ndarray, *, limit: int) -> np.ndarray:
    """``centroids``, with each that takes more than :data:`SPLIT_ABOVE` times
    its share of ``x`` replaced by the centroids of a k-means of its members
    (as many as it holds shares), the largest first, at most ``limit`` in all."""
    faiss = _faiss()
    if len(centroids) < 2:
        return centroids
    search = faiss.IndexFlatIP(x.shape[1])
    search.add(centroids)
    _, labels = search.search(x, 1)
    counts = np.bincount(labels[:, 0], minlength=len(centroids))
    share = len(x) / len(centroids)
    kept: list[np.ndarray] = []
    added: list[np.ndarray] = []
    room = limit - len(centroids)
    for c in np.argsort(-counts, kind="stable"):
        parts = min(int(counts[c] // share), int(counts[c] // _PER_LIST), room + 1)
        if counts[c] > SPLIT_ABOVE * share and parts >= 2:
            added.append(_kmeans(np.ascontiguousarray(x[labels[:, 0] == c]), parts))
            room -= parts - 1
        else:
            kept.append(centroids[c])
    if not added:
        return centroids
    return np.ascontiguousarray(np.vstack([np.stack(kept), *added]), dtype=np.float32)


_TEMPLATES: dict[str, Any] = {}


def encode_codes(template: tuple[str, bytes], vectors: np.ndarray) -> np.ndarray:
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

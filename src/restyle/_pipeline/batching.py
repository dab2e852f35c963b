"""Many photos through one pipeline: decoded and embedded a batch at a time,
their analyses run concurrently while the model embeds the next batch.

Batching knows nothing of the Engine: it is handed the one-photo analysis, the
encoder, the default deadline and the context each encoder call runs in.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial

from restyle._errors import RestyleError
from restyle._input.imaging import ImageInput, Photo, load_photo
from restyle._input.item import Item, as_item
from restyle._pipeline import budget as _budget
from restyle._pipeline.budget import STAGE_MARKS, Pending
from restyle._plugin.components import Encoder
from restyle._plugin.contracts import check_vectors
from restyle._types import Analysis

#: Photos decoded and encoded together.
BATCH_PHOTOS = 16
#: Analyses run at once (their experts and marketplaces wait on the network
#: while the others compute).
ANALYSIS_WORKERS = 4
#: Photos of a batch decoded at once.
DECODE_WORKERS = max(1, min(4, os.cpu_count() or 1))

__all__ = ["ANALYSIS_WORKERS", "BATCH_PHOTOS", "DECODE_WORKERS", "Batches", "encode_together",
           "keep_vectors"]

logger = logging.getLogger("restyle")


@dataclass(frozen=True, slots=True)
class _StartedBatch:
    """Photos of a batch decoded (or why not), and their embeddings under way in
    one encoder call (None when not started)."""

    photos: list[Photo | Item | RestyleError]
    embeddings: Pending | None


@dataclass(frozen=True, slots=True)
class Batches:
    """Analyses of many photos, ``size`` at a time.

    ``analyze_one(photo, deadline)`` analyses one decoded photo (raising only
    RestyleError); ``encoder`` embeds a batch at once; ``deadline`` is the
    seconds a photo may take when the caller gives none; ``running()`` is the
    context an encoder call runs in (the components' context, the call limit).
    """

    analyze_one: Callable[[Photo | Item, float | None], Analysis]
    encoder: Encoder
    deadline: float
    running: Callable[[], AbstractContextManager[None]]
    size: int = BATCH_PHOTOS
    workers: int = ANALYSIS_WORKERS

    def analyze(self, images: Iterable[ImageInput | Photo | Item], *,
                deadline: float | None) -> Iterator[Analysis | RestyleError]:
        """Each photo's Analysis or RestyleError, in input order, a batch at a time.

        The next batch is decoded and its embeddings started before this batch's
        analyses run, so the model works while they search: at most two batches
        are held at once."""
        started: _StartedBatch | None = None
        batch: list[ImageInput | Photo | Item] = []
        for image in images:
            batch.append(image)
            if len(batch) == self.size:
                following = self._start(batch, deadline)
                if started is not None:
                    yield from self._finish(started, deadline)
                started, batch = following, []
        last = self._start(batch, deadline) if batch else None
        if started is not None:
            yield from self._finish(started, deadline)
        if last is not None:
            yield from self._finish(last, deadline)

    def _start(self, images: Sequence[ImageInput | Photo | Item],
               deadline: float | None) -> _StartedBatch:
        """Decode the photos and start their embeddings in one encoder call (an
        item of several photos is read and encoded by its own analysis)."""
        seconds = self.deadline if deadline is None else deadline

        def read(image: ImageInput | Photo | Item) -> Photo | Item | RestyleError:
            try:
                item = as_item(image)
                if len(item) > 1 or item.roles[0] is not None:
                    return item  # read and encoded by its own analysis
                return load_photo(item.photos[0], deadline=time.monotonic()
                                  + seconds * STAGE_MARKS["experts"])
            except RestyleError as exc:
                return exc

        # Decoded on both cores at once (the gate bounds the memory of decodes in flight).
        if len(images) > 1:
            with ThreadPoolExecutor(max_workers=min(DECODE_WORKERS, len(images)),
                                    thread_name_prefix="restyle decode") as pool:
                photos = list(pool.map(read, images))
        else:
            photos = [read(image) for image in images]
        decoded = [p for p in photos if isinstance(p, Photo)]
        pending = None
        if len(decoded) > 1:  # one photo alone gains nothing from a batch
            with self.running():
                pending = encode_together(
                    self.encoder, decoded,
                    deadline=time.monotonic() + seconds * STAGE_MARKS["search"])
        return _StartedBatch(photos=photos, embeddings=pending)

    def _finish(self, started: _StartedBatch,
                deadline: float | None) -> Iterator[Analysis | RestyleError]:
        """The batch's analyses, run concurrently once its embeddings are in,
        each yielded (in input order) as soon as it and those before it are done."""
        photos = started.photos
        if started.embeddings is not None:
            keep_vectors(started.embeddings, [p for p in photos if isinstance(p, Photo)],
                         self.encoder.model_id)

        def one(photo: Photo | Item | RestyleError) -> Analysis | RestyleError:
            if isinstance(photo, RestyleError):
                return photo
            try:
                return self.analyze_one(photo, deadline)
            except RestyleError as exc:
                return exc

        if len(photos) == 1:
            yield one(photos[0])
            return
        with ThreadPoolExecutor(max_workers=min(self.workers, len(photos)),
                                thread_name_prefix="restyle analyze") as pool:
            yield from pool.map(one, photos)


def encode_together(encoder: Encoder, photos: Sequence[Photo], *,
                    deadline: float) -> Pending | None:
    """The photos' vectors under way in one encoder call, checked on its worker
    (see :func:`keep_vectors`); None when the call could not start (each photo
    is then encoded on its own when it is needed)."""
    try:
        return _budget.start(encoder, f"encoder {encoder.name}", encoder.encode_images,
                             [p.image for p in photos], deadline=deadline,
                             check=partial(check_vectors, encoder, count=len(photos)))
    except RestyleError as exc:
        logger.debug("batch encoding of %d photos not started: %s", len(photos), exc)
        return None


def keep_vectors(pending: Pending, photos: Sequence[Photo], model_id: str) -> bool:
    """Give each photo its vector from :func:`encode_together`'s call, once it
    is done; False (nothing kept) when the call failed."""
    try:
        vectors = pending.result()  # checked on the worker
    except Exception as exc:
        logger.debug("batch encoding of %d photos failed: %s", len(photos), exc)
        return False
    for photo, vector in zip(photos, vectors, strict=True):
        photo.keep_vector(model_id, vector)
    return True

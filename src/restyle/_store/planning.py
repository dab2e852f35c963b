"""A build's sharded index planned before the build starts: when a build
takes a catalog past the flat index's limit, its index is trained once, for
the size the catalog ends with, on rows drawn evenly across the whole input.
Those of the part stored after the training are encoded ahead, here; the rest
are drawn from the stored vectors when the index trains (see
:class:`~restyle._indexes.chooser.TrainingPlan`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np

from restyle._indexes.chooser import TrainingPlan, sharded_above, training_size
from restyle._indexes.flat import temporary_for
from restyle._ingestion.listings import draw_rows, estimate_rows, listings_format, most_rows
from restyle._progress import progress_bar
from restyle._store.build import EncodedRun
from restyle._store.files import DRAWN_STEM

__all__ = ["plan_training"]

logger = logging.getLogger("restyle.catalog")


def plan_training(
    source: Path, directory: Path, *, held: int, dim: int,
    encoded: Callable[[Path], AbstractContextManager[EncodedRun]], progress: bool | None,
    counted: Callable[[], int | None] | None = None,
) -> TrainingPlan | None:
    """The training plan of a build of ``source`` into a catalog of ``held``
    vectors in ``directory`` (None when the build stays under the flat
    index's limit, or its input's rows can be neither counted nor
    estimated). The index trains at the first checkpoint past the limit, so
    the input's part after the limit's row is drawn now, into a file in the
    catalog's folder (a Ray build's workers read it there), and encoded by
    ``encoded``, the build's own stages, with nothing taken as stored.
    ``counted``: the source's rows as the build counts them (see
    :func:`~restyle._ingestion.reading.estimate_rows`)."""
    limit = sharded_above()
    most = most_rows(source)
    if most is not None and held + most <= limit:
        return None  # too small to pass the limit, told from its size: nothing read
    rows = estimate_rows(source, counted=counted)
    if rows is None or held + rows <= limit:
        return None
    size = held + rows
    after = max(0, limit - held) / rows
    count = round(training_size(size) * (1 - after))
    suffix = ".csv" if listings_format(source) == "csv" else ".jsonl"
    fd, drawn = temporary_for(directory / DRAWN_STEM, suffix)
    try:
        written = draw_rows(source, drawn, count, after=after)
        logger.info("the build takes the catalog to about %d vectors: encoding %d rows drawn "
                    "across the last %.0f%% of its input to train the index on", size, written,
                    100 * (1 - after))
        vectors = _vectors(encoded(drawn), dim=dim, total=written, progress=progress)
    finally:
        drawn.unlink(missing_ok=True)
        os.close(fd)
    return TrainingPlan(size=size, drawn=vectors)


def _vectors(run: AbstractContextManager[EncodedRun], *, dim: int, total: int,
             progress: bool | None) -> np.ndarray:
    """The vectors a run encodes, in source order (its rejections dropped)."""
    vectors: list[np.ndarray] = []
    bar = progress_bar(total=total, desc="Sampling for the index", unit="row", enabled=progress)
    try:
        with run as encoded:
            for batch in encoded.batches:
                vectors += [item[1] for item in batch.items if isinstance(item, tuple)]
                if batch.done is not None:
                    batch.done()
                bar.update(batch.rows)
    finally:
        bar.close()
    if not vectors:
        return np.zeros((0, dim), np.float32)
    return np.ascontiguousarray(np.stack(vectors), dtype=np.float32)

"""Text prompts' vectors under an encoder: a pure function of the model and
the prompts, so encoded once per model (in the background, whoever asks
first, outside any one call's deadline) and kept on disk under
``$RESTYLE_HOME/prompts`` for later processes.

A caller inside a component call waits for them only until the call's own
deadline (:func:`~restyle._plugin.components.wait_time`); the work goes on for
the next call. The ``clip`` expert's taxonomy and the photo roles use them.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

import numpy as np

from restyle import _settings
from restyle._errors import EncoderError
from restyle._pipeline import budget as _budget
from restyle._plugin.components import CALL_DEADLINE, Encoder, wait_time
from restyle._plugin.contracts import vector_problem

__all__ = ["MAX_CACHE_BYTES", "forget", "prompt_vectors"]

#: Largest prompt-vector file read back from disk, in bytes.
MAX_CACHE_BYTES = 16 * 1024 * 1024

logger = logging.getLogger("restyle")

# (model id, digest of the prompts) -> their vectors, done or under way: shared
# by every Engine in the process. A failed computation is tried again next call.
_VECTORS: dict[tuple[str, str], Future[np.ndarray]] = {}
_LOCK = threading.Lock()


def _digest(model_id: str, prompts: Sequence[str]) -> str:
    return hashlib.sha256("\n".join([model_id, *prompts]).encode()).hexdigest()[:32]


def forget() -> None:
    """Forget every prompt vector computed in this process (as a new process would)."""
    with _LOCK:
        _VECTORS.clear()


def prompt_vectors(encoder: Encoder, prompts: Sequence[str], *, what: str) -> np.ndarray:
    """The vectors of ``prompts`` under ``encoder`` (one row each), computed
    once per model per process, or read from disk when an earlier process kept
    them. Inside a component call, waits only until the call's deadline, then
    raises :class:`~restyle.EncoderError` naming ``what``."""
    prompts = tuple(prompts)
    model_id = encoder.model_id
    key = (model_id, _digest(model_id, prompts))
    with _LOCK:
        known = _VECTORS.get(key)
        start = known is None or (known.done() and known.exception() is not None)
        if start:
            known = _VECTORS[key] = Future()
    assert known is not None
    if start:
        future = known

        def compute() -> None:
            CALL_DEADLINE.set(math.inf)  # the work belongs to no call: no caller's deadline
            _compute(encoder, prompts, future)

        _budget.spawn(compute, name="restyle prompts")
    try:
        return known.result(wait_time())
    except FutureTimeout:
        raise EncoderError(f"{what} for {model_id} are still being computed; they will be "
                           "ready for the next photo") from None


def _compute(encoder: Encoder, prompts: tuple[str, ...], future: Future[np.ndarray]) -> None:
    if not future.set_running_or_notify_cancel():
        return
    try:
        path = _cache_path(encoder.model_id, prompts)
        vectors = _read_cached(path, len(prompts)) if path is not None else None
        if vectors is None:
            vectors = np.asarray(encoder.encode_texts(list(prompts)), dtype=np.float32)
            if vectors.ndim != 2 or vectors.shape[0] != len(prompts) or any(
                    vector_problem(row) is not None for row in vectors):
                raise EncoderError(f"encoder {encoder.name} gave unusable text vectors")
            if path is not None:
                _write_cached(path, vectors)
        future.set_result(vectors)
    except BaseException as exc:  # handed to whoever waits
        future.set_exception(exc)


def _cache_path(model_id: str, prompts: Sequence[str]) -> Path | None:
    """Where the vectors of ``prompts`` under ``model_id`` are kept; None for
    untrained weights (``.../random``), which differ at every load."""
    if model_id.endswith("/random"):
        return None
    return _settings.home() / "prompts" / f"{_digest(model_id, prompts)}.npy"


def _read_cached(path: Path, count: int) -> np.ndarray | None:
    """The kept vectors, if the file holds ``count`` finite unit rows; else None
    (a damaged file is computed again and replaced)."""
    try:
        if path.stat().st_size > MAX_CACHE_BYTES:
            return None
        vectors: np.ndarray = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if (vectors.dtype != np.float32 or vectors.ndim != 2 or vectors.shape[0] != count
            or any(vector_problem(row) is not None for row in vectors)):
        logger.debug("prompt vectors in %s are damaged; computing them again", path)
        return None
    return vectors


def _write_cached(path: Path, vectors: np.ndarray) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=".prompts.", suffix=".npy", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.save(fh, vectors, allow_pickle=False)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError as exc:  # a cache that cannot be written costs time, not the answer
        logger.debug("prompt vectors not kept in %s: %s", path, exc)

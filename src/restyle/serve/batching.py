"""Cross-request batching of the encoder: the photos of concurrent requests
encoded in one model batch.

A web service runs each request's analysis on its own thread, and each asks
the encoder for its photo's vector alone: a batch of one per request, the
model's fixed cost paid again by each. :class:`BatchingEncoder` wraps the
Engine's encoder and gathers the ``encode_images`` calls that arrive within a
short window (``window`` seconds, from the first call; the batch also goes as
soon as it holds ``max_batch`` images) into one call of the model, then hands
each caller its own rows. A caller waits at most the window more than the
model takes; nothing else changes (same vectors, same ``model_id``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future

import numpy as np
from PIL import Image

from restyle._plugin.components import Encoder

__all__ = ["BatchingEncoder"]


class _Call:
    __slots__ = ("future", "images")

    def __init__(self, images: Sequence[Image.Image]) -> None:
        self.images = list(images)
        self.future: Future[np.ndarray] = Future()


class BatchingEncoder(Encoder):
    """``inner`` with its ``encode_images`` calls gathered across threads.

    One thread runs the model: it takes the first waiting call, waits up to
    ``window`` seconds for more (or until ``max_batch`` images are waiting),
    and encodes them all in one ``inner.encode_images`` call. A call larger
    than ``max_batch`` is encoded alone. ``batches`` and ``images`` count what
    it did (a mean batch of ``images / batches``). Texts go straight through.
    """

    def __init__(self, inner: Encoder, *, window: float = 0.01, max_batch: int = 32) -> None:
        if not window >= 0:
            raise ValueError(f"window must be 0 or more seconds, got {window!r}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be 1 or more, got {max_batch!r}")
        self.inner = inner
        self.name = inner.name
        self.window = window
        self.max_batch = max_batch
        self.batches = 0
        self.images = 0
        self._waiting: list[_Call] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="restyle-batching-encoder",
                                        daemon=True)
        self._thread.start()

    def __repr__(self) -> str:
        return (f"BatchingEncoder({self.inner!r}, window={self.window}, "
                f"max_batch={self.max_batch})")

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def dim(self) -> int:
        return self.inner.dim

    def warm_up(self) -> None:
        self.inner.warm_up()

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        return self.inner.encode_texts(texts)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        call = _Call(images)
        with self._cond:
            if self._closed:
                raise RuntimeError("the batching encoder is closed")
            self._waiting.append(call)
            self._cond.notify_all()
        return call.future.result()

    def close(self) -> None:
        """Stop the model's thread once the calls waiting are encoded."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join()

    def _take(self) -> list[_Call] | None:
        """The next batch of calls: the first waiting, and those that come
        within the window after it (up to ``max_batch`` images)."""
        with self._cond:
            while not self._waiting:
                if self._closed:
                    return None
                self._cond.wait()
            ends = time.monotonic() + self.window
            while not self._closed and sum(len(c.images) for c in self._waiting) \
                    < self.max_batch and (left := ends - time.monotonic()) > 0:
                self._cond.wait(left)
            batch: list[_Call] = []
            count = 0
            while self._waiting and (not batch or count + len(self._waiting[0].images)
                                     <= self.max_batch):
                call = self._waiting.pop(0)
                batch.append(call)
                count += len(call.images)
            return batch

    def _run(self) -> None:
        while (batch := self._take()) is not None:
            images = [image for call in batch for image in call.images]
            try:
                vectors = self.inner.encode_images(images)
            except BaseException as exc:
                for call in batch:
                    call.future.set_exception(exc)
                continue
            self.batches += 1
            self.images += len(images)
            start = 0
            for call in batch:
                call.future.set_result(vectors[start:start + len(call.images)])
                start += len(call.images)

"""BatchingEncoder: concurrent threads' encode_images calls gathered into one
model batch, each caller handed its own rows."""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import pytest
from PIL import Image

from restyle import EncoderError
from restyle.serve import BatchingEncoder
from restyle.testing import ColorEncoder


class CountingEncoder(ColorEncoder):
    """A ColorEncoder that keeps the size of every batch it was given, and
    fails a batch holding a pure red image."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        self.sizes.append(len(images))
        if any(image.getpixel((0, 0)) == (255, 0, 0) for image in images):
            raise EncoderError("the model failed")
        return super().encode_images(images)


def image(i: int) -> Image.Image:
    return Image.new("RGB", (16, 16), (i * 20 % 250, 100, 200 - i * 10 % 200))


def concurrently(encoder: BatchingEncoder, batches: list[list[Image.Image]]) -> list[object]:
    """Each batch encoded on its own thread, all started at once; each result or error."""
    results: list[object] = [None] * len(batches)
    barrier = threading.Barrier(len(batches))

    def call(i: int) -> None:
        barrier.wait()
        try:
            results[i] = encoder.encode_images(batches[i])
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(batches))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_concurrent_calls_share_one_batch_and_get_their_own_rows() -> None:
    inner = CountingEncoder()
    encoder = BatchingEncoder(inner, window=0.5, max_batch=64)
    batches = [[image(i)] if i % 2 else [image(i), image(i + 100)] for i in range(8)]
    results = concurrently(encoder, batches)
    alone = ColorEncoder()
    for batch, result in zip(batches, results, strict=True):
        assert isinstance(result, np.ndarray)
        np.testing.assert_array_equal(result, alone.encode_images(batch))
    assert sum(inner.sizes) == 12 and len(inner.sizes) < 8  # gathered, not one call each
    assert encoder.batches == len(inner.sizes) and encoder.images == 12
    assert encoder.model_id == inner.model_id and encoder.dim == inner.dim
    encoder.close()


def test_a_batch_holds_at_most_max_batch_images_and_a_larger_call_goes_alone() -> None:
    inner = CountingEncoder()
    encoder = BatchingEncoder(inner, window=0.3, max_batch=3)
    results = concurrently(encoder, [[image(i)] for i in range(7)] + [[image(50)] * 5])
    assert all(isinstance(r, np.ndarray) for r in results)
    assert sorted(inner.sizes)[-1] == 5 and all(size <= 3 for size in inner.sizes if size != 5)
    assert sum(inner.sizes) == 12
    encoder.close()


def test_a_failed_batch_fails_its_callers_only_and_the_next_batch_works() -> None:
    inner = CountingEncoder()
    encoder = BatchingEncoder(inner, window=0.3)
    red = Image.new("RGB", (16, 16), (255, 0, 0))
    results = concurrently(encoder, [[red], [image(1)]])
    assert all(isinstance(r, EncoderError) for r in results)  # they shared the failed batch
    assert encoder.encode_images([image(2)]).shape == (1, inner.dim)
    assert encoder.encode_images([]).shape == (0, inner.dim)
    encoder.close()
    with pytest.raises(RuntimeError, match="closed"):
        encoder.encode_images([image(3)])


def test_no_window_encodes_each_call_as_it_comes_and_texts_go_straight_through() -> None:
    inner = CountingEncoder()
    encoder = BatchingEncoder(inner, window=0)
    assert encoder.encode_images([image(1), image(2)]).shape == (2, inner.dim)
    np.testing.assert_array_equal(encoder.encode_texts(["a coat"]),
                                  inner.encode_texts(["a coat"]))
    assert inner.sizes == [2]
    encoder.close()
    with pytest.raises(ValueError, match="max_batch"):
        BatchingEncoder(inner, max_batch=0)

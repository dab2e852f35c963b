"""Decoding a photo's bytes within restyle's limits: the header checked
(format, size, shape, a JPEG's markers) before any pixel is decoded, JPEGs
decoded at reduced scale, and the memory of the decodes in flight in a process
bounded by :data:`~restyle._input.limits.DECODE_ROOM_BYTES`, waited for only
until the caller's deadline.
"""

from __future__ import annotations

import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from PIL import Image, UnidentifiedImageError

from restyle._errors import ImageError
from restyle._input.jpeg import JpegLayout, check_coefficients, jpeg_layout
from restyle._input.limits import (
    DECODE_ROOM_BYTES,
    DEFAULT_MAX_PIXELS,
    FORMAT_MAX_PIXELS,
    FORMAT_NAMES,
    MAX_ASPECT_RATIO,
    WORKING_SIDE,
    sniff_format,
)
from restyle._input.photo import Photo
from restyle._input.pillow import ORIENTATION_TAG, opened, quiet_turn, read_orientation
from restyle._input.pixels import working_copy
from restyle._input.reading import within

__all__ = ["decode", "decode_here", "from_pil"]


def decode(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    source: str | None = None,
    draft_side: int | None = None,
    sha256: str | None = None,
    deadline: float | None = None,
) -> Photo:
    """Decode encoded image bytes into a :class:`Photo`, or raise :class:`ImageError`.

    ``draft_side`` lets a JPEG decode at a reduced scale (1/2, 1/4 or 1/8, done
    inside the decoder and much faster) as long as both sides stay at least
    that many pixels: for images that are only going to an encoder.
    ``sha256`` is the hex digest of ``data`` when the caller has it already.
    ``deadline`` (a :func:`time.monotonic` value): past it the call raises
    :class:`ImageError` and the decode is abandoned.
    """
    return within(deadline, "decoded", lambda: decode_here(
        data, max_pixels=max_pixels, source=source, draft_side=draft_side, sha256=sha256,
        deadline=deadline))


def decode_here(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    source: str | None = None,
    draft_side: int | None = None,
    sha256: str | None = None,
    deadline: float | None = None,
) -> Photo:
    """:func:`decode` on this thread, for a caller already within its deadline."""
    what = f"photo {source!r}" if source else "photo"
    if not data:
        raise ImageError(f"{what} is empty")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageError(f"{what} is not a {FORMAT_NAMES} image")
    cap = min(max_pixels, FORMAT_MAX_PIXELS.get(fmt, max_pixels))
    layout = jpeg_layout(data, what) if fmt == "JPEG" else None
    try:
        with opened(data, fmt, what, deadline) as img:
            _check_size(img.size, cap, what, fmt=fmt)
            if layout is not None:
                check_coefficients(layout, what)
                _draft(img, draft_side)
            with _DECODE_ROOM.held(_decode_cost(img, fmt, layout), deadline, what):
                img.load()
                rgb = working_copy(img, owned=True, orientation=read_orientation(img.info))
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        # Pillow's WebP plugin refuses twice Pillow's MAX_IMAGE_PIXELS as it
        # opens the file, before restyle can read the size: past restyle's
        # limit too, unless a caller allowed more.
        limit = min(cap, 2 * (Image.MAX_IMAGE_PIXELS or cap))
        raise ImageError(f"{what} is more than the limit of {limit:,} pixels") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"{what} cannot be decoded: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError, TypeError, struct.error,
            IndexError, KeyError) as exc:
        raise ImageError(f"{what} is corrupt or truncated: {exc}") from exc
    return Photo(image=rgb, data=data, fmt=fmt, source=source, sha256=sha256)


# -- how much decoding is in flight -------------------------------------------------


class _Room:
    """A weighted semaphore over bytes: each decode holds its estimated memory
    while it runs, and waits for room only until its deadline."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = size
        self._changed = threading.Condition()

    @contextmanager
    def held(self, amount: int, deadline: float | None, what: str) -> Iterator[None]:
        amount = min(max(0, amount), self.size)
        with self._changed:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._changed.wait_for(lambda: self._free >= amount, timeout):
                raise ImageError(
                    f"{what} was not decoded: other decodes held restyle's "
                    f"{self.size // 2**20} MiB of decoding memory until its deadline"
                )
            self._free -= amount
        try:
            yield
        finally:
            with self._changed:
                self._free += amount
                self._changed.notify_all()


_DECODE_ROOM = _Room(DECODE_ROOM_BYTES)
# Bytes a pixel of the image Pillow decodes costs while it decodes (Pillow
# keeps RGB as 4 bytes a pixel; libwebp several canvases; libheif and libavif
# their YUV planes and an RGB image besides Pillow's).
_DECODE_BYTES_PER_PIXEL = {"JPEG": 4, "PNG": 5, "WEBP": 15, "HEIF": 8, "AVIF": 8}


def _decode_cost(img: Image.Image, fmt: str, layout: JpegLayout | None) -> int:
    """The memory decoding ``img`` (opened, drafted) will take, from its header:
    the pixels Pillow decodes, the working copy restyle keeps, and a JPEG's
    coefficient buffers."""
    pixels = img.width * img.height
    kept = min(pixels, WORKING_SIDE * WORKING_SIDE) * 4
    coefficients = layout.coefficient_bytes if layout is not None else 0
    return pixels * _DECODE_BYTES_PER_PIXEL[fmt] + kept + coefficients


def from_pil(img: Image.Image, *, max_pixels: int, deadline: float | None) -> Photo:
    """A caller's PIL image, copied. It can be any format Pillow knows, opened
    lazily, so it is loaded and its EXIF read in the quiet turn (Pillow may warn
    about either), bounded by the pixel limit checked first."""
    _check_size(img.size, max_pixels, "photo")
    try:
        with quiet_turn(deadline, "photo"):
            img.load()
            orientation = img.getexif().get(ORIENTATION_TAG, 1)
        rgb = working_copy(img, owned=False, orientation=orientation)
    except ImageError:
        raise
    except (OSError, ValueError, EOFError, SyntaxError) as exc:
        raise ImageError(f"PIL image cannot be used: {exc}") from exc
    return Photo(image=rgb, data=None, fmt=img.format or "PIL", source=None)


def _check_size(size: tuple[int, int], max_pixels: int, what: str, *,
                fmt: str | None = None) -> None:
    """restyle's limits on a photo's dimensions, read from its header."""
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(f"{what} has no pixels")
    if width * height > max_pixels:
        kind = f" for a {fmt}" if fmt in FORMAT_MAX_PIXELS else ""
        raise ImageError(
            f"{what} is {width}x{height} pixels, more than the limit of {max_pixels:,}{kind}"
        )
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        raise ImageError(
            f"{what} is {width}x{height} pixels, more elongated than the limit of "
            f"{MAX_ASPECT_RATIO}:1 (long side to short side)"
        )


def _draft(img: Image.Image, draft_side: int | None) -> None:
    """Have the JPEG decoder scale down (by 2, 4 or 8) at least as far as
    :data:`WORKING_SIDE` needs, and further while both sides stay at least
    ``draft_side``."""
    width, height = img.size
    scale = 1
    while scale < 8 and -(-max(width, height) // scale) > WORKING_SIDE:
        scale *= 2
    if draft_side is not None:
        while scale < 8 and min(width, height) // (scale * 2) >= draft_side:
            scale *= 2
    if scale > 1:
        # Pillow takes the largest scale at which the image is still this size.
        img.draft("RGB", (max(1, width // scale), max(1, height // scale)))

"""Safe reading and decoding of the photos restyle is given, in bounded time and memory.

Only JPEG, PNG and WebP are accepted; truncated files are rejected; only the
first frame is used and EXIF orientation is applied. restyle's own limits
(bytes, pixels, aspect ratio, and for JPEG the scans and the coefficient
buffers its decoder would hold) are checked from the header before any pixel
is decoded. What restyle keeps is RGB at most :data:`WORKING_SIDE` pixels a
side: JPEGs are decoded at reduced scale, other formats reduced as they are
converted. Every failure becomes one :class:`~restyle.ImageError`.

This is the one gate for image bytes. Reading a photo (a path, a file object)
and decoding it run under the caller's deadline on a daemon thread that is
abandoned at the deadline; a path must name a regular file, which is opened
without blocking. Nothing about decoding is process-wide: Pillow's format
plugins are used directly (so Pillow's own decompression-bomb warning, which
comes from a larger size than restyle allows anyway, is never reached),
restyle reads the orientation tag itself, and the one Pillow path that can
warn on a hostile file (a PNG with malformed animation chunks) is the only one
decoded with warnings held back, under a lock. The memory of the decodes in
flight in a process is bounded by :data:`DECODE_ROOM_BYTES`, waited for only
until the caller's deadline.

The wing, one job a module: :mod:`~restyle._input.limits` (the formats and
bounds), :mod:`~restyle._input.reading` (paths, file objects, the deadline
thread), :mod:`~restyle._input.jpeg` (a JPEG's markers before decoding),
:mod:`~restyle._input.pillow` (Pillow's plugins used directly, the orientation
tag, the quiet turn), :mod:`~restyle._input.decoding` (the checks, the decode
room, ``decode``), :mod:`~restyle._input.pixels` (the working copy, an
encoder's input), :mod:`~restyle._input.photo` (the read-only ``Photo``) and
:mod:`~restyle._input.upload` (a photo as a remote service takes it). This
module is its front door: :func:`load_photo` and the names the other wings use.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import IO

from PIL import Image

from restyle._errors import ImageError
from restyle._input.decoding import decode, decode_here, from_pil
from restyle._input.limits import (
    DECODE_ROOM_BYTES,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    FORMAT_MAX_PIXELS,
    JPEG_MAX_COEFFICIENT_BYTES,
    JPEG_MAX_SCANS,
    JPEG_MAX_SEGMENTS,
    MAX_ASPECT_RATIO,
    WORKING_SIDE,
    sniff_format,
)
from restyle._input.photo import Photo
from restyle._input.pixels import encoder_input
from restyle._input.reading import checked_path, read_capped, read_path, too_large, within
from restyle._input.upload import UploadImage, UploadLimits, prepare_upload

__all__ = [
    "DECODE_ROOM_BYTES",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "FORMAT_MAX_PIXELS",
    "JPEG_MAX_COEFFICIENT_BYTES",
    "JPEG_MAX_SCANS",
    "JPEG_MAX_SEGMENTS",
    "MAX_ASPECT_RATIO",
    "WORKING_SIDE",
    "ImageInput",
    "Photo",
    "UploadImage",
    "UploadLimits",
    "decode",
    "encoder_input",
    "load_photo",
    "prepare_upload",
    "sniff_format",
]

ImageInput = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes] | Image.Image


def load_photo(
    source: ImageInput | Photo,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
    deadline: float | None = None,
) -> Photo:
    """Read and decode ``source`` (a path, bytes, a binary file object or a PIL
    image) safely.

    ``deadline`` (a :func:`time.monotonic` value) bounds reading and decoding
    together: past it the call raises :class:`~restyle.ImageError` and the
    read is abandoned. Without one, reading a file object waits as long as
    its writer does; a path is never waited on (it must be a regular file).
    """
    if isinstance(source, Photo):
        return source
    if isinstance(source, Image.Image):
        image = source
        return within(deadline, "decoded",
                       lambda: from_pil(image, max_pixels=max_pixels, deadline=deadline))
    read: Callable[[], tuple[bytes, str | None]]
    if isinstance(source, (str, os.PathLike)):
        raw = checked_path(source)

        def read() -> tuple[bytes, str | None]:
            return read_path(raw, max_bytes), os.fsdecode(raw)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        size = source.nbytes if isinstance(source, memoryview) else len(source)
        if size > max_bytes:  # before any copy
            raise too_large("photo", max_bytes)
        data = bytes(source)
        return within(deadline, "decoded",
                       lambda: decode_here(data, max_pixels=max_pixels, deadline=deadline))
    elif hasattr(source, "read"):
        stream = source
        name = getattr(source, "name", None)

        def read() -> tuple[bytes, str | None]:
            return (read_capped(stream.read, max_bytes, "photo"),
                    name if isinstance(name, str) else None)
    else:
        raise ImageError(
            f"cannot read a photo from {type(source).__name__}; "
            "pass a path, bytes, a binary file object or a PIL image"
        )

    def load() -> Photo:
        data, name = read()
        return decode_here(data, max_pixels=max_pixels, source=name, deadline=deadline)

    return within(deadline, "read and decoded", load)

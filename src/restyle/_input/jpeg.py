"""The bytes of a JPEG before it is decoded: its markers walked to count its
scans and segments and to size the coefficient buffers libjpeg would hold,
each refused past restyle's limit (:data:`~restyle._input.limits.JPEG_MAX_SCANS`,
:data:`~restyle._input.limits.JPEG_MAX_SEGMENTS`,
:data:`~restyle._input.limits.JPEG_MAX_COEFFICIENT_BYTES`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from restyle._errors import ImageError
from restyle._input.limits import (
    JPEG_MAX_COEFFICIENT_BYTES,
    JPEG_MAX_SCANS,
    JPEG_MAX_SEGMENTS,
)

__all__ = ["JpegLayout", "check_coefficients", "jpeg_layout", "scan_end"]


@dataclass(frozen=True, slots=True)
class JpegLayout:
    """What a JPEG's markers say about the cost of decoding it."""

    width: int
    height: int
    progressive: bool
    scans: int
    #: The coefficient buffers libjpeg holds for the whole image when it
    #: needs more than one pass (progressive or several scans); else 0.
    coefficient_bytes: int


_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # not DHT, JPG, DAC
_SOF_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
_NO_LENGTH = frozenset({0x00, 0x01, *range(0xD0, 0xD9)})  # stuffing, TEM, RSTn, SOI
_EOI, _SOS = 0xD9, 0xDA
_FILL = re.compile(rb"\xff+")
#: The first and the largest span :func:`scan_end` looks at in one step.
_SCAN_STEP, _SCAN_STEP_MAX = 16 * 1024, 1024 * 1024
_BLOCK_BYTES = 64 * 2  # one 8x8 block of 16-bit coefficients


def jpeg_layout(data: bytes, what: str) -> JpegLayout:
    """Walk a JPEG's markers, skipping segment payloads and scan data, to count
    its scans and size its coefficient buffers. Refuses a file past
    :data:`JPEG_MAX_SCANS` or :data:`JPEG_MAX_SEGMENTS` at once; anything else
    malformed is left for the decoder to report."""
    end = len(data)
    pos = 2
    segments = scans = 0
    frame: tuple[int, int, list[tuple[int, int]]] | None = None
    progressive = False
    while pos < end:
        if data[pos] != 0xFF:  # stray bytes, which libjpeg skips too
            pos = data.find(b"\xff", pos)
            if pos < 0:
                break
        fill = _FILL.match(data, pos)
        pos = fill.end() if fill else pos + 1
        if pos >= end:
            break
        marker = data[pos]
        pos += 1
        if marker == _EOI:
            break
        if marker in _NO_LENGTH:
            continue
        if pos + 2 > end:
            break
        length = int.from_bytes(data[pos:pos + 2], "big")
        if length < 2:
            break
        segments += 1
        if segments > JPEG_MAX_SEGMENTS:
            raise ImageError(
                f"{what} is a JPEG of more than {JPEG_MAX_SEGMENTS:,} marker segments, "
                "restyle's limit"
            )
        if marker in _SOF and frame is None:
            frame = _frame(data[pos + 2:pos + length])
            progressive = marker in _SOF_PROGRESSIVE
        pos += length
        if marker == _SOS:
            scans += 1
            if scans > JPEG_MAX_SCANS:
                raise ImageError(
                    f"{what} is a JPEG of more than {JPEG_MAX_SCANS} scans, restyle's limit "
                    "(a progressive JPEG has about 10)"
                )
            found = scan_end(data, pos)
            if found is None:
                break
            pos = found
    if frame is None:
        return JpegLayout(0, 0, progressive, scans, 0)
    height, width, sampling = frame
    buffered = progressive or scans > 1
    return JpegLayout(width, height, progressive, scans,
                       _coefficient_bytes(width, height, sampling) if buffered else 0)


def scan_end(data: bytes, pos: int) -> int | None:
    """Where the entropy-coded data from ``pos`` ends: the first 0xFF that is
    neither a stuffed zero nor a restart marker (None: none before the end).
    Searched by numpy in growing spans, which runs without the GIL: the photos
    of concurrent analyses are checked on both cores."""
    array = np.frombuffer(data, np.uint8)
    last = len(array) - 1  # a 0xFF needs a byte after it
    step = _SCAN_STEP
    while pos < last:
        stop = min(last, pos + step)
        marks = np.flatnonzero(array[pos:stop] == 0xFF) + pos
        if len(marks):
            after = array[marks + 1]
            ends = np.flatnonzero((after != 0x00) & ((after < 0xD0) | (after > 0xD7)))
            if len(ends):
                return int(marks[ends[0]])
        pos, step = stop, min(2 * step, _SCAN_STEP_MAX)
    return None


def _frame(body: bytes) -> tuple[int, int, list[tuple[int, int]]] | None:
    """Height, width and each component's sampling factors from a SOF segment."""
    if len(body) < 6:
        return None
    height, width = int.from_bytes(body[1:3], "big"), int.from_bytes(body[3:5], "big")
    count = body[5]
    if count == 0 or len(body) < 6 + 3 * count:
        return None
    sampling = [(max(1, body[7 + 3 * i] >> 4), max(1, body[7 + 3 * i] & 0x0F))
                for i in range(count)]
    return height, width, sampling


def _coefficient_bytes(width: int, height: int, sampling: list[tuple[int, int]]) -> int:
    """The whole-image coefficient buffers libjpeg allocates (jdcoefct.c): for
    each component its blocks, rounded up to whole sampling units."""
    most_h = max(h for h, _ in sampling)
    most_v = max(v for _, v in sampling)
    total = 0
    for h, v in sampling:
        across = -(-width * h // (most_h * 8))
        down = -(-height * v // (most_v * 8))
        total += (-(-across // h) * h) * (-(-down // v) * v) * _BLOCK_BYTES
    return total


def check_coefficients(layout: JpegLayout, what: str) -> None:
    if layout.coefficient_bytes > JPEG_MAX_COEFFICIENT_BYTES:
        kind = "progressive" if layout.progressive else f"{layout.scans}-scan"
        raise ImageError(
            f"{what} is a {layout.width}x{layout.height} {kind} JPEG whose decoder would hold "
            f"{layout.coefficient_bytes / 2**20:.0f} MiB of coefficients, more than restyle's "
            f"limit of {JPEG_MAX_COEFFICIENT_BYTES // 2**20} MiB"
        )

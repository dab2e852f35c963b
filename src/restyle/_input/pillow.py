"""Pillow without its process-wide side effects: the format plugins used
directly, the orientation tag read by restyle itself, and the one kind of
file decoded with warnings held back (a PNG with malformed animation chunks),
one at a time.
"""

from __future__ import annotations

import io
import re
import struct
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from PIL import ImageFile, JpegImagePlugin, PngImagePlugin

from restyle._errors import ImageError

__all__ = ["HEIF_INSTALL", "ORIENTATION_TAG", "opened", "quiet_turn", "read_orientation"]


class _JpegFile(JpegImagePlugin.JpegImageFile):
    """Pillow's JPEG reader without the DPI it works out from EXIF as it opens a
    file: restyle has no use for it, and Pillow's EXIF parser warns (a
    process-wide warning) on malformed EXIF."""

    def _read_dpi_from_exif(self) -> None:
        return


def _plugin(fmt: str) -> Callable[[IO[bytes]], ImageFile.ImageFile]:
    """The Pillow class that reads ``fmt``, used directly rather than through
    ``Image.open``: no format guessing, no MPO adoption of a JPEG, and no
    process-wide decompression-bomb warning (restyle's limits are lower)."""
    if fmt == "JPEG":
        return _JpegFile
    if fmt == "PNG":
        return PngImagePlugin.PngImageFile
    if fmt == "HEIF":
        return _heif_plugin()
    if fmt == "AVIF":
        return _avif_plugin()
    from PIL import WebPImagePlugin  # needs Pillow's WebP support, loaded when used

    return WebPImagePlugin.WebPImageFile


#: What to install to read an iPhone's HEIC photos.
HEIF_INSTALL = "pip install 'restyle[heif]'"


def _heif_plugin() -> Callable[[IO[bytes]], ImageFile.ImageFile]:
    """pillow-heif's reader, used directly: it is not registered with Pillow
    (``register_heif_opener`` would change every ``Image.open`` in the
    process). Its header holds the size; libheif decodes only on ``load``."""
    try:
        from pillow_heif import as_plugin
    except ImportError:
        raise ImageError(
            f"HEIC/HEIF photos need pillow-heif, which is not installed: {HEIF_INSTALL}"
        ) from None
    plugin: Callable[[IO[bytes]], ImageFile.ImageFile] = as_plugin.HeifImageFile
    return plugin


def _avif_plugin() -> Callable[[IO[bytes]], ImageFile.ImageFile]:
    """Pillow's own AVIF reader (libavif, in Pillow's wheels from 11.3 on)."""
    try:
        from PIL import AvifImagePlugin
    except ImportError:
        supported = False
    else:
        supported = bool(getattr(AvifImagePlugin, "SUPPORTED", False))
    if not supported:
        raise ImageError("AVIF photos need a Pillow built with AVIF support "
                         "(Pillow's wheels from 11.3 on): pip install 'pillow>=11.3'")
    return AvifImagePlugin.AvifImageFile


@contextmanager
def opened(data: bytes, fmt: str, what: str,
           deadline: float | None) -> Iterator[ImageFile.ImageFile]:
    """``data`` opened (its header read) by ``fmt``'s plugin, closed afterwards.
    Held in the quiet turn while in use when Pillow could warn about it."""
    with quiet_turn(deadline, what) if fmt == "PNG" and _png_may_warn(data) else _no_turn():
        img = _plugin(fmt)(io.BytesIO(data))
        try:
            yield img
        finally:
            img.close()


# -- what must be serialised: only a malformed animated PNG ---------------------------

# Pillow warns (warnings.warn, process-wide) on hostile input in three places
# restyle could reach: Image.open's decompression-bomb check and MPO check
# (avoided: the plugins are used directly), EXIF parsing (avoided: restyle
# reads the orientation tag itself, and its JPEG reader skips the DPI Pillow
# reads from EXIF) and a PNG's animation-control chunk, as the header is read
# or after the pixels. Only such a PNG is decoded inside
# catch_warnings, which swaps process-wide state: two threads inside it at once
# can leave one's filters installed for good, so they take turns, bounded by
# the PNG pixel limit, and a caller waits for the turn only until its deadline.
_QUIET_LOCK = threading.Lock()


@contextmanager
def quiet_turn(deadline: float | None, what: str) -> Iterator[None]:
    timeout = -1.0 if deadline is None else max(0.0, deadline - time.monotonic())
    if not _QUIET_LOCK.acquire(timeout=timeout):
        raise ImageError(f"{what} was not decoded: no time was left")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        _QUIET_LOCK.release()


@contextmanager
def _no_turn() -> Iterator[None]:
    yield


def _png_may_warn(data: bytes) -> bool:
    """Whether Pillow could warn while reading this PNG: it does for a second
    animation-control chunk, or one whose frame count is 0 or past 2^31."""
    count = data.count(b"acTL")
    if count == 0:
        return False
    if count > 1:
        return True
    at = data.find(b"acTL") + 4
    frames = int.from_bytes(data[at:at + 4], "big")
    return not 0 < frames <= 0x80000000


# -- EXIF orientation, read without Pillow's EXIF parser ------------------------------

ORIENTATION_TAG = 0x0112


def read_orientation(info: dict[Any, Any]) -> int:
    """The EXIF orientation in a decoded file's metadata (1, upright, when there
    is none), read as Pillow's ``getexif`` finds it but without Pillow's EXIF
    parser, which warns on malformed data: the EXIF block (a JPEG's APP1, a PNG's
    or WebP's eXIf), else a PNG's hex "Raw profile type exif", else XMP's
    tiff:Orientation."""
    exif = info.get("exif")
    if exif is None and isinstance(info.get("Raw profile type exif"), str):
        try:
            exif = bytes.fromhex("".join(info["Raw profile type exif"].split("\n")[3:]))
        except ValueError:
            exif = None
    value = _exif_orientation(exif) if isinstance(exif, (bytes, bytearray)) else None
    if value is None:
        xmp = info.get("XML:com.adobe.xmp") or info.get("xmp")
        if isinstance(xmp, (str, bytes)):
            found = re.search(rb'tiff:Orientation(="|>)([0-9])',
                              xmp.encode("utf-8", "replace") if isinstance(xmp, str) else xmp)
            value = int(found[2]) if found else None
    return value if value is not None else 1


def _exif_orientation(exif: bytes | bytearray) -> int | None:
    """The orientation tag of an EXIF block's first directory, if it has one."""
    data = bytes(exif[6:] if exif[:6] == b"Exif\x00\x00" else exif)
    order = {b"II*\x00": "<", b"MM\x00*": ">"}.get(data[:4])
    if order is None or len(data) < 8:
        return None
    (offset,) = struct.unpack(order + "L", data[4:8])
    if offset + 2 > len(data):
        return None
    (count,) = struct.unpack(order + "H", data[offset:offset + 2])
    for entry in range(offset + 2, min(offset + 2 + 12 * count, len(data) - 11), 12):
        tag, kind, number = struct.unpack(order + "HHL", data[entry:entry + 8])
        if tag != ORIENTATION_TAG:
            continue
        if number < 1:
            return None
        value = data[entry + 8:entry + 12]
        if kind == 3:  # SHORT
            return int(struct.unpack(order + "H", value[:2])[0])
        if kind == 4:  # LONG
            return int(struct.unpack(order + "L", value)[0])
        return value[0] if kind == 1 else None  # BYTE
    return None

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
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import stat
import struct
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any, TypeVar

import numpy as np
from PIL import Image, ImageFile, JpegImagePlugin, PngImagePlugin, UnidentifiedImageError

from restyle._errors import ImageError
from restyle._types import PhotoInfo

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
]

ImageInput = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes] | Image.Image

#: Largest photo accepted, in pixels (width x height).
DEFAULT_MAX_PIXELS = 40_000_000
#: Lower limits for the formats Pillow can only decode at full size before
#: restyle reduces them: PNG costs about 4 bytes a pixel while it decodes,
#: WebP about 15 (libwebp's decoder holds several copies of the canvas). These
#: keep the memory one photo adds under 100 MB; JPEG is reduced inside its
#: decoder and is held only to :data:`DEFAULT_MAX_PIXELS`.
FORMAT_MAX_PIXELS = {"PNG": 24_000_000, "WEBP": 6_000_000}
#: Largest encoded photo accepted, in bytes.
DEFAULT_MAX_BYTES = 30 * 1024 * 1024
#: Most elongated photo accepted: its long side at most this many times its
#: short side. Phone panoramas run from 4:1 to about 10:1; past 20:1 a picture
#: is a strip or a banner, of which a CLIP encoder's centre crop sees under a
#: twentieth. The bound also caps what an encoder's shortest-side resize makes
#: of any photo: 20 x 336 pixels long at most.
MAX_ASPECT_RATIO = 20
#: Longest side of the pixels restyle keeps of a photo; larger photos are
#: reduced as they are decoded. Nothing downstream needs more: encoders see
#: 224 to 336 pixels, thumbnails 256, cloud services at most 1600 (Google
#: Vision) to 4096 (Rekognition, which gets the original file when it fits).
WORKING_SIDE = 2048
#: Most coefficient memory a JPEG may need to be decoded. libjpeg keeps the
#: whole image's DCT coefficients (2 bytes x 64 per 8x8 block of each
#: component) for a progressive or multi-scan file, at full size whatever the
#: scale it decodes at: about 6 bytes a pixel at full colour resolution (4:4:4),
#: 3 at 4:2:0, 2 for greyscale. 64 MiB allows a progressive JPEG of about 11
#: megapixels at 4:4:4 and 22 at 4:2:0 (a web image is rarely a tenth of that),
#: and keeps such a file within the memory one image may add (about 100 MB,
#: ``bench/memory.py``). Baseline JPEGs need no such buffers and keep the
#: 40-megapixel limit.
JPEG_MAX_COEFFICIENT_BYTES = 64 * 1024 * 1024
#: Most scans a JPEG may have. Each scan is one more pass over the
#: coefficients: libjpeg's progressive files have 10 scans (6 in greyscale),
#: Photoshop's 3 to 5, scan optimisers' (mozjpeg, jpegrescan) 10 to 20, a
#: baseline file 1 (3 when not interleaved). A file of thousands of tiny scans
#: costs seconds of CPU for a few hundred KB. At 50, over twice the longest
#: ordinary script, the costliest JPEG restyle accepts (50 scans over the
#: largest greyscale image its coefficient limit allows) decodes in a few
#: seconds of one core (``bench/memory.py`` prints the time); the caller's
#: deadline bounds the wait for it in any case.
JPEG_MAX_SCANS = 50
#: Most marker segments (headers, tables, scans) a JPEG may have; a camera's
#: has about 20, a progressive one with a table per scan about 30. The limit
#: bounds the work of reading the markers before anything is decoded.
JPEG_MAX_SEGMENTS = 1000
#: Memory the decodes in flight in one process may hold together, as restyle
#: estimates it from each image's header (about 100 MB for the largest image
#: restyle accepts, a few MB for a web-sized one). A decode waits for room only
#: until its caller's deadline; one image never needs more than this.
DECODE_ROOM_BYTES = 256 * 1024 * 1024

_FORMATS = ("JPEG", "PNG", "WEBP")
_READ_CHUNK = 1024 * 1024
_T = TypeVar("_T")


def sniff_format(data: bytes | bytearray | memoryview) -> str | None:
    """The image format named by ``data``'s magic bytes, if it is one restyle accepts."""
    head = bytes(data[:12])
    if head[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    return None


class _SharedImage(Image.Image):
    """A photo's pixels as a plugin is handed them: the same pixels as restyle's,
    marked read-only, so Pillow copies them before any change made through its
    API (``paste``, ``putpixel``, ``ImageDraw``, ``frombytes``...)."""

    def frombytes(self, *args: Any, **kwargs: Any) -> None:
        # Pillow's own frombytes writes into the shared pixels even when read-only.
        self._ensure_mutable()
        super().frombytes(*args, **kwargs)


class Photo:
    """A decoded, validated photo: upright RGB pixels, at most
    :data:`WORKING_SIDE` a side, plus the bytes it came from.

    Read-only: its attributes cannot be set, and :attr:`image` hands out the
    photo's pixels as a new image object each time, sharing them without a copy
    until someone draws on it (Pillow then copies first), so a component can
    change neither what restyle reports (source, hash) nor what the others and
    the thumbnail see.

    Embeddings are memoised per encoder, so the experts and the re-ranker that
    all need the photo's vector compute it once.
    """

    __slots__ = ("_data", "_embeddings", "_format", "_image", "_lock", "_sha256", "_source")

    def __init__(
        self, *, image: Image.Image, data: bytes | None, fmt: str, source: str | None,
        sha256: str | None = None,
    ) -> None:
        image.load()
        self._image = image
        self._data = data
        self._format = fmt
        self._source = source
        if sha256 is None:
            sha256 = hashlib.sha256(data if data is not None else image.tobytes()).hexdigest()
        self._sha256 = sha256
        self._embeddings: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"Photo(source={self._source!r}, format={self._format!r}, "
            f"size={self.width}x{self.height}, sha256={self._sha256[:12]}...)"
        )

    @property
    def image(self) -> Image.Image:
        """The pixels, as a new image object that shares them until it is changed."""
        view = self._image._new(self._image.im)
        view.__class__ = _SharedImage
        view.readonly = 1
        return view

    @property
    def data(self) -> bytes | None:
        """The encoded bytes the photo was decoded from (None for a PIL image handed in)."""
        return self._data

    @property
    def format(self) -> str:
        return self._format

    @property
    def source(self) -> str | None:
        """The path or file name the photo was read from, if any."""
        return self._source

    @property
    def sha256(self) -> str:
        return self._sha256

    @property
    def width(self) -> int:
        return self._image.width

    @property
    def height(self) -> int:
        return self._image.height

    def vector(self, model_id: str) -> np.ndarray | None:
        """This photo's vector under the model ``model_id``, if one was kept."""
        with self._lock:
            return self._embeddings.get(model_id)

    def keep_vector(self, model_id: str, vector: np.ndarray) -> np.ndarray:
        """Keep ``vector`` (checked by whoever computed it) as this photo's
        vector under ``model_id``, unless one is kept already; returns the
        one kept. The photo never computes a vector itself: an encoder does
        (:meth:`restyle.Encoder.photo_vector`)."""
        with self._lock:
            return self._embeddings.setdefault(model_id, vector)

    def embedding(self, encoder: Any) -> np.ndarray:
        """Deprecated: ``encoder.photo_vector(photo)``."""
        warnings.warn("Photo.embedding(encoder) is deprecated; use encoder.photo_vector(photo)",
                      DeprecationWarning, stacklevel=2)
        vector: np.ndarray = encoder.photo_vector(self)
        return vector

    def known_embedding(self, encoder: Any) -> np.ndarray | None:
        """Deprecated: ``photo.vector(encoder.model_id)``."""
        warnings.warn("Photo.known_embedding(encoder) is deprecated; use "
                      "photo.vector(encoder.model_id)", DeprecationWarning, stacklevel=2)
        return self.vector(encoder.model_id)

    def encoded(
        self, *, fmt: str = "JPEG", max_side: int | None = None, quality: int = 90
    ) -> bytes:
        """The photo re-encoded (and downscaled to ``max_side`` if given)."""
        img = self._image
        if max_side is not None and max(img.size) > max_side:
            img = img.copy()
            img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, format=fmt, quality=quality)
        return buf.getvalue()

    def info(self, *, thumbnail_side: int = 256) -> PhotoInfo:
        thumb = self.encoded(max_side=thumbnail_side, quality=80)
        return PhotoInfo(
            sha256=self._sha256,
            width=self.width,
            height=self.height,
            format=self._format,
            source=self._source,
            thumbnail="data:image/jpeg;base64," + base64.b64encode(thumb).decode("ascii"),
        )


# -- reading ------------------------------------------------------------------------


def _megabytes(size: int) -> str:
    return f"{size // (1024 * 1024)} MiB" if size >= 1024 * 1024 else f"{size:,} bytes"


def _too_large(what: str, max_bytes: int) -> ImageError:
    return ImageError(f"{what} is larger than restyle's limit of {_megabytes(max_bytes)}")


def _read_capped(read: Callable[[int], Any], max_bytes: int, what: str) -> bytes:
    """Everything ``read`` gives until the end, a chunk at a time, refused as soon
    as it passes ``max_bytes``; a short read is not taken for the end."""
    buf = bytearray()
    while True:
        chunk = read(min(_READ_CHUNK, max_bytes + 1 - len(buf)))
        if chunk is None:
            raise ImageError(f"{what} cannot be read: its file object is non-blocking")
        if not isinstance(chunk, (bytes, bytearray)):
            raise ImageError(f"{what} file object must be opened in binary mode")
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > max_bytes:
            raise _too_large(what, max_bytes)


_NOT_REGULAR = (
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
               | getattr(os, "O_BINARY", 0))


def _checked_path(source: str | os.PathLike[str]) -> str | bytes:
    """The path as the OS takes it; a path with a NUL byte (which no file has) is an ImageError."""
    raw = os.fspath(source)
    if ("\0" in raw) if isinstance(raw, str) else (b"\0" in raw):
        raise ImageError(f"photo path {os.fsdecode(raw)!r} contains a NUL byte")
    return raw


def _read_path(raw: str | bytes, max_bytes: int) -> bytes:
    """The bytes of the regular file at ``raw``. The file is opened without
    blocking, so a named pipe with no writer or a device is refused at once."""
    path = os.fsdecode(raw)
    try:
        fd = os.open(raw, _OPEN_FLAGS)
    except FileNotFoundError as exc:
        raise ImageError(f"photo not found: {path}") from exc
    except IsADirectoryError as exc:
        raise ImageError(f"photo path is a directory: {path}") from exc
    except OSError as exc:
        raise ImageError(f"cannot read photo {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:  # a name the file system cannot encode
        raise ImageError(f"cannot read photo {path!r}: {exc}") from exc
    try:
        status = os.fstat(fd).st_mode
        if stat.S_ISDIR(status):
            raise ImageError(f"photo path is a directory: {path}")
        if not stat.S_ISREG(status):
            kind = next((name for test, name in _NOT_REGULAR if test(status)), "not a file")
            raise ImageError(f"photo {path} is {kind}, not a regular file")
        what = f"photo {os.path.basename(path)!r}"
        if os.fstat(fd).st_size > max_bytes:
            raise _too_large(what, max_bytes)
        try:
            return _read_capped(lambda size: os.read(fd, size), max_bytes, what)
        except OSError as exc:
            raise ImageError(f"cannot read photo {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def _within(deadline: float | None, action: str, work: Callable[[], _T]) -> _T:
    """``work()`` on a daemon thread, waited for until ``deadline``: an
    ImageError then, and the thread is abandoned (it holds nothing another
    decode waits for without a deadline, and its decode ends by restyle's
    limits). Without a deadline, ``work()`` on this thread."""
    if deadline is None:
        return work()
    start = time.monotonic()
    budget = deadline - start
    if not budget > 0:
        raise ImageError(f"photo was not {action}: no time was left")
    done = threading.Event()
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, work()))
        except BaseException as exc:  # handed to the caller
            outcome.append((False, exc))
        finally:
            done.set()

    threading.Thread(target=run, daemon=True, name="restyle-decode").start()
    if not done.wait(budget):
        raise ImageError(f"photo was not {action} within {budget:.3g} s")
    ok, value = outcome[0]
    if ok:
        return value  # type: ignore[no-any-return]
    raise value


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
        return _within(deadline, "decoded",
                       lambda: _from_pil(image, max_pixels=max_pixels, deadline=deadline))
    read: Callable[[], tuple[bytes, str | None]]
    if isinstance(source, (str, os.PathLike)):
        raw = _checked_path(source)

        def read() -> tuple[bytes, str | None]:
            return _read_path(raw, max_bytes), os.fsdecode(raw)
    elif isinstance(source, (bytes, bytearray, memoryview)):
        size = source.nbytes if isinstance(source, memoryview) else len(source)
        if size > max_bytes:  # before any copy
            raise _too_large("photo", max_bytes)
        data = bytes(source)
        return _within(deadline, "decoded",
                       lambda: _decode(data, max_pixels=max_pixels, deadline=deadline))
    elif hasattr(source, "read"):
        stream = source
        name = getattr(source, "name", None)

        def read() -> tuple[bytes, str | None]:
            return (_read_capped(stream.read, max_bytes, "photo"),
                    name if isinstance(name, str) else None)
    else:
        raise ImageError(
            f"cannot read a photo from {type(source).__name__}; "
            "pass a path, bytes, a binary file object or a PIL image"
        )

    def load() -> Photo:
        data, name = read()
        return _decode(data, max_pixels=max_pixels, source=name, deadline=deadline)

    return _within(deadline, "read and decoded", load)


# -- decoding -----------------------------------------------------------------------


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
    return _within(deadline, "decoded", lambda: _decode(
        data, max_pixels=max_pixels, source=source, draft_side=draft_side, sha256=sha256,
        deadline=deadline))


def _decode(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    source: str | None = None,
    draft_side: int | None = None,
    sha256: str | None = None,
    deadline: float | None = None,
) -> Photo:
    what = f"photo {source!r}" if source else "photo"
    if not data:
        raise ImageError(f"{what} is empty")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageError(f"{what} is not a JPEG, PNG or WebP image")
    cap = min(max_pixels, FORMAT_MAX_PIXELS.get(fmt, max_pixels))
    layout = _jpeg_layout(data, what) if fmt == "JPEG" else None
    try:
        with _opened(data, fmt, what, deadline) as img:
            _check_size(img.size, cap, what, fmt=fmt)
            if layout is not None:
                _check_coefficients(layout, what)
                _draft(img, draft_side)
            with _DECODE_ROOM.held(_decode_cost(img, fmt, layout), deadline, what):
                img.load()
                rgb = _working_copy(img, owned=True, orientation=_orientation(img.info))
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
    from PIL import WebPImagePlugin  # needs Pillow's WebP support, loaded when used

    return WebPImagePlugin.WebPImageFile


@contextmanager
def _opened(data: bytes, fmt: str, what: str,
            deadline: float | None) -> Iterator[ImageFile.ImageFile]:
    """``data`` opened (its header read) by ``fmt``'s plugin, closed afterwards.
    Held in the quiet turn while in use when Pillow could warn about it."""
    with _quiet_turn(deadline, what) if fmt == "PNG" and _png_may_warn(data) else _no_turn():
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
def _quiet_turn(deadline: float | None, what: str) -> Iterator[None]:
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


# -- the bytes of a JPEG, before decoding ---------------------------------------------


@dataclass(frozen=True, slots=True)
class _JpegLayout:
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
# The end of a scan's entropy-coded data: a 0xFF that is neither a stuffed
# zero nor a restart marker.
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7]")
_BLOCK_BYTES = 64 * 2  # one 8x8 block of 16-bit coefficients


def _jpeg_layout(data: bytes, what: str) -> _JpegLayout:
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
            found = _SCAN_END.search(data, pos)
            if found is None:
                break
            pos = found.start()
    if frame is None:
        return _JpegLayout(0, 0, progressive, scans, 0)
    height, width, sampling = frame
    buffered = progressive or scans > 1
    return _JpegLayout(width, height, progressive, scans,
                       _coefficient_bytes(width, height, sampling) if buffered else 0)


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


def _check_coefficients(layout: _JpegLayout, what: str) -> None:
    if layout.coefficient_bytes > JPEG_MAX_COEFFICIENT_BYTES:
        kind = "progressive" if layout.progressive else f"{layout.scans}-scan"
        raise ImageError(
            f"{what} is a {layout.width}x{layout.height} {kind} JPEG whose decoder would hold "
            f"{layout.coefficient_bytes / 2**20:.0f} MiB of coefficients, more than restyle's "
            f"limit of {JPEG_MAX_COEFFICIENT_BYTES // 2**20} MiB"
        )


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
# keeps RGB as 4 bytes a pixel; libwebp several canvases).
_DECODE_BYTES_PER_PIXEL = {"JPEG": 4, "PNG": 5, "WEBP": 15}


def _decode_cost(img: Image.Image, fmt: str, layout: _JpegLayout | None) -> int:
    """The memory decoding ``img`` (opened, drafted) will take, from its header:
    the pixels Pillow decodes, the working copy restyle keeps, and a JPEG's
    coefficient buffers."""
    pixels = img.width * img.height
    kept = min(pixels, WORKING_SIDE * WORKING_SIDE) * 4
    coefficients = layout.coefficient_bytes if layout is not None else 0
    return pixels * _DECODE_BYTES_PER_PIXEL[fmt] + kept + coefficients


def _from_pil(img: Image.Image, *, max_pixels: int, deadline: float | None) -> Photo:
    """A caller's PIL image, copied. It can be any format Pillow knows, opened
    lazily, so it is loaded and its EXIF read in the quiet turn (Pillow may warn
    about either), bounded by the pixel limit checked first."""
    _check_size(img.size, max_pixels, "photo")
    try:
        with _quiet_turn(deadline, "photo"):
            img.load()
            orientation = img.getexif().get(_ORIENTATION_TAG, 1)
        rgb = _working_copy(img, owned=False, orientation=orientation)
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


# EXIF orientation -> the transpose that turns the stored pixels upright.
_ORIENTATION_TAG = 0x0112
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orientation(info: dict[Any, Any]) -> int:
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
        if tag != _ORIENTATION_TAG:
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


def _working_copy(img: Image.Image, *, owned: bool, orientation: int) -> Image.Image:
    """The first frame of ``img`` (loaded) as upright RGB at most
    :data:`WORKING_SIDE` a side; ``owned``: ``img`` was decoded here, so its
    pixels need no copy."""
    img.seek(0)
    img.load()
    method = _UPRIGHT.get(orientation)
    factor = -(-max(img.size) // WORKING_SIDE)
    rgb = _to_rgb(img, owned=owned) if factor == 1 else _reduced_rgb(img, factor)
    return rgb if method is None else rgb.transpose(method)


# Rows are converted and reduced a band of about a megapixel at a time, so the
# image Pillow decoded is the only full-size one.
_BAND_PIXELS = 1 << 20


def _reduced_rgb(img: Image.Image, factor: int) -> Image.Image:
    """``img`` as RGB, reduced ``factor`` times (an average over each block)."""
    width, height = img.size
    out = Image.new("RGB", (-(-width // factor), -(-height // factor)))
    rows = max(1, _BAND_PIXELS // (width * factor)) * factor  # whole blocks per band
    for top in range(0, height, rows):
        band = img.crop((0, top, width, min(height, top + rows)))
        out.paste(_to_rgb(band, owned=True).reduce(factor), (0, top // factor))
    return out


def _to_rgb(img: Image.Image, *, owned: bool) -> Image.Image:
    if img.mode == "RGB":
        # Pixels restyle decoded or cut itself go on in a plain Image of their
        # own without a copy (a decoded file's file object is closed after this,
        # the pixels are not); a caller's image is copied, as it may change.
        return img._new(img.im) if owned else img.copy()
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA"):
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    return img.convert("RGB")


def encoder_input(image: Image.Image, side: int) -> Image.Image:
    """``image`` as an encoder that resizes the shortest side to ``side`` pixels
    and crops the centre should get it: RGB; the long side cut about the centre
    to :data:`MAX_ASPECT_RATIO` times the short side, so the resize cannot blow a
    strip up to millions of pixels; and reduced by a whole factor while the
    short side stays at least twice ``side``, which keeps the resize cheap."""
    width, height = image.size
    short = min(width, height)
    if max(width, height) > MAX_ASPECT_RATIO * short:
        keep = MAX_ASPECT_RATIO * short
        if width > height:
            left = (width - keep) // 2
            image = image.crop((left, 0, left + keep, height))
        else:
            top = (height - keep) // 2
            image = image.crop((0, top, width, top + keep))
    if image.mode != "RGB":
        image = image.convert("RGB")
    factor = short // (2 * side)
    return image.reduce(factor) if factor >= 2 else image


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadLimits:
    """What a remote service accepts: encoded bytes, longest side, pixels, formats."""

    max_bytes: int
    max_side: int | None = None
    max_pixels: int | None = None
    formats: tuple[str, ...] = ("JPEG", "PNG")


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadImage:
    """Bytes ready to send, with the size of the image they encode."""

    data: bytes = field(repr=False)
    format: str
    width: int
    height: int
    reencoded: bool


# JPEG qualities tried, best first, before the image is shrunk further.
_UPLOAD_QUALITIES = (90, 80, 70)


def prepare_upload(photo: Photo, limits: UploadLimits) -> UploadImage:
    """The photo as bytes a service with these limits accepts.

    The original bytes are sent untouched when they already fit (an accepted
    format within the limits, stored upright), so the service sees exactly what
    the user took, even where restyle kept fewer pixels; otherwise the upright
    pixels are downscaled and re-encoded as JPEG, first lowering the quality
    and then the size until they fit ``max_bytes``.
    """
    img = photo.image
    original = _sendable_size(photo, limits)
    if photo.data is not None and original is not None:
        return UploadImage(data=photo.data, format=photo.format, width=original[0],
                           height=original[1], reencoded=False)
    scale = 1.0
    if limits.max_side is not None:
        scale = min(scale, limits.max_side / max(img.size))
    if limits.max_pixels is not None:
        scale = min(scale, (limits.max_pixels / (img.width * img.height)) ** 0.5)
    while True:
        size = (max(1, int(img.width * scale)), max(1, int(img.height * scale)))
        scaled = img if size == img.size else img.resize(size, Image.Resampling.LANCZOS)
        for quality in _UPLOAD_QUALITIES:
            buf = io.BytesIO()
            scaled.save(buf, format="JPEG", quality=quality)
            if buf.tell() <= limits.max_bytes:
                return UploadImage(data=buf.getvalue(), format="JPEG", width=size[0],
                                   height=size[1], reencoded=True)
        if max(size) <= 16:
            raise ImageError(f"photo cannot be made smaller than {limits.max_bytes} bytes")
        scale *= 0.75


def _sendable_size(photo: Photo, limits: UploadLimits) -> tuple[int, int] | None:
    """The size of the photo's original file if the service can take it as it
    is: an accepted format within the limits, stored upright (services do not
    all apply EXIF orientation). It may be larger than the pixels restyle kept."""
    data = photo.data
    if (data is None or photo.format not in limits.formats or photo.format not in _FORMATS
            or len(data) > limits.max_bytes):
        return None
    try:
        with _opened(data, photo.format, "photo", None) as original:
            size: tuple[int, int] = original.size
            upright = _orientation(original.info) == 1
    except (OSError, ValueError, SyntaxError, EOFError, struct.error, ImageError,
            Image.DecompressionBombError):
        return None
    width, height = size
    if (
        not upright
        or (limits.max_side is not None and max(width, height) > limits.max_side)
        or (limits.max_pixels is not None and width * height > limits.max_pixels)
    ):
        return None
    return size

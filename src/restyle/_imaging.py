"""Safe decoding of the photos restyle is given, in bounded memory.

Only JPEG, PNG and WebP are accepted; truncated files are rejected; only the
first frame is used and EXIF orientation is applied. restyle's own limits
(bytes, pixels, aspect ratio) are checked from the header before any pixel is
decoded, Pillow's process-wide settings are left alone and its warnings never
reach the user. What restyle keeps is RGB at most :data:`WORKING_SIDE` pixels a
side: JPEGs are decoded at reduced scale, other formats reduced as they are
converted. Every decoder failure becomes one :class:`~restyle.ImageError`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from restyle._errors import ImageError
from restyle._types import PhotoInfo

if TYPE_CHECKING:
    from restyle._components import Encoder

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "FORMAT_MAX_PIXELS",
    "MAX_ASPECT_RATIO",
    "WORKING_SIDE",
    "ImageInput",
    "Photo",
    "UploadImage",
    "UploadLimits",
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

_FORMATS = ("JPEG", "PNG", "WEBP")


def sniff_format(data: bytes) -> str | None:
    """The image format named by ``data``'s magic bytes, if it is one restyle accepts."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


class Photo:
    """A decoded, validated photo: upright RGB pixels, at most
    :data:`WORKING_SIDE` a side, plus the bytes it came from.

    Embeddings are memoised per encoder, so the experts and the re-ranker that
    all need the photo's vector compute it once.
    """

    __slots__ = ("_embeddings", "_lock", "data", "format", "image", "sha256", "source")

    def __init__(
        self, *, image: Image.Image, data: bytes | None, fmt: str, source: str | None,
        sha256: str | None = None,
    ) -> None:
        self.image = image
        self.data = data
        self.format = fmt
        self.source = source
        if sha256 is None:
            sha256 = hashlib.sha256(data if data is not None else image.tobytes()).hexdigest()
        self.sha256 = sha256
        self._embeddings: dict[str, np.ndarray] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"Photo(source={self.source!r}, format={self.format!r}, "
            f"size={self.image.width}x{self.image.height}, sha256={self.sha256[:12]}...)"
        )

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height

    def embedding(self, encoder: Encoder) -> np.ndarray:
        """This photo's unit-length embedding under ``encoder``, computed once.

        Raises :class:`~restyle.PluginContractError` when the encoder's answer
        is not one finite vector.
        """
        from restyle._contracts import check_vectors  # _contracts needs the components

        key = encoder.model_id
        with self._lock:
            cached = self._embeddings.get(key)
            if cached is None:
                cached = check_vectors(encoder, encoder.encode_images([self.image]), count=1)[0]
                self._embeddings[key] = cached
            return cached

    def known_embedding(self, encoder: Encoder) -> np.ndarray | None:
        """This photo's embedding under ``encoder`` if it was computed already."""
        with self._lock:
            return self._embeddings.get(encoder.model_id)

    def remember_embedding(self, encoder: Encoder, vector: np.ndarray) -> None:
        """Keep ``vector`` as this photo's embedding under ``encoder`` (one
        computed in a batch with other photos), unless one is known already."""
        with self._lock:
            self._embeddings.setdefault(encoder.model_id, vector)

    def encoded(
        self, *, fmt: str = "JPEG", max_side: int | None = None, quality: int = 90
    ) -> bytes:
        """The photo re-encoded (and downscaled to ``max_side`` if given)."""
        img = self.image
        if max_side is not None and max(img.size) > max_side:
            img = img.copy()
            img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, format=fmt, quality=quality)
        return buf.getvalue()

    def info(self, *, thumbnail_side: int = 256) -> PhotoInfo:
        thumb = self.encoded(max_side=thumbnail_side, quality=80)
        return PhotoInfo(
            sha256=self.sha256,
            width=self.width,
            height=self.height,
            format=self.format,
            source=self.source,
            thumbnail="data:image/jpeg;base64," + base64.b64encode(thumb).decode("ascii"),
        )


def _read_limited(read: Callable[[int], bytes], max_bytes: int, what: str) -> bytes:
    data = read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ImageError(f"{what} is larger than the {max_bytes // (1024 * 1024)} MiB limit")
    return data


def load_photo(
    source: ImageInput | Photo,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> Photo:
    """Decode ``source`` (a path, bytes, a binary file object or a PIL image) safely."""
    if isinstance(source, Photo):
        return source
    if isinstance(source, Image.Image):
        return _from_pil(source, max_pixels=max_pixels)
    name: str | None = None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = str(path)
        try:
            with path.open("rb") as fh:
                data = _read_limited(fh.read, max_bytes, f"photo {path.name!r}")
        except FileNotFoundError as exc:
            raise ImageError(f"photo not found: {path}") from exc
        except IsADirectoryError as exc:
            raise ImageError(f"photo path is a directory: {path}") from exc
        except OSError as exc:
            raise ImageError(f"cannot read photo {path}: {exc.strerror or exc}") from exc
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if len(data) > max_bytes:
            raise ImageError(f"photo is larger than the {max_bytes // (1024 * 1024)} MiB limit")
    elif hasattr(source, "read"):
        name = getattr(source, "name", None)
        name = name if isinstance(name, str) else None
        raw = _read_limited(source.read, max_bytes, "photo")
        if not isinstance(raw, (bytes, bytearray)):
            raise ImageError("photo file object must be opened in binary mode")
        data = bytes(raw)
    else:
        raise ImageError(
            f"cannot read a photo from {type(source).__name__}; "
            "pass a path, bytes, a binary file object or a PIL image"
        )
    return decode(data, max_pixels=max_pixels, source=name)


def decode(
    data: bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    source: str | None = None,
    draft_side: int | None = None,
    sha256: str | None = None,
) -> Photo:
    """Decode encoded image bytes into a :class:`Photo`, or raise :class:`ImageError`.

    ``draft_side`` lets a JPEG decode at a reduced scale (1/2, 1/4 or 1/8, done
    inside the decoder and much faster) as long as both sides stay at least
    that many pixels: for images that are only going to an encoder.
    ``sha256`` is the hex digest of ``data`` when the caller has it already.
    """
    what = f"photo {source!r}" if source else "photo"
    if not data:
        raise ImageError(f"{what} is empty")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageError(f"{what} is not a JPEG, PNG or WebP image")
    cap = min(max_pixels, FORMAT_MAX_PIXELS.get(fmt, max_pixels))
    try:
        with _pillow_turn(), Image.open(io.BytesIO(data), formats=[fmt]) as img:
            _check_size(img.size, cap, what, fmt=fmt)
            if fmt == "JPEG":
                _draft(img, draft_side)
            rgb = _working_copy(img, owned=True)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        # Pillow refuses twice its MAX_IMAGE_PIXELS inside Image.open, before
        # restyle can read the size: past restyle's limit too, unless a caller
        # allowed more, in which case Pillow's is the one that applies.
        limit = min(cap, 2 * (Image.MAX_IMAGE_PIXELS or cap))
        raise ImageError(f"{what} is more than the limit of {limit:,} pixels") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"{what} cannot be decoded: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError, TypeError) as exc:
        raise ImageError(f"{what} is corrupt or truncated: {exc}") from exc
    return Photo(image=rgb, data=data, fmt=fmt, source=source, sha256=sha256)


def _from_pil(img: Image.Image, *, max_pixels: int) -> Photo:
    _check_size(img.size, max_pixels, "photo")
    try:
        with _pillow_turn():
            rgb = _working_copy(img, owned=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ImageError(f"PIL image cannot be used: {exc}") from exc
    return Photo(image=rgb, data=None, fmt=img.format or "PIL", source=None)


# catch_warnings swaps process-wide state, and two threads inside it at once
# can leave one's filters installed for good: restyle's decodes take turns.
# Taking turns also keeps a single full-size decode in memory at a time.
_PILLOW_LOCK = threading.Lock()


@contextmanager
def _pillow_turn() -> Iterator[None]:
    """Run Pillow with its warnings kept from the user. restyle checks its own
    limits from the header (Pillow's decompression-bomb warning comes earlier,
    and only from a larger size) and either decodes the photo or says why not."""
    with _PILLOW_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


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


def _working_copy(img: Image.Image, *, owned: bool) -> Image.Image:
    """The first frame of ``img`` as upright RGB at most :data:`WORKING_SIDE` a
    side; ``owned``: ``img`` was decoded here, so its pixels need no copy."""
    img.seek(0)
    img.load()
    method = _UPRIGHT.get(img.getexif().get(_ORIENTATION_TAG, 1))
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
    if data is None or photo.format not in limits.formats or len(data) > limits.max_bytes:
        return None
    try:
        with _pillow_turn(), Image.open(io.BytesIO(data)) as original:
            size: tuple[int, int] = original.size
            upright = original.getexif().get(_ORIENTATION_TAG, 1) == 1
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    width, height = size
    if (
        not upright
        or (limits.max_side is not None and max(width, height) > limits.max_side)
        or (limits.max_pixels is not None and width * height > limits.max_pixels)
    ):
        return None
    return size

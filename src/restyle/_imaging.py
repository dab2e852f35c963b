"""Safe decoding of the photos restyle is given.

Only JPEG, PNG and WebP are accepted; the pixel cap is enforced here (Pillow's
process-wide settings are left alone); truncated files are rejected; only the
first frame is used and EXIF orientation is applied. Every decoder failure
becomes one :class:`~restyle.ImageError`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from restyle._errors import ImageError
from restyle._types import PhotoInfo

if TYPE_CHECKING:
    from restyle._components import Encoder

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "ImageInput",
    "Photo",
    "UploadImage",
    "UploadLimits",
    "load_photo",
    "prepare_upload",
]

ImageInput = str | os.PathLike[str] | bytes | bytearray | memoryview | IO[bytes] | Image.Image

#: Largest photo accepted, in pixels (width x height).
DEFAULT_MAX_PIXELS = 40_000_000
#: Largest encoded photo accepted, in bytes.
DEFAULT_MAX_BYTES = 30 * 1024 * 1024

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
    """A decoded, validated photo: RGB pixels plus the bytes it came from.

    Embeddings are memoised per encoder, so the experts and the re-ranker that
    all need the photo's vector compute it once.
    """

    __slots__ = ("_embeddings", "_lock", "data", "format", "image", "sha256", "source")

    def __init__(
        self, *, image: Image.Image, data: bytes | None, fmt: str, source: str | None
    ) -> None:
        self.image = image
        self.data = data
        self.format = fmt
        self.source = source
        digest_input = data if data is not None else image.tobytes()
        self.sha256 = hashlib.sha256(digest_input).hexdigest()
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
) -> Photo:
    """Decode encoded image bytes into a :class:`Photo`, or raise :class:`ImageError`.

    ``draft_side`` lets a JPEG decode at a reduced scale (1/2, 1/4 or 1/8, done
    inside the decoder and much faster) as long as both sides stay at least
    that many pixels: for images that are only going to an encoder.
    """
    what = f"photo {source!r}" if source else "photo"
    if not data:
        raise ImageError(f"{what} is empty")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageError(f"{what} is not a JPEG, PNG or WebP image")
    try:
        with Image.open(io.BytesIO(data), formats=[fmt]) as img:
            _check_pixels(img.size, max_pixels, what)
            if fmt == "JPEG" and draft_side is not None and min(img.size) > 2 * draft_side:
                img.draft("RGB", (draft_side, draft_side))
            elif fmt == "JPEG" and max(img.size) > 4096:
                # Decode large JPEGs at reduced scale: nothing downstream needs more.
                img.draft("RGB", (img.width // 2, img.height // 2))
            img.seek(0)
            img.load()
            rgb = _to_rgb(ImageOps.exif_transpose(img))
    except ImageError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise ImageError(f"{what} cannot be decoded: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError, TypeError) as exc:
        raise ImageError(f"{what} is corrupt or truncated: {exc}") from exc
    return Photo(image=rgb, data=data, fmt=fmt, source=source)


def _from_pil(img: Image.Image, *, max_pixels: int) -> Photo:
    _check_pixels(img.size, max_pixels, "photo")
    try:
        img.seek(0)
        img.load()
        rgb = _to_rgb(ImageOps.exif_transpose(img))
    except (OSError, ValueError, EOFError) as exc:
        raise ImageError(f"PIL image cannot be used: {exc}") from exc
    return Photo(image=rgb, data=None, fmt=img.format or "PIL", source=None)


def _check_pixels(size: tuple[int, int], max_pixels: int, what: str) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(f"{what} has no pixels")
    if width * height > max_pixels:
        raise ImageError(
            f"{what} is {width}x{height} pixels, more than the limit of {max_pixels:,}"
        )


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img.copy()
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA"):
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    return img.convert("RGB")


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

    The original bytes are sent untouched when they already fit (same format,
    size and orientation), so the service sees exactly what the user took;
    otherwise the upright pixels are downscaled and re-encoded as JPEG, first
    lowering the quality and then the size until they fit ``max_bytes``.
    """
    img = photo.image
    if photo.data is not None and _fits_as_is(photo, limits):
        return UploadImage(data=photo.data, format=photo.format, width=img.width,
                           height=img.height, reencoded=False)
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


def _fits_as_is(photo: Photo, limits: UploadLimits) -> bool:
    data = photo.data
    assert data is not None
    width, height = photo.image.size
    if (
        photo.format not in limits.formats
        or len(data) > limits.max_bytes
        or (limits.max_side is not None and max(width, height) > limits.max_side)
        or (limits.max_pixels is not None and width * height > limits.max_pixels)
    ):
        return False
    # The pixels restyle decoded were turned upright and may have been decoded
    # at reduced scale; the original bytes only stand for them when neither happened.
    try:
        with Image.open(io.BytesIO(data)) as original:
            return original.size == (width, height) and original.getexif().get(0x0112, 1) == 1
    except (OSError, ValueError, SyntaxError):
        return False

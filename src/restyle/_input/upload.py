"""A photo as a remote service accepts it: its original bytes when they fit,
else its upright pixels downscaled and re-encoded until they do.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass, field

from PIL import Image

from restyle._errors import ImageError
from restyle._input.limits import FORMATS
from restyle._input.photo import Photo
from restyle._input.pillow import opened, read_orientation

__all__ = ["UploadImage", "UploadLimits", "prepare_upload"]


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
    if (data is None or photo.format not in limits.formats or photo.format not in FORMATS
            or len(data) > limits.max_bytes):
        return None
    try:
        with opened(data, photo.format, "photo", None) as original:
            size: tuple[int, int] = original.size
            upright = read_orientation(original.info) == 1
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

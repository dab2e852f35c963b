"""The pixels restyle keeps of a photo (upright RGB, at most
:data:`~restyle._input.limits.WORKING_SIDE` a side, reduced a band at a time)
and the copy of an image an encoder gets.
"""

from __future__ import annotations

from PIL import Image

from restyle._input.limits import MAX_ASPECT_RATIO, WORKING_SIDE

__all__ = ["encoder_input", "working_copy"]

# EXIF orientation -> the transpose that turns the stored pixels upright.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def working_copy(img: Image.Image, *, owned: bool, orientation: int) -> Image.Image:
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

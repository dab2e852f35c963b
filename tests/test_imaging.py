"""Safe photo decoding: every accepted input kind and every way a file can be bad."""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from pathlib import Path

import pytest
from PIL import Image, ImageFile

from restyle import ImageError, load_photo
from restyle._input.imaging import MAX_ASPECT_RATIO, WORKING_SIDE, decode
from restyle.testing import image_bytes
from tests.conftest import SAMPLE_PHOTO


def encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def test_accepts_path_bytes_file_object_and_pil_image() -> None:
    data = SAMPLE_PHOTO.read_bytes()
    from_path = load_photo(SAMPLE_PHOTO)
    from_str = load_photo(str(SAMPLE_PHOTO))
    from_bytes = load_photo(data)
    with SAMPLE_PHOTO.open("rb") as fh:
        from_file = load_photo(fh)
    from_pil = load_photo(Image.open(SAMPLE_PHOTO))
    assert from_path.sha256 == from_str.sha256 == from_bytes.sha256 == from_file.sha256
    assert from_file.source == str(SAMPLE_PHOTO)
    for photo in (from_path, from_bytes, from_file, from_pil):
        assert photo.image.mode == "RGB"
        assert photo.image.size == (240, 240)
    assert from_path.format == "JPEG"


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "JPEG"])
def test_decodes_each_accepted_format(fmt: str) -> None:
    img = Image.new("RGB", (20, 10), (10, 200, 30))
    photo = decode(encode(img, fmt))
    assert photo.format == fmt
    assert photo.image.size == (20, 10)


@pytest.mark.parametrize("fmt", ["GIF", "BMP", "TIFF"])
def test_rejects_other_formats(fmt: str) -> None:
    data = encode(Image.new("RGB", (4, 4)), fmt)
    with pytest.raises(ImageError, match="not a JPEG, PNG, WebP, HEIC/HEIF or AVIF"):
        decode(data)


def test_rejects_empty_text_and_garbage() -> None:
    for data in (b"", b"hello world", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40):
        with pytest.raises(ImageError):
            decode(data)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_rejects_truncated_files(fmt: str) -> None:
    noisy = Image.effect_noise((200, 200), 64).convert("RGB")
    data = encode(noisy, fmt)
    with pytest.raises(ImageError, match="corrupt or truncated"):
        decode(data[: len(data) // 2])


def test_pixel_cap_is_enforced_without_touching_pillow_settings() -> None:
    before = Image.MAX_IMAGE_PIXELS
    data = encode(Image.new("RGB", (2000, 1500)), "PNG")
    with pytest.raises(ImageError, match="more than the limit"):
        decode(data, max_pixels=1_000_000)
    assert decode(data, max_pixels=3_000_000).image.size == (2000, 1500)
    assert before == Image.MAX_IMAGE_PIXELS


def test_pixel_cap_applies_to_pil_input() -> None:
    with pytest.raises(ImageError, match="more than the limit"):
        load_photo(Image.new("RGB", (100, 100)), max_pixels=5_000)


def test_byte_cap_applies_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    path.write_bytes(b"\xff\xd8\xff" + b"\x00" * 2048)
    with pytest.raises(ImageError, match="larger than"):
        load_photo(path, max_bytes=1024)
    with pytest.raises(ImageError, match="larger than"):
        load_photo(path.read_bytes(), max_bytes=1024)


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    photo = decode(encode(img, "JPEG", exif=exif.tobytes()))
    assert photo.image.size == (20, 40)


def test_only_the_first_frame_of_an_animation_is_used() -> None:
    frames = [Image.new("RGB", (8, 8), color) for color in ((255, 0, 0), (0, 0, 255))]
    buf = io.BytesIO()
    frames[0].save(buf, format="WEBP", save_all=True, append_images=frames[1:], lossless=True)
    photo = decode(buf.getvalue())
    assert photo.image.getpixel((4, 4)) == (255, 0, 0)


def test_transparency_is_flattened_onto_white() -> None:
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    photo = decode(encode(img, "PNG"))
    assert photo.image.mode == "RGB"
    assert photo.image.getpixel((0, 0)) == (255, 255, 255)


def test_missing_file_directory_and_wrong_types(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="not found"):
        load_photo(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="directory"):
        load_photo(tmp_path)
    with pytest.raises(ImageError, match="cannot read a photo from int"):
        load_photo(42)  # type: ignore[arg-type]
    with pytest.raises(ImageError, match="binary mode"):
        load_photo(io.StringIO("text"))  # type: ignore[arg-type]


def test_repr_shows_no_pixels_or_bytes() -> None:
    text = repr(load_photo(SAMPLE_PHOTO))
    assert "240x240" in text and len(text) < 200


# -- bounded memory whatever the shape ------------------------------------------


def header_only_png(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels and holds none: decoding it
    would fail, so refusing it with restyle's limit proves the header was checked first."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("size", [(40000, 1), (1, 40000), (8000, 1), (21, 1)])
def test_strips_are_refused_naming_the_aspect_limit_without_warnings(
    size: tuple[int, int],
) -> None:
    data = encode(Image.new("RGB", size), "PNG")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for decode_as in (lambda: decode(data), lambda: decode(data, draft_side=448),
                          lambda: load_photo(Image.new("RGB", size))):
            with pytest.raises(ImageError, match=f"{size[0]}x{size[1]} pixels, more elongated "
                               f"than the limit of {MAX_ASPECT_RATIO}:1"):
                decode_as()
    assert caught == []


def test_the_most_elongated_photo_accepted_is_20_to_1() -> None:
    assert MAX_ASPECT_RATIO == 20
    assert decode(encode(Image.new("RGB", (20, 1)), "PNG")).image.size == (20, 1)
    assert decode(encode(Image.new("RGB", (400, 8000)), "PNG")).image.size == (100, 2000)


def test_limits_are_read_from_the_header_before_any_pixel() -> None:
    with pytest.raises(ImageError, match="more elongated than the limit"):
        decode(header_only_png(100_000, 100))
    with pytest.raises(ImageError, match="8000x6000 pixels, more than the limit of 24,000,000 "
                                         "for a PNG"):
        decode(header_only_png(8000, 6000))
    with pytest.raises(ImageError, match="corrupt or truncated"):  # within limits: decoded
        decode(header_only_png(100, 100))


@pytest.mark.parametrize(("size", "message"), [
    ((10_000, 10_000), "10000x10000 pixels, more than the limit of 24,000,000 for a PNG"),
    # Past twice Pillow's limit too: restyle reads the header itself, so the
    # message still gives the size.
    ((30_000, 30_000), "30000x30000 pixels, more than the limit of 24,000,000 for a PNG"),
])
def test_pillows_bomb_checks_give_way_to_restyles_limit_without_warnings(
    size: tuple[int, int], message: str,
) -> None:
    # Pillow warns above 89 Mpx and refuses above twice that inside Image.open,
    # before restyle reads the size; the user only ever sees restyle's limit.
    before = Image.MAX_IMAGE_PIXELS
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ImageError, match=message) as info:
            decode(header_only_png(*size))
    assert caught == []
    assert "decompression bomb" not in str(info.value)
    assert before == Image.MAX_IMAGE_PIXELS


def test_panoramas_are_accepted_and_kept_at_the_working_size() -> None:
    for fmt, size, kept in (("JPEG", (8000, 2000), (2000, 500)),
                            ("PNG", (8000, 2000), (2000, 500)),
                            ("WEBP", (4800, 1200), (1600, 400))):
        photo = decode(encode(Image.new("RGB", size, (40, 90, 160)), fmt))
        assert photo.image.size == kept, fmt
        assert photo.image.mode == "RGB"
        assert max(photo.image.size) <= WORKING_SIDE
        assert all(abs(a - b) <= 3 for a, b in zip(photo.image.getpixel((900, 200)),
                                                     (40, 90, 160), strict=True))


def test_large_photos_below_the_pixel_cap_are_kept_downscaled() -> None:
    # A JPEG is scaled inside its decoder; a PNG is reduced as it is converted.
    jpeg = decode(encode(Image.new("RGB", (6000, 4500), (200, 30, 30)), "JPEG"))
    assert jpeg.image.size == (1500, 1125)  # 1/4 scale: 1/2 would still exceed 2048
    png = decode(encode(Image.new("RGBA", (5400, 4050), (0, 0, 0, 0)), "PNG"))
    assert png.image.size == (1800, 1350)  # reduced 3 times
    assert png.image.getpixel((900, 675)) == (255, 255, 255)  # still flattened onto white
    pil = load_photo(Image.new("L", (4100, 300), 128))
    assert pil.image.size == (1367, 100) and pil.image.mode == "RGB"  # reduced 3 times


def test_reduction_averages_and_keeps_orientation() -> None:
    # Left half black, right half white: reduced, the halves stay where they were.
    img = Image.new("RGB", (4400, 2000), (0, 0, 0))
    img.paste((255, 255, 255), (2200, 0, 4400, 2000))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    photo = decode(encode(img, "PNG", exif=exif))
    assert photo.image.size == (667, 1467)  # reduced 3 times, then turned upright
    top, bottom = photo.image.getpixel((333, 10)), photo.image.getpixel((333, 1450))
    assert top == (0, 0, 0) and bottom == (255, 255, 255)


def test_only_the_first_frame_of_a_long_apng_is_used() -> None:
    frames = [Image.new("RGB", (64, 48), (i, 255 - i, 0)) for i in range(200)]
    buf = io.BytesIO()
    frames[0].save(buf, format="PNG", save_all=True, append_images=frames[1:])
    with Image.open(io.BytesIO(buf.getvalue())) as check:
        assert check.n_frames == 200
    photo = decode(buf.getvalue())
    assert photo.image.getpixel((10, 10)) == (0, 255, 0)


@pytest.mark.parametrize(("fmt", "size", "limit"), [
    ("PNG", (6000, 4500), "24,000,000 for a PNG"),
    ("WEBP", (3000, 2500), "6,000,000 for a WEBP"),
])
def test_formats_decoded_at_full_size_have_lower_pixel_limits(
    fmt: str, size: tuple[int, int], limit: str
) -> None:
    # A JPEG of the same size is fine: it is reduced inside its decoder.
    assert decode(encode(Image.new("RGB", size, (10, 20, 30)), "JPEG")).image.size[0] <= 2048
    with pytest.raises(ImageError, match=f"more than the limit of {limit}"):
        decode(encode(Image.new("RGB", size, (10, 20, 30)), fmt))


def test_a_pil_image_handed_in_is_copied_and_a_decoded_one_is_not() -> None:
    from PIL import ImageDraw

    mine = Image.new("RGB", (64, 48), (10, 20, 30))
    photo = load_photo(mine)
    ImageDraw.Draw(mine).rectangle((0, 0, 63, 47), fill=(250, 0, 0))  # the caller goes on
    assert photo.image.getpixel((5, 5)) == (10, 20, 30)
    assert photo.image.size == (64, 48)
    decoded = decode(image_bytes(size=(64, 48)))
    # Detached from the file it came from: a plain image, not a file's.
    assert isinstance(decoded.image, Image.Image)
    assert not isinstance(decoded.image, ImageFile.ImageFile)
    assert decoded.image.getpixel((5, 5))[0] > 150

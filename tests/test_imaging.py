"""Safe photo decoding: every accepted input kind and every way a file can be bad."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from restyle import ImageError, load_photo
from restyle._imaging import decode
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
    with pytest.raises(ImageError, match="not a JPEG, PNG or WebP"):
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

"""iPhone photos: HEIC/HEIF through pillow-heif (the ``heif`` extra) and AVIF
through Pillow, read under the same header checks and memory bounds as the
other formats."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
from PIL import Image, UnidentifiedImageError

from restyle import ImageError, load_photo
from restyle._input.imaging import decode, sniff_format
from restyle._input.limits import FORMAT_MAX_PIXELS, PHOTO_SUFFIXES

pillow_heif = pytest.importorskip("pillow_heif")


def heic(img: Image.Image) -> bytes:
    """``img`` as a HEIC file, made by pillow-heif (libheif and x265) as a phone makes one."""
    buf = io.BytesIO()
    pillow_heif.from_pillow(img).save(buf, quality=90)
    return buf.getvalue()


def with_size(data: bytes, width: int, height: int) -> bytes:
    """``data`` with its image-spatial-extents box (the size in the header) rewritten."""
    at = data.index(b"ispe") + 8  # the box type, then version and flags
    return data[:at] + width.to_bytes(4, "big") + height.to_bytes(4, "big") + data[at + 8:]


def test_a_heic_made_by_pillow_heif_is_read(tmp_path: Path) -> None:
    data = heic(Image.new("RGB", (64, 48), (10, 200, 30)))
    assert data[4:12] == b"ftypheic"
    path = tmp_path / "IMG_0001.HEIC"
    path.write_bytes(data)
    photo = load_photo(path)
    assert photo.format == "HEIF"
    assert photo.image.mode == "RGB"
    assert photo.image.size == (64, 48)
    red, green, blue = photo.image.getpixel((30, 20))  # type: ignore[misc]
    assert abs(red - 10) < 8 and abs(green - 200) < 8 and abs(blue - 30) < 8
    assert photo.sha256 == load_photo(data).sha256


def test_reading_a_heic_leaves_pillows_openers_alone() -> None:
    data = heic(Image.new("RGB", (16, 16)))
    decode(data)
    with pytest.raises(UnidentifiedImageError):  # no opener registered process-wide
        Image.open(io.BytesIO(data))


def test_a_heic_over_the_pixel_limit_is_refused_from_its_header() -> None:
    data = heic(Image.effect_noise((64, 64), 64).convert("RGB"))
    # The coded pixels (the mdat box, last) are garbage: were they decoded,
    # the error would say corrupt.
    mdat = data.index(b"mdat") + 4
    garbled = with_size(data[:mdat] + b"\x00" * (len(data) - mdat), 8000, 6000)
    limit = f"{FORMAT_MAX_PIXELS['HEIF']:,}"
    with pytest.raises(ImageError, match=f"8000x6000 pixels, more than the limit of {limit} "
                                         "for a HEIF"):
        decode(garbled)
    with pytest.raises(ImageError, match="more elongated than the limit"):
        decode(with_size(data, 4200, 100))
    with pytest.raises(ImageError, match="64x64 pixels, more than the limit of 1,000"):
        decode(data, max_pixels=1000)
    with pytest.raises(ImageError, match="corrupt or truncated"):  # within limits: decoded
        decode(with_size(garbled, 64, 64))


def test_a_truncated_or_garbled_heic_is_an_image_error() -> None:
    data = heic(Image.effect_noise((96, 96), 64).convert("RGB"))
    for bad in (data[:len(data) // 2], data[:40], data[:-20]):
        with pytest.raises(ImageError, match=r"corrupt or truncated|cannot be decoded"):
            decode(bad)


def test_without_the_extra_a_heic_names_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = heic(Image.new("RGB", (16, 16)))
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # as if not installed
    with pytest.raises(ImageError, match=r"pip install 'restyle\[heif\]'"):
        load_photo(data)


def test_an_avif_is_read_by_pillow() -> None:
    from PIL import features

    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF support")
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(buf, format="AVIF")
    photo = decode(buf.getvalue())
    assert (photo.format, photo.image.size) == ("AVIF", (40, 30))


def test_formats_are_sniffed_by_their_brands_and_listed_by_suffix() -> None:
    def ftyp(major: bytes, *compatible: bytes) -> bytes:
        body = major + b"\x00\x00\x00\x00" + b"".join(compatible)
        return (8 + len(body)).to_bytes(4, "big") + b"ftyp" + body + b"\x00" * 32

    assert sniff_format(ftyp(b"heic", b"mif1", b"heic")) == "HEIF"
    assert sniff_format(ftyp(b"mif1", b"heic")) == "HEIF"
    assert sniff_format(ftyp(b"avif", b"mif1")) == "AVIF"
    assert sniff_format(ftyp(b"mif1", b"miaf", b"avif")) == "AVIF"
    assert sniff_format(ftyp(b"isom", b"mp41")) is None  # an MP4 video
    assert {PHOTO_SUFFIXES[s] for s in (".heic", ".HEIC".lower(), ".heif", ".avif")} == {
        "HEIF", "AVIF"}

"""The one gate for image bytes: reading and decoding under the deadline and the
caps, JPEG decoding bounded before it starts, nothing about decoding shared
across images, and a photo components cannot change.

Real files, named pipes, sockets and threads throughout; every call that could
hang on old code runs on a daemon thread the test stops waiting for.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import socket
import threading
import time
import tracemalloc
import warnings
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from restyle import CompFlag, Engine, ImageError, Listing, Money, Opinion, Reranker, load_photo
from restyle._input.fetching import Fetcher
from restyle._input.imaging import (
    JPEG_MAX_COEFFICIENT_BYTES,
    JPEG_MAX_SCANS,
    JPEG_MAX_SEGMENTS,
    Photo,
    decode,
)
from restyle._input.jpeg import scan_end
from restyle.testing import FakeServer, Reply, image_bytes
from tests.fakes.components import ColorEncoder, ListMarketplace, ScriptedExpert

JPEG = image_bytes(size=(64, 48))
# Generous: the guarantee is "by the deadline", the margin only absorbs a loaded machine.
MARGIN = 1.0


def finishes(work: Callable[[], Any], within: float) -> tuple[bool, Any]:
    """Run ``work`` on a daemon thread; (whether it ended within ``within`` s,
    its result or exception). A call that hangs on old code fails the test
    instead of hanging it."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(work())
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(within)
    return (not thread.is_alive(), outcome[0] if outcome else None)


# -- JPEGs built to cost: progressive, many scans, many segments -------------------


def progressive(side: int, *, subsampling: int = 0, mode: str = "RGB") -> bytes:
    """A flat progressive JPEG: tiny on disk whatever its size."""
    buf = io.BytesIO()
    Image.new(mode, (side, side), 150 if mode == "L" else (120, 140, 160)).save(
        buf, "JPEG", progressive=True, quality=80, subsampling=subsampling)
    return buf.getvalue()


def scan_segments(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each scan: its SOS header and entropy-coded data."""
    scans, pos = [], 2
    while data[pos + 1] != 0xD9:
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        end = pos + 2 + length
        if data[pos + 1] == 0xDA:
            found = re.compile(rb"\xff[^\x00\xd0-\xd7]").search(data, end)
            assert found is not None
            end = found.start()
            scans.append((pos, end))
        pos = end
    return scans


def with_scans(data: bytes, total: int) -> bytes:
    """``data`` with its last scan (a refinement: a few bytes on a flat image)
    repeated until it has ``total`` scans. libjpeg decodes every one of them."""
    scans = scan_segments(data)
    start, end = scans[-1]
    return data[:end] + data[start:end] * (total - len(scans)) + data[end:]


def slow_jpeg() -> bytes:
    """Under every limit, but about a second of work: the most scans allowed
    over a 4600x4600 4:2:0 image (37 MiB of coefficients)."""
    return with_scans(progressive(4600, subsampling=2), JPEG_MAX_SCANS)


def scan_bomb() -> bytes:
    """4,000 scans of a 1024x1024 image in about 60 KB: seconds of CPU to decode."""
    return with_scans(progressive(1024), 4000)


SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7]")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([0x00, 0x12, 0xD0, 0xD7, 0xD8, 0xD9, 0xFF]), max_size=64),
       st.integers(0, 5), st.integers(0, 50_000))
@example(tail=[0xFF, 0x12], pos=0, padding=16 * 1024 - 1)  # across the first span's end
@example(tail=[0xFF, 0x00, 0xFF, 0xD9], pos=0, padding=16 * 1024 - 2)
@example(tail=[0xFF], pos=0, padding=48 * 1024)  # a last 0xFF ends nothing
def test_a_scans_end_is_found_as_the_markers_define_it(
    tail: list[int], pos: int, padding: int,
) -> None:
    """Entropy-coded data ends at a 0xFF that is no stuffed zero and no restart
    marker: the numpy search agrees with that definition wherever the end lies
    (in its first span, across spans, at the last byte, nowhere)."""
    data = b"\x55" * padding + bytes(tail)
    found = SCAN_END.search(data, pos)
    assert scan_end(data, pos) == (found.start() if found else None)


def test_a_normal_progressive_jpeg_is_decoded() -> None:
    data = progressive(640, subsampling=2)
    assert len(scan_segments(data)) == 10
    assert decode(data).image.size == (640, 640)


def test_a_progressive_jpeg_too_large_for_its_coefficients_is_refused_at_once() -> None:
    # 6324x6324 at 4:4:4: 470 KB on disk, about 240 MB of coefficient buffers in
    # libjpeg whatever the scale it decodes at, though under the 40 Mpx limit.
    data = progressive(6324)
    assert len(data) < 600_000
    for decode_as in (lambda: decode(data), lambda: decode(data, draft_side=224),
                      lambda: load_photo(data)):
        ended, outcome = finishes(decode_as, within=5)
        assert ended
        assert isinstance(outcome, ImageError)
        assert re.fullmatch(
            r"photo is a 6324x6324 progressive JPEG whose decoder would hold 2\d\d MiB of "
            rf"coefficients, more than restyle's limit of {JPEG_MAX_COEFFICIENT_BYTES >> 20} MiB",
            str(outcome)), outcome


def test_the_coefficient_limit_follows_the_chroma_subsampling() -> None:
    # 3600x3600 needs about 74 MiB at 4:4:4 but 37 MiB at 4:2:0.
    with pytest.raises(ImageError, match="3600x3600 progressive JPEG"):
        decode(progressive(3600, subsampling=0), draft_side=224)
    assert decode(progressive(3600, subsampling=2), draft_side=224).image.size == (450, 450)


def test_a_baseline_jpeg_of_the_same_size_is_still_accepted() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (6324, 6324), (120, 140, 160)).save(buf, "JPEG", quality=80)
    assert decode(buf.getvalue(), draft_side=224).image.size == (791, 791)


def test_a_jpeg_with_thousands_of_scans_is_refused_before_decoding() -> None:
    bomb = scan_bomb()
    assert len(bomb) < 100_000
    ended, outcome = finishes(lambda: decode(bomb), within=1.0)
    assert ended, "the scans were decoded"
    assert isinstance(outcome, ImageError)
    assert str(outcome) == (f"photo is a JPEG of more than {JPEG_MAX_SCANS} scans, restyle's "
                            "limit (a progressive JPEG has about 10)")


def test_a_jpeg_of_exactly_the_most_scans_is_decoded() -> None:
    data = with_scans(progressive(64), JPEG_MAX_SCANS)
    assert len(scan_segments(data)) == JPEG_MAX_SCANS
    assert decode(data).image.size == (64, 64)
    with pytest.raises(ImageError, match=f"more than {JPEG_MAX_SCANS} scans"):
        decode(with_scans(progressive(64), JPEG_MAX_SCANS + 1))


def test_a_jpeg_of_endless_marker_segments_is_refused() -> None:
    comments = b"\xff\xfe\x00\x04hi" * (JPEG_MAX_SEGMENTS + 1)
    data = JPEG[:2] + comments + JPEG[2:]
    with pytest.raises(ImageError, match=f"more than {JPEG_MAX_SEGMENTS:,} marker segments"):
        decode(data)
    assert decode(JPEG[:2] + b"\xff\xfe\x00\x04hi" * 50 + JPEG[2:]).image.size == (64, 48)


def test_marker_walk_skips_stuffed_bytes_restarts_and_fill() -> None:
    # Restart markers and stuffed 0xFF bytes inside the entropy-coded data, and
    # fill bytes before a marker, are not segments or scans.
    noisy = Image.effect_noise((256, 256), 120).convert("RGB")
    buf = io.BytesIO()
    noisy.save(buf, "JPEG", quality=95, restart_marker_blocks=1)
    data = buf.getvalue()
    assert b"\xff\x00" in data and b"\xff\xd0" in data
    at = data.index(b"\xff\xda")
    padded = data[:at] + b"\xff" * 5 + data[at:]
    assert decode(padded).image.size == (256, 256)


# -- reading: regular files only, under the deadline, capped while reading ----------


def test_a_named_pipe_without_a_writer_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    for read in (lambda: load_photo(fifo), lambda: load_photo(str(fifo)),
                 lambda: load_photo(fifo, deadline=time.monotonic() + 30)):
        ended, outcome = finishes(read, within=2)
        assert ended, "reading the pipe blocked"
        assert isinstance(outcome, ImageError)
        assert str(outcome) == f"photo {fifo} is a named pipe, not a regular file"


def test_devices_and_sockets_are_refused_without_reading(tmp_path: Path) -> None:
    ended, outcome = finishes(lambda: load_photo("/dev/zero"), within=2)
    assert ended and isinstance(outcome, ImageError)
    assert str(outcome) == "photo /dev/zero is a character device, not a regular file"
    path = tmp_path / "s.jpg"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen()
        ended, outcome = finishes(lambda: load_photo(path), within=2)
    assert ended and isinstance(outcome, ImageError)
    assert str(outcome).startswith(f"cannot read photo {path}")


def test_a_path_with_a_nul_byte_is_an_image_error(tmp_path: Path) -> None:
    for path in ("photo\0.jpg", Path("photo\0.jpg"), str(tmp_path) + "/x\0y.jpg"):
        with pytest.raises(ImageError, match="contains a NUL byte"):
            load_photo(path)


class _BytesPath(os.PathLike):  # type: ignore[type-arg,unused-ignore]
    def __fspath__(self) -> bytes:
        return b"/tmp/x\0.jpg"


def test_a_bytes_path_with_a_nul_byte_is_an_image_error() -> None:
    with pytest.raises(ImageError, match="contains a NUL byte"):
        load_photo(_BytesPath())  # type: ignore[arg-type,unused-ignore]


def test_a_file_that_is_too_large_is_refused_from_its_size(tmp_path: Path) -> None:
    path = tmp_path / "big.jpg"
    with path.open("wb") as fh:
        fh.truncate(64 * 1024 * 1024)  # sparse: nothing to read, but 64 MiB long
    with pytest.raises(ImageError, match=r"larger than restyle's limit of 30 MiB"):
        load_photo(path)


@pytest.mark.parametrize("kind", [bytearray, memoryview])
def test_a_large_buffer_is_refused_before_it_is_copied(kind: type) -> None:
    big = kind(bytearray(b"\xff\xd8\xff" + bytes(40 * 1024 * 1024)))
    tracemalloc.start()
    try:
        with pytest.raises(ImageError, match="larger than restyle's limit of 30 MiB"):
            load_photo(big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024, f"{peak:,} bytes allocated to refuse it"


def test_a_memoryview_of_wide_items_is_measured_in_bytes() -> None:
    import array

    wide = memoryview(array.array("q", bytes(8 * 200)))  # 200 items, 1,600 bytes
    with pytest.raises(ImageError, match="larger than restyle's limit of 1,000 bytes"):
        load_photo(wide, max_bytes=1000)


class _Trickle(io.RawIOBase):
    """A raw stream that hands out at most ``piece`` bytes a read, as pipes and
    sockets do; ``endless`` repeats its data forever."""

    def __init__(self, data: bytes, piece: int = 1000, endless: bool = False) -> None:
        self.data, self.piece, self.endless, self.pos, self.given = data, piece, endless, 0, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.endless and self.pos >= len(self.data):
            self.pos = 0
        chunk = self.data[self.pos:self.pos + min(self.piece, len(buffer))]
        buffer[:len(chunk)] = chunk
        self.pos += len(chunk)
        self.given += len(chunk)
        return len(chunk)


def test_a_file_object_is_read_to_its_end_not_to_its_first_short_read() -> None:
    data = image_bytes(size=(300, 200))
    assert len(data) > 1000
    photo = load_photo(_Trickle(data))  # type: ignore[arg-type]
    assert photo.sha256 == hashlib.sha256(data).hexdigest()


def test_a_file_object_that_never_ends_is_cut_at_the_byte_limit() -> None:
    stream = _Trickle(JPEG, piece=4096, endless=True)
    ended, outcome = finishes(lambda: load_photo(stream, max_bytes=100_000),  # type: ignore[arg-type]
                              within=5)
    assert ended and isinstance(outcome, ImageError)
    assert "larger than restyle's limit of 100,000 bytes" in str(outcome)
    assert stream.given <= 100_001


def test_a_file_object_whose_writer_stalls_ends_at_the_deadline() -> None:
    read_end, write_end = os.pipe()
    os.write(write_end, JPEG[:100])  # and then nothing, the pipe left open
    try:
        with os.fdopen(read_end, "rb") as stream:
            started = time.monotonic()
            ended, outcome = finishes(
                lambda: load_photo(stream, deadline=time.monotonic() + 0.5), within=10)
            took = time.monotonic() - started
            assert ended, "the read was waited for past the deadline"
            assert isinstance(outcome, ImageError)
            assert re.fullmatch(r"photo was not read and decoded within 0\.\d+ s", str(outcome))
            assert took < 0.5 + MARGIN
            os.close(write_end)  # the abandoned reader then ends
            write_end = -1
    finally:
        if write_end >= 0:
            os.close(write_end)


def test_a_slow_decode_ends_at_the_deadline() -> None:
    slow = slow_jpeg()
    calls: list[Callable[[], Photo]] = [
        lambda: load_photo(slow, deadline=time.monotonic() + 0.1),
        lambda: decode(slow, deadline=time.monotonic() + 0.1),
    ]
    for call in calls:
        started = time.monotonic()
        with pytest.raises(ImageError, match=r"photo was not decoded within 0\.\d+ s"):
            call()
        assert time.monotonic() - started < 0.1 + MARGIN
    with pytest.raises(ImageError, match="no time was left"):
        load_photo(JPEG, deadline=time.monotonic() - 1)


def test_without_a_deadline_a_photo_is_read_on_the_callers_thread(tmp_path: Path) -> None:
    path = tmp_path / "a.jpg"
    path.write_bytes(JPEG)
    before = threading.active_count()
    photo = load_photo(path)
    assert photo.source == str(path) and threading.active_count() == before
    assert load_photo(path, deadline=time.monotonic() + 5).sha256 == photo.sha256


# -- nothing shared across decodes ------------------------------------------------


def test_a_slow_decode_does_not_hold_up_a_small_one_in_another_thread() -> None:
    slow = slow_jpeg()
    started = threading.Event()
    slow_done: list[float] = []

    def decode_slowly() -> None:
        started.set()
        decode(slow)
        slow_done.append(time.monotonic())

    thread = threading.Thread(target=decode_slowly, daemon=True)
    thread.start()
    started.wait()
    began = time.monotonic()
    time.sleep(0.1)  # well inside the slow decode, which takes about a second
    small_done = []
    for _ in range(3):
        decode(JPEG)
        small_done.append(time.monotonic())
    thread.join(30)
    assert slow_done, "the slow decode failed"
    # On old code every decode took turns: the small ones ended with the slow one.
    assert small_done[-1] - began < (slow_done[0] - began) / 2


def test_decodes_wait_for_memory_room_only_until_their_deadline() -> None:
    from restyle._input.decoding import _Room
    from restyle._input.limits import DECODE_ROOM_BYTES

    room = _Room(100)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with room.held(80, None, "photo"):
            holding.set()
            release.wait(30)

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    holding.wait()
    with room.held(20, time.monotonic() + 5, "photo"):  # what is left fits at once
        pass
    started = time.monotonic()
    with pytest.raises(ImageError, match="other decodes held restyle's"), \
            room.held(50, time.monotonic() + 0.2, "photo"):
        pass
    assert time.monotonic() - started < 0.2 + MARGIN
    release.set()
    thread.join(5)
    with room.held(10**12, time.monotonic() + 1, "photo"):  # one image never waits for more
        pass
    assert DECODE_ROOM_BYTES >= 2 * 100 * 2**20  # room for two of the largest images at once


def hostile_png() -> bytes:
    """A PNG with two animation-control chunks and a zero frame count: Pillow
    warns about it, as it reads the header and after the pixels."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    raw = b"".join(b"\x00" + b"\x80\x40\x20" * 8 for _ in range(8))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
            + chunk(b"acTL", struct.pack(">II", 0, 0)) + chunk(b"acTL", struct.pack(">II", 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"acTL", struct.pack(">II", 0, 0))
            + chunk(b"IEND", b""))


def bad_exif_jpeg() -> bytes:
    """A JPEG whose EXIF points past its end: Pillow's EXIF parser warns."""
    exif = b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x01\x00\x12\x01\x03\x00\x40\x00\x00\x00" \
           b"\xff\xff\x00\x00\x00\x00\x00\x00"
    segment = b"\xff\xe1" + (len(exif) + 2).to_bytes(2, "big") + exif
    return JPEG[:2] + segment + JPEG[2:]


def test_no_pillow_warning_reaches_the_user_from_hostile_files_decoded_at_once() -> None:
    for data in (hostile_png(), bad_exif_jpeg()):
        with warnings.catch_warnings(record=True) as pillow_says:
            warnings.simplefilter("always")
            with Image.open(io.BytesIO(data)) as check:
                check.load()
                check.getexif()
        assert pillow_says, "Pillow no longer warns about this file"
    files = [hostile_png(), bad_exif_jpeg(), progressive(300), JPEG] * 4
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        threads = [threading.Thread(target=decode, args=(data,)) for data in files]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert decode(hostile_png()).image.getpixel((0, 0)) == (128, 64, 32)
        assert decode(bad_exif_jpeg()).image.size == (64, 48)
    assert [str(w.message) for w in caught] == []


# -- comps go through the same gate ------------------------------------------------


def test_a_scan_bomb_comp_costs_only_itself() -> None:
    good = [image_bytes(color, size=(64, 64)) for color in
            ((200, 30, 30), (30, 200, 30), (30, 30, 200))]
    routes = {"/bomb.jpg": Reply(body=scan_bomb())}
    # The good ones arrive while the bomb would still be decoding.
    routes |= {f"/good{i}.jpg": Reply(body=body, delay=0.3) for i, body in enumerate(good)}
    with FakeServer(routes=routes) as server:
        found = [(Listing(marketplace="m", listing_id=path.strip("/"), title="a jacket",
                          image_url=server.url(path),
                          price=Money(amount=Decimal("10"), currency="USD")), "full")
                 for path in routes]
        fetcher = Fetcher(trusted_networks=["127.0.0.1/32"])
        encoder = ColorEncoder()
        photo = encoder.encode_images([Image.new("RGB", (64, 64), (200, 30, 30))])[0]
        started = time.monotonic()
        comps = Reranker(fetcher=fetcher, cache=None).rerank(
            photo, found, encoder=encoder, deadline=time.monotonic() + 2.5).comps
        assert time.monotonic() - started < 2.5 + MARGIN
    by_id = {comp.listing.listing_id: comp for comp in comps}
    assert CompFlag.IMAGE_UNAVAILABLE in by_id["bomb.jpg"].flags
    for i in range(3):
        assert by_id[f"good{i}.jpg"].similarity is not None, by_id[f"good{i}.jpg"].flags


# -- the photo components are handed ---------------------------------------------


def test_a_photos_attributes_cannot_be_set() -> None:
    photo = load_photo(JPEG)
    for name, value in (("source", "/etc/passwd"), ("sha256", "0" * 64), ("image", None),
                        ("data", b""), ("format", "PNG"), ("other", 1)):
        with pytest.raises(AttributeError):
            setattr(photo, name, value)
    assert photo.source is None and photo.sha256 == hashlib.sha256(JPEG).hexdigest()


def test_drawing_on_the_photos_image_leaves_the_photo_as_it_was() -> None:
    photo = load_photo(image_bytes((200, 30, 30), size=(64, 48)))
    before = photo.image.tobytes()
    thumbnail = photo.info().thumbnail
    edits: list[Callable[[Image.Image], object]] = [
        lambda im: ImageDraw.Draw(im).rectangle((0, 0, 63, 47), fill=(0, 255, 0)),
        lambda im: im.putpixel((5, 5), (0, 255, 0)),
        lambda im: im.paste((0, 255, 0), (0, 0, 64, 48)),
        lambda im: im.frombytes(bytes(64 * 48 * 3)),
        lambda im: im.putdata([(0, 255, 0)] * (64 * 48)),
        lambda im: im.putalpha(10),
    ]
    for edit in edits:
        image = photo.image
        edit(image)
        assert image.tobytes() != before or image.mode != "RGB"  # the edit took, on a copy
        assert photo.image.tobytes() == before
    pixels = photo.image.load()
    assert pixels is not None
    with pytest.raises(ValueError, match="readonly"):
        pixels[0, 0] = (0, 255, 0)
    assert photo.image.tobytes() == before and photo.info().thumbnail == thumbnail


def test_handing_out_the_image_does_not_copy_the_pixels() -> None:
    photo = decode(image_bytes(size=(2000, 1500)))
    tracemalloc.start()
    try:
        for _ in range(20):
            assert photo.image.size == (2000, 1500)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


def test_an_expert_cannot_change_what_the_analysis_reports(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(image_bytes((200, 30, 30), size=(64, 64)))
    refused: list[str] = []

    def tamper(photo: Photo) -> Opinion:
        for name, value in (("source", "/etc/passwd"), ("sha256", "0" * 64)):
            try:
                setattr(photo, name, value)
            except AttributeError:
                refused.append(name)
        ImageDraw.Draw(photo.image).rectangle((0, 0, 63, 63), fill=(0, 0, 0))
        photo.image.paste((0, 0, 0), (0, 0, 64, 64))
        return Opinion(expert="vandal")

    engine = Engine(encoder=ColorEncoder(), experts=[ScriptedExpert("vandal", result=tamper)],
                    marketplaces=[ListMarketplace("m", [])], load_entrypoints=False)
    reported = engine.analyze(path, deadline=20).photo
    assert refused == ["source", "sha256"]
    untouched = load_photo(path)
    assert reported.source == str(path)
    assert reported.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert reported.thumbnail == untouched.info().thumbnail


@pytest.fixture(autouse=True)
def _no_thread_exceptions(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    escaped: list[threading.ExceptHookArgs] = []
    monkeypatch.setattr(threading, "excepthook", escaped.append)
    yield
    assert escaped == []

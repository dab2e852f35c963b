"""What restyle accepts of a photo: its formats, and the bounds on its bytes,
pixels and shape, and for JPEG on the work its decoder may be given. Each is
checked before any pixel is decoded (:mod:`restyle._input.decoding`).
"""

from __future__ import annotations

__all__ = [
    "DECODE_ROOM_BYTES",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_PIXELS",
    "FORMATS",
    "FORMAT_MAX_PIXELS",
    "FORMAT_NAMES",
    "JPEG_MAX_COEFFICIENT_BYTES",
    "JPEG_MAX_SCANS",
    "JPEG_MAX_SEGMENTS",
    "MAX_ASPECT_RATIO",
    "PHOTO_SUFFIXES",
    "WORKING_SIDE",
    "sniff_format",
]

#: Largest photo accepted, in pixels (width x height).
DEFAULT_MAX_PIXELS = 40_000_000
#: Lower limits for the formats Pillow can only decode at full size before
#: restyle reduces them: PNG costs about 4 bytes a pixel while it decodes,
#: WebP about 15 (libwebp's decoder holds several copies of the canvas), HEIF
#: and AVIF about 8 (libheif's or libavif's planes, then the RGB copy Pillow
#: takes; ``bench/memory.py``). These keep the memory one photo adds under
#: 100 MB; JPEG is reduced inside its decoder and is held only to
#: :data:`DEFAULT_MAX_PIXELS`. An iPhone's 12-megapixel HEIC fits; its
#: 48-megapixel "HEIF Max" photos are past every limit.
FORMAT_MAX_PIXELS = {"PNG": 24_000_000, "WEBP": 6_000_000,
                     "HEIF": 12_600_000, "AVIF": 12_600_000}
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

#: The formats restyle accepts, as :func:`sniff_format` names them. HEIF
#: (an iPhone's HEIC) needs the ``heif`` extra (pillow-heif); AVIF needs a
#: Pillow built with it (its wheels are, from 11.3 on).
FORMATS = ("JPEG", "PNG", "WEBP", "HEIF", "AVIF")
#: The formats in words, for messages.
FORMAT_NAMES = "JPEG, PNG, WebP, HEIC/HEIF or AVIF"
#: The file name suffixes of the photos a folder holds, by format.
PHOTO_SUFFIXES = {
    ".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP",
    ".heic": "HEIF", ".heif": "HEIF", ".hif": "HEIF", ".avif": "AVIF",
}

# An ISO base media file's first box is ``ftyp``, its major brand (then its
# compatible brands) naming what it holds.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis",
                          b"hevm", b"hevs", b"mif1", b"msf1"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})


def sniff_format(data: bytes | bytearray | memoryview) -> str | None:
    """The image format named by ``data``'s magic bytes, if it is one restyle accepts."""
    head = bytes(data[:12])
    if head[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if head[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp":
        return _brand_format(bytes(data[:64]))
    return None


def _brand_format(head: bytes) -> str | None:
    """HEIF or AVIF by the ``ftyp`` box's brands: the major brand, then the
    compatible ones (a ``mif1`` file names its codec there)."""
    size = int.from_bytes(head[:4], "big")
    brands = [head[8:12]] + [head[i:i + 4] for i in range(16, min(size, len(head)) - 3, 4)]
    if any(brand in _AVIF_BRANDS for brand in brands):
        return "AVIF"
    if any(brand in _HEIF_BRANDS for brand in brands):
        return "HEIF"
    return None

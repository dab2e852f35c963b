"""Loading and decoding listings' images: local files read inside their
folder, URLs fetched through the guarded fetcher, each decoded no larger
than the encoder needs; an image the catalog holds already is not loaded
again."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

from restyle._errors import FetchError, ImageError
from restyle._ingestion.rejections import clip
from restyle._ingestion.rows import (
    CurrentImages,
    DecodedListing,
    ListingLimits,
    ListingRow,
    LoadedImage,
    Refused,
    Rejection,
    StoredAlready,
)
from restyle._input.confined import Unsafe, open_regular, read_capped
from restyle._input.imaging import decode

if TYPE_CHECKING:
    from restyle._input.fetching import Fetcher

__all__ = ["DRAFT_SIDE", "decode_listing_image", "draft_side", "load_images", "load_unstored"]

# Images are decoded at reduced scale as long as both sides stay above this,
# as comp images are when re-ranking: twice the input of common CLIP models.
DRAFT_SIDE = 448


def load_images(
    rows: Sequence[ListingRow],
    *,
    fetcher: Fetcher | None = None,
    limits: ListingLimits | None = None,
) -> list[LoadedImage | Rejection]:
    """The bytes of each row's image, in row order: local files are read, URLs
    fetched concurrently through ``fetcher`` (with its limits and guards)."""
    limits = limits or ListingLimits()
    urls = [row.image for row in rows if row.image_is_url]
    fetched: dict[str, bytes | FetchError] = {}
    if urls:
        if fetcher is None:
            from restyle._input.fetching import Fetcher

            fetcher = Fetcher()
        fetched = fetcher.fetch_many(urls)
    out: list[LoadedImage | Rejection] = []
    for row in rows:
        try:
            if row.image_is_url:
                result = fetched[row.image]
                if isinstance(result, FetchError):
                    raise Refused(f"image could not be fetched: {result}")
                data = result
                if len(data) > limits.image_bytes:
                    raise _too_large(row, limits)
            else:
                data = _read_local(row, limits)
        except Refused as exc:
            out.append(Rejection(row=row.number, reason=str(exc), data=row.preview))
            continue
        out.append(LoadedImage(row=row, data=data, sha256=hashlib.sha256(data).hexdigest()))
    return out


def _read_local(row: ListingRow, limits: ListingLimits) -> bytes:
    shown = clip(row.image_as_written, 200)
    # The path was resolved (links followed) and confined when validated: refuse
    # a link swapped in since, and never block on a FIFO or device.
    try:
        with open_regular(row.image) as handle:
            return read_capped(handle, limits.image_bytes)
    except Unsafe as exc:
        if exc.problem == "too large":
            raise _too_large(row, limits) from exc
        if exc.problem == "unreadable":
            raise Refused(f"image {shown} cannot be read: {exc.reason}") from exc
        raise Refused(f"image not found: {shown}") from exc


def _too_large(row: ListingRow, limits: ListingLimits) -> Refused:
    return Refused(f"image {clip(row.image_as_written, 200)} is larger than the "
                   f"{limits.image_bytes // (1024 * 1024)} MiB limit")


def draft_side(encoder: object) -> int:
    """The side a build decodes its images down to for ``encoder``: the side of
    the square its model sees when the encoder can tell without loading the
    model (``input_side``), else :data:`DRAFT_SIDE`."""
    try:
        side = getattr(encoder, "input_side", None)
    except Exception:  # a plugin's property that fails costs the speed-up, not the work
        side = None
    if isinstance(side, int) and not isinstance(side, bool) and 32 <= side <= 4096:
        return side
    return DRAFT_SIDE


def decode_listing_image(
    loaded: LoadedImage, *, limits: ListingLimits | None = None, side: int = DRAFT_SIDE
) -> DecodedListing | Rejection:
    """Decode a row's image safely, reduced as far as both sides stay at least
    ``side`` pixels (see :func:`draft_side`): a JPEG inside its decoder, at 1/2,
    1/4 or 1/8 scale, much faster than decoding it whole; PNG and WebP by a
    whole factor after decoding. What the encoder's own resize would discard
    is never decoded."""
    limits = limits or ListingLimits()
    row = loaded.row
    try:
        # No source name for URLs: they may carry tokens into the message.
        name = None if row.image_is_url else clip(row.image_as_written, 200)
        photo = decode(loaded.data, max_pixels=limits.image_pixels, source=name,
                       draft_side=side, sha256=loaded.sha256)
    except ImageError as exc:
        return Rejection(row=row.number, reason=str(exc), data=row.preview)
    image = photo.image
    factor = min(image.size) // side
    if factor >= 2:
        # PNG and WebP have no draft mode: shrink in one cheap step instead.
        image = image.reduce(factor)
    return DecodedListing(row=row, sha256=loaded.sha256, image=image)


def load_unstored(
    rows: Sequence[ListingRow], *, current: CurrentImages, fetcher: Fetcher | None,
    limits: ListingLimits, side: int,
) -> list[DecodedListing | Rejection | StoredAlready]:
    """Each row's image loaded and decoded, in row order, unless the catalog
    holds the listing with the same image: a URL already stored is not fetched
    again, and an image whose bytes hash as stored is not decoded."""
    known = current([row.listing_id for row in rows]) if rows else {}
    out: list[DecodedListing | Rejection | StoredAlready | None] = [None] * len(rows)
    to_load: list[int] = []
    for i, row in enumerate(rows):
        image, _ = known.get(row.listing_id, (None, None))
        if row.image_is_url and image == row.image:
            out[i] = StoredAlready(row, None)
        else:
            to_load.append(i)
    loaded = load_images([rows[i] for i in to_load], fetcher=fetcher, limits=limits)
    for i, result in zip(to_load, loaded, strict=True):
        if isinstance(result, Rejection):
            out[i] = result
        elif known.get(result.row.listing_id, (None, None))[1] == result.sha256:
            out[i] = StoredAlready(result.row, result.sha256)
        else:
            out[i] = decode_listing_image(result, limits=limits, side=side)
    return [item for item in out if item is not None]


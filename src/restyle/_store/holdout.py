"""Holding listings out of one analysis: the local catalog as the components
see it while some of its listings are hidden, without rebuilding anything.

A backtest prices each item with the item itself (and its copies) held out,
so that neither the ``catalog`` expert nor the ``catalog`` marketplace can
find the answer in the catalog. A copy is a listing with the same image
bytes, or a near-duplicate (:func:`near_duplicates`): the same picture
recompressed, resized or re-saved, which hashes differently but leaks the
answer just the same.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from restyle._errors import RestyleError
from restyle._types import Listing, Query

if TYPE_CHECKING:
    from restyle._store.catalog import Catalog

__all__ = [
    "NEAR_DUPLICATE_BITS",
    "NEAR_DUPLICATE_CANDIDATES",
    "NEAR_DUPLICATE_COSINE",
    "NEAR_DUPLICATE_LEVELS",
    "Fingerprint",
    "HeldOutCatalog",
    "catalog_ids",
    "difference_hash",
    "fingerprint",
    "near_duplicates",
    "same_picture",
]

logger = logging.getLogger("restyle.backtest")

#: A catalog listing is a near-duplicate of a photo when the vector the
#: catalog stores for its image is at least this alike (cosine) to the
#: photo's: a recompressed or resized copy stays well above it with any real
#: model, and it keeps the images to compare few...
NEAR_DUPLICATE_COSINE = 0.9
#: ... among the photo's nearest listings, at most this many...
NEAR_DUPLICATE_CANDIDATES = 20
#: ... and its image is the same picture (:func:`same_picture`): its
#: :func:`difference_hash` differs from the photo's in at most this many of
#: 64 bits (the same shapes)...
NEAR_DUPLICATE_BITS = 10
#: ... and their 8 x 8 colour thumbnails differ by at most this many levels
#: (of 255) on average (the same colours: recompressing or resizing moves
#: them by about 1, the same drawing recoloured by 5 or more). Another photo
#: of a look-alike item, which the vectors alone cannot tell apart, fails one
#: or the other.
NEAR_DUPLICATE_LEVELS = 4.0
# Neighbouring cells must differ by more than this (of 255) to set a bit, so
# that recompression noise in flat areas flips none.
_HASH_MARGIN = 2


def catalog_ids(keys: Collection[str], marketplace: str) -> frozenset[str]:
    """The listing ids among ``keys`` (``marketplace:listing_id``) of ``marketplace``."""
    prefix = f"{marketplace}:"
    return frozenset(key[len(prefix):] for key in keys if key.startswith(prefix))


def difference_hash(image: Image.Image) -> int:
    """A 64-bit perceptual hash of ``image`` (dHash): its grey levels averaged
    into 9 x 8 cells, one bit per pair of neighbouring cells in a row, set
    where the right one is brighter (by more than 2 levels). Recompressing,
    resizing or re-saving a picture changes few bits; another picture, many."""
    cells = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.BOX), np.int16)
    bits = (cells[:, 1:] - cells[:, :-1] > _HASH_MARGIN).ravel()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


#: What :func:`same_picture` compares: the difference hash and the 8 x 8 colour thumbnail.
Fingerprint = tuple[int, np.ndarray]


def fingerprint(image: Image.Image) -> Fingerprint:
    """``image``'s :func:`difference_hash` and its 8 x 8 RGB thumbnail (each
    cell the mean of its pixels)."""
    colours = np.asarray(image.convert("RGB").resize((8, 8), Image.Resampling.BOX), np.int16)
    return difference_hash(image), colours


def same_picture(a: Fingerprint, b: Fingerprint) -> bool:
    """Whether two fingerprints are of one picture, whatever its bytes: hashes
    within :data:`NEAR_DUPLICATE_BITS` bits, thumbnails within
    :data:`NEAR_DUPLICATE_LEVELS` levels."""
    return ((a[0] ^ b[0]).bit_count() <= NEAR_DUPLICATE_BITS
            and float(np.abs(a[1] - b[1]).mean()) <= NEAR_DUPLICATE_LEVELS)


def near_duplicates(catalog: Catalog, vector: np.ndarray, photo: Fingerprint,
                    load: Callable[[str], Image.Image]) -> list[str]:
    """The ids of the catalog listings whose image is the photo's picture
    again, though not in the same bytes: among the
    :data:`NEAR_DUPLICATE_CANDIDATES` listings nearest to the photo's
    ``vector``, those the catalog stores a vector for at cosine
    :data:`NEAR_DUPLICATE_COSINE` or more whose image (read with ``load``, from
    the listing's image URL) is :func:`same_picture` as the photo's
    :func:`fingerprint`. A listing whose image cannot be read is not one (it
    cannot be compared)."""
    found: list[str] = []
    for listing, score in catalog.search_vector(vector, limit=NEAR_DUPLICATE_CANDIDATES):
        if score < NEAR_DUPLICATE_COSINE or not listing.image_url:
            continue
        try:
            image = load(listing.image_url)
        except RestyleError as exc:
            logger.info("near-duplicate check skipped %s: %s", listing.key, exc)
            continue
        if same_picture(fingerprint(image), photo):
            found.append(listing.listing_id)
    return found


class HeldOutCatalog:
    """A read-only :class:`~restyle.CatalogView` of a catalog whose searches and
    lookups never return the listings ``hidden`` (by listing id; none for the
    view every component is handed, so no component reaches the Catalog's
    build or remove).

    Searches ask the catalog for as many more listings as are hidden, so that
    a search still returns ``limit`` listings when the catalog has them.
    """

    def __init__(self, catalog: Catalog, hidden: Collection[str]) -> None:
        self._catalog = catalog
        self._hidden = frozenset(hidden)

    def __repr__(self) -> str:
        return f"<HeldOutCatalog {self._catalog!r} hiding {len(self._hidden)}>"

    @property
    def model_id(self) -> str:
        return self._catalog.model_id

    def listing(self, item_id: int) -> Listing | None:
        listing = self._catalog.listing(item_id)
        return None if listing is None or listing.listing_id in self._hidden else listing

    def search_vector(
        self, vector: np.ndarray, query: Query | None = None, *, limit: int = 20
    ) -> list[tuple[Listing, float]]:
        found = self._catalog.search_vector(vector, query, limit=limit + len(self._hidden))
        return [(item, score) for item, score in found
                if item.listing_id not in self._hidden][:limit]

    def search_text(self, query: Query) -> list[Listing]:
        found = self._catalog.search_text(replace(query, limit=query.limit + len(self._hidden)))
        return [item for item in found if item.listing_id not in self._hidden][:query.limit]

    def vectors_for(self, listing_ids: Sequence[str]) -> dict[str, np.ndarray]:
        return self._catalog.vectors_for([i for i in listing_ids if i not in self._hidden])

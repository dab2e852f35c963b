"""Contract checks a plugin author runs against their own components."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

from restyle._components import Expert, Marketplace
from restyle._imaging import Photo, load_photo
from restyle._types import Listing, Opinion, Query

__all__ = ["check_expert", "check_marketplace", "sample_image"]


def sample_image(color: tuple[int, int, int] = (40, 80, 170), size: int = 128) -> Image.Image:
    """A small drawn photo of a jacket-like shape, the same on every call."""
    img = Image.new("RGB", (size, size), (225, 225, 220))
    s = size / 256
    points = [(70, 50), (110, 40), (146, 40), (186, 50), (220, 120), (195, 130), (180, 100),
              (180, 215), (76, 215), (76, 100), (61, 130), (36, 120)]
    ImageDraw.Draw(img).polygon([(x * s, y * s) for x, y in points], fill=color)
    return img


def check_expert(expert: Expert, photo: Photo | Image.Image | None = None) -> Opinion:
    """Run ``expert`` on a photo and check that it keeps the Expert contract.

    Returns the Opinion so the caller can check what the expert saw.
    """
    if not isinstance(expert, Expert):
        raise AssertionError(f"{expert!r} is not a restyle.Expert")
    if not expert.name or expert.name != expert.name.strip().lower():
        raise AssertionError(f"expert name {expert.name!r} must be a lower-case identifier")
    if not expert.timeout > 0:
        raise AssertionError(f"expert {expert.name!r} needs a positive timeout")
    opinion = expert.examine(load_photo(photo if photo is not None else sample_image()))
    if not isinstance(opinion, Opinion):
        raise AssertionError(f"examine() returned {type(opinion).__name__}, not an Opinion")
    if opinion.expert != expert.name:
        raise AssertionError(f"Opinion.expert is {opinion.expert!r}, expected {expert.name!r}")
    return opinion


def check_marketplace(marketplace: Marketplace, query: Query | None = None) -> Sequence[Listing]:
    """Search ``marketplace`` and check the Marketplace contract on what comes back."""
    if not isinstance(marketplace, Marketplace):
        raise AssertionError(f"{marketplace!r} is not a restyle.Marketplace")
    query = query or Query(text="blue denim jacket", category="jacket", limit=5)
    listings = marketplace.search(query)
    if len(listings) > query.limit:
        raise AssertionError(f"search returned {len(listings)} listings, limit {query.limit}")
    for listing in listings:
        if not isinstance(listing, Listing):
            raise AssertionError(f"search returned {type(listing).__name__}, not a Listing")
        if listing.marketplace != marketplace.name:
            raise AssertionError(
                f"Listing.marketplace is {listing.marketplace!r}, expected {marketplace.name!r}"
            )
    return listings

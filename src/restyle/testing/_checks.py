"""Contract checks a plugin author runs against their own components.

Each check applies the very rules restyle applies: the registry's (an
instance of the right kind, a lower-case ``name``, a positive ``timeout``) and
the Engine's checks of what a component hands back (:mod:`restyle._plugin.contracts`),
calling it under its ``timeout`` as the Engine does. What the Engine would
refuse fails the check; so does what it would only repair with a warning (too
many or repeated listings, vectors not of unit length), since that is a bug
worth fixing. Every failure is an AssertionError with the contract's message.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
from PIL import Image, ImageDraw

from restyle._errors import PluginContractError
from restyle._input.imaging import Photo, load_photo
from restyle._pipeline import budget as _budget
from restyle._plugin.components import (
    Component,
    Encoder,
    Expert,
    Marketplace,
    Synthesizer,
    check_component,
)
from restyle._plugin.contracts import (
    check_identification,
    check_image_urls,
    check_known_vectors,
    check_listings,
    check_opinion,
    check_vectors,
)
from restyle._types import Identification, Listing, Observation, Opinion, Query

__all__ = [
    "check_encoder",
    "check_expert",
    "check_marketplace",
    "check_synthesizer",
    "sample_image",
]

C = TypeVar("C", bound=Component)
T = TypeVar("T")


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

    Returns the Opinion so the caller can check what the expert saw. An
    exception raised by ``examine`` propagates as it is.
    """
    _component(expert, Expert)  # type: ignore[type-abstract]
    value = _timed(expert, "examine()", expert.examine,
                   load_photo(photo if photo is not None else sample_image()))
    opinion = _contract(check_opinion, expert, value)
    if opinion.expert != expert.name:
        # The Engine overwrites it; a different name here is a slip in the expert.
        raise AssertionError(
            f"expert {expert.name} returned an Opinion whose expert is {opinion.expert!r}, "
            f"expected {expert.name!r}"
        )
    return opinion


def check_synthesizer(
    synthesizer: Synthesizer,
    opinions: Sequence[Opinion] | None = None,
    photo: Photo | Image.Image | None = None,
) -> Identification:
    """Merge ``opinions`` (by default two that agree on a brand and one that
    failed, as the Engine passes failed ones too) and check the Synthesizer
    contract on the result, which is returned."""
    _component(synthesizer, Synthesizer)  # type: ignore[type-abstract]
    if opinions is None:
        opinions = _sample_opinions()
    value = synthesizer.synthesize(
        list(opinions), photo=load_photo(photo if photo is not None else sample_image())
    )
    return _contract(check_identification, synthesizer, value)


def check_marketplace(
    marketplace: Marketplace, query: Query | None = None, *, encoder: Encoder | None = None
) -> list[Listing]:
    """Search ``marketplace`` and check the Marketplace contract on what comes back.

    Listings are checked as the Engine checks them (Listings only, at most
    ``query.limit``, each id once, image URLs that are strings) and must name
    this marketplace. An ``image_url`` must be http(s), which the Engine
    downloads, unless the marketplace's ``image_embeddings`` gives that
    listing's vector: pass the ``encoder`` your marketplace knows vectors for
    to check those vectors too. Returns the listings.
    """
    _component(marketplace, Marketplace)  # type: ignore[type-abstract]
    query = query or Query(text="blue denim jacket", category="jacket", limit=5)
    answer = _timed(marketplace, "search()", marketplace.search, query)
    warnings: list[str] = []
    listings = _contract(check_listings, marketplace, answer, limit=query.limit,
                         warnings=warnings)
    _no_warnings(warnings)
    for listing in listings:
        if listing.marketplace != marketplace.name:
            raise AssertionError(
                f"marketplace {marketplace.name} returned a Listing whose marketplace is "
                f"{listing.marketplace!r}, expected {marketplace.name!r}"
            )
    known: dict[str, np.ndarray] = {}
    if encoder is not None and listings:
        vectors = _timed(marketplace, "image_embeddings()", marketplace.image_embeddings,
                         listings, model_id=encoder.model_id)
        known = _contract(check_known_vectors, marketplace, vectors,
                          keys=[item.key for item in listings], dim=encoder.dim,
                          warnings=warnings)
        _no_warnings(warnings)
    check_image_urls(marketplace, listings, known=known, warnings=warnings)
    _no_warnings(warnings)
    return listings


def check_encoder(
    encoder: Encoder,
    images: Sequence[Image.Image] | None = None,
    texts: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Encode ``images`` and ``texts`` (two of each by default) and check the
    Encoder contract: a non-empty string ``model_id``, a positive ``dim``, and
    one finite float row of length ``dim`` and unit length per input.
    Returns the image vectors and the text vectors."""
    _component(encoder, Encoder)  # type: ignore[type-abstract]
    model_id = encoder.model_id
    if not isinstance(model_id, str) or not model_id:
        raise AssertionError(f"encoder {encoder.name} has model_id {model_id!r}, "
                             "not a non-empty string")
    dim = encoder.dim
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise AssertionError(f"encoder {encoder.name} has dim {dim!r}, not a positive integer")
    images = list(images) if images is not None else [sample_image(),
                                                      sample_image(color=(190, 40, 40))]
    texts = list(texts) if texts is not None else ["blue denim jacket", "red leather handbag"]
    warnings: list[str] = []
    image_vectors = _contract(check_vectors, encoder, encoder.encode_images(images),
                              count=len(images), dim=dim, warnings=warnings)
    text_vectors = _contract(check_vectors, encoder, encoder.encode_texts(texts),
                             count=len(texts), dim=dim, warnings=warnings)
    _no_warnings(warnings)
    return image_vectors, text_vectors


def _component(component: object, base: type[C]) -> C:
    try:
        return check_component(component, base)
    except (TypeError, ValueError) as exc:
        raise AssertionError(str(exc)) from None


def _contract(check: Callable[..., T], component: Component, value: object,
              **kwargs: object) -> T:
    try:
        return check(component, value, **kwargs)
    except PluginContractError as exc:
        raise AssertionError(str(exc)) from None


def _no_warnings(warnings: list[str]) -> None:
    if warnings:
        raise AssertionError("; ".join(warnings))


def _timed(component: Component, what: str, fn: Callable[..., T], *args: Any,
           **kwargs: Any) -> T:
    """``fn(...)`` under the component's timeout, as the Engine calls it."""
    timeout = _budget.timeout_of(component)
    try:
        value: T = _budget.call(component, f"{component.kind} {component.name}", fn, *args,
                                deadline=time.monotonic() + timeout, **kwargs)
        return value
    except _budget.Overdue:
        raise AssertionError(
            f"{component.kind} {component.name} gave no answer from {what} within its timeout "
            f"of {timeout:g} s; the Engine abandons such calls"
        ) from None


def _sample_opinions() -> list[Opinion]:
    return [
        Opinion(expert="first", entities=(Observation(text="Acme", score=0.9, facet="brand"),),
                labels=(Observation(text="jacket", score=0.8, facet="category"),)),
        Opinion(expert="second", entities=(Observation(text="Acme", score=0.7, facet="brand"),)),
        Opinion.failure("third", "RuntimeError: no answer"),
    ]

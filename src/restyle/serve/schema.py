"""The public response schema of restyle's web answers, version 1: what a
client gets back for an analysed item, and every error's shape.

``Analysis.to_dict()`` is everything restyle knows, for the server: it carries
file paths on the server (a local catalog's images, the photo's source), a
thumbnail of the upload and the experts' error messages. A client gets
:class:`PublicAnalysis` instead, made by :func:`public_analysis`: the
identification with its evidence, the price and the comps, with only http(s)
links, and the listing draft when one was asked for.

``restyle serve`` (:mod:`restyle.serve`) answers with it under ``/v1/``;
the FastAPI example uses :class:`PublicAnalysis` as its ``response_model``
and the Django example returns ``public_analysis(analysis).model_dump(mode="json")``.
``examples/analysis-response.schema.json`` is its JSON schema. A change a
client could trip on (a field removed, renamed or retyped) is a new version,
served beside this one under ``/v2/``; fields are only ever added to a version.

An error is :class:`PublicError` everywhere, ``{"error": {"code": ...,
"message": ...}}``, its code one of :data:`ERRORS`
(``examples/error-response.schema.json``).

Needs pydantic only (the ``serve`` extra installs it), not FastAPI.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field

from restyle import (
    ITEM_MAX_PHOTOS,
    Analysis,
    Condition,
    Item,
    ListingDraft,
    PhotoRole,
    PriceBasis,
    PriceStatus,
    PriceStrategy,
)

__all__ = [
    "ERRORS",
    "FORM_BYTES",
    "ITEM_PHOTOS_BYTES",
    "PHOTO_BYTES",
    "SCHEMA_VERSION",
    "PublicAnalysis",
    "PublicAttribute",
    "PublicComp",
    "PublicDraft",
    "PublicError",
    "PublicEvidence",
    "PublicIdentification",
    "PublicMoney",
    "PublicPhoto",
    "PublicPrice",
    "documented_errors",
    "draft_strategy",
    "error_body",
    "error_schema",
    "item_from_uploads",
    "public_analysis",
    "schema",
]

#: The version of these models; the service's routes are under ``/v1/``.
SCHEMA_VERSION = 1

#: Largest photo accepted, in bytes.
PHOTO_BYTES = 10 * 1024 * 1024
#: An item's photos together: at most this many bytes.
ITEM_PHOTOS_BYTES = 3 * PHOTO_BYTES
#: What a request body may hold besides the photos: the multipart form around them.
FORM_BYTES = 64 * 1024

#: Every error a client can get: code -> (HTTP status, message). The messages
#: are fixed: what went wrong inside goes to the server's log.
ERRORS: dict[str, tuple[int, str]] = {
    "no_image": (400, "No image was uploaded: send the photo as the multipart field 'image' "
                      "(repeat the field for several photos of one item)."),
    "too_many_photos": (400, "An item has at most 12 photos."),
    "bad_roles": (400, "'roles' must be one role per photo, separated by commas: whole, tag, "
                       "label, detail or flaw (or empty where unknown)."),
    "bad_draft": (400, "'draft' must be quick, market or patient."),
    "unreadable_image": (400, "The upload is not a JPEG, PNG, WebP, HEIC or AVIF photo we "
                              "can read."),
    "method_not_allowed": (405, "Only POST is allowed here."),
    "too_large": (413, "A photo is larger than 10 MB, or the photos are larger than 30 MB in "
                       "all."),
    "invalid_request": (422, "The request is not a multipart form with an 'image' file."),
    "unavailable": (503, "The analysis is unavailable."),
    # The service's own (restyle serve); the examples answer none of these.
    "unauthorized": (401, "This service wants its bearer token: "
                          "'Authorization: Bearer TOKEN'."),
    "not_found": (404, "There is nothing here."),
    "busy": (429, "Too many requests are waiting: try again after Retry-After seconds."),
    "warming_up": (503, "The service is still loading its model: try again after "
                         "Retry-After seconds."),
    "shutting_down": (503, "The service is shutting down: try again after Retry-After "
                           "seconds."),
    "timeout": (504, "The analysis did not finish within the request's deadline."),
}


class PublicMoney(BaseModel):
    amount: str = Field(description="A decimal number as a string, e.g. '24.99'.")
    currency: str = Field(description="ISO 4217 code, e.g. 'USD'.")


class PublicAttribute(BaseModel):
    name: str = Field(description="What the attribute is: 'color', 'material', ...")
    value: str
    confidence: float = Field(ge=0, le=1)


class PublicEvidence(BaseModel):
    field: str = Field(description="What it supports: 'brand', 'category', 'product_name', "
                                   "or an attribute's name.")
    value: str
    expert: str = Field(description="Which expert saw it.")
    score: float = Field(ge=0, le=1)
    photo: int | None = Field(description="Which photo showed it (its index), or null.")


class PublicIdentification(BaseModel):
    brand: str | None
    product_name: str | None
    category: str | None
    attributes: list[PublicAttribute]
    confidence: float = Field(ge=0, le=1)
    summary: str
    suggested_photos: list[str] = Field(
        description="Other photos that would make the identification surer.")
    evidence: list[PublicEvidence] = Field(
        default_factory=list, description="Which expert supported each value, how strongly.")


class PublicPrice(BaseModel):
    status: PriceStatus = Field(description="'ok', or 'not_enough_data' (amounts are then null).")
    basis: PriceBasis | None = Field(
        description="What the estimate rests on: 'sold' (prices items sold for), 'asking' "
                    "(asking prices only) or 'mixed' (too few sold, mixed with asking "
                    "prices); null without an estimate.")
    currency: str | None
    estimate: str | None = Field(description="A decimal number as a string.")
    low: str | None
    high: str | None
    comps_used: int = Field(description="How many comps the estimate rests on.")
    minimum_comps: int = Field(description="How many comps an estimate needs.")


class PublicComp(BaseModel):
    marketplace: str
    listing_id: str
    title: str
    price: PublicMoney | None
    condition: Condition
    sold: bool | None
    url: str | None = Field(description="The listing's page: an http(s) URL, or null.")
    image_url: str | None = Field(
        description="The listing's photo: an http(s) URL, or null (for instance when the "
                    "photo is a file on the server, as a local catalog's are).")
    similarity: float | None = Field(
        description="How much the listing's photo looks like the upload, or null when its "
                    "photo could not be used.")
    score: float = Field(description="What orders the comps, best first.")


class PublicPhoto(BaseModel):
    index: int = Field(description="The photo's place among the uploads, from 0.")
    role: PhotoRole | None = Field(
        description="What it shows: 'whole', 'tag', 'label', 'detail' or 'flaw'.")
    role_score: float | None = Field(
        description="How sure the role is when it was found, not given (0 to 1).")


class PublicErrorDetail(BaseModel):
    code: str = Field(description="What went wrong, for programs: " + ", ".join(ERRORS) + ".")
    message: str = Field(description="What went wrong, in words, for people.")


class PublicError(BaseModel):
    """The response to a request that could not be analysed."""

    error: PublicErrorDetail


def documented_errors(*codes: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` entries of the errors ``codes``, one a status
    (for a FastAPI route's ``responses=``)."""
    entries: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        status, message = ERRORS[code]
        entry = entries.setdefault(status, {"model": PublicError, "description": ""})
        entry["description"] = " / ".join(filter(None, [entry["description"],
                                                        f"{code}: {message}"]))
    return entries


def error_body(code: str) -> tuple[int, dict[str, object]]:
    """The HTTP status and JSON body of the error ``code`` (one of :data:`ERRORS`)."""
    status, message = ERRORS[code]
    return status, PublicError(error=PublicErrorDetail(code=code, message=message)).model_dump()


class PublicDraft(BaseModel):
    """A listing draft of the item (docs/listing.md)."""

    title: str = Field(description="At most 80 characters, only words the evidence supports.")
    category_id: str | None = Field(description="eBay's leaf category, when one was chosen.")
    category_name: str | None
    item_specifics: dict[str, list[str]]
    condition: Condition
    condition_id: str | None = Field(description="eBay's condition id.")
    condition_description: str
    price: PublicMoney | None = Field(description="The asking price; null without an estimate.")
    price_strategy: PriceStrategy
    description: str = Field(description="Simple HTML: p, ul, li and b only, every text escaped.")
    problems: list[str] = Field(description="What to settle before posting.")


class PublicAnalysis(BaseModel):
    """The response to an uploaded photo."""

    identification: PublicIdentification
    price: PublicPrice
    comps: list[PublicComp] = Field(description="Comparable listings, most alike first.")
    photos: list[PublicPhoto] = Field(
        description="Every photo of the item, in the order uploaded, with what it shows; "
                    "a photo that could not be read is missing (see warnings).")
    failed_experts: list[str] = Field(
        description="Experts that failed for this photo; their errors stay in the server's log.")
    draft: PublicDraft | None = Field(
        default=None, description="The listing draft, when the request asked for one ('draft').")


def _link(url: str | None) -> str | None:
    """``url`` when a client can follow it (http or https to a host), else None."""
    if not url:
        return None
    parts = urlsplit(url)
    return url if parts.scheme in ("http", "https") and parts.hostname else None


def _amount(value: object) -> str | None:
    return None if value is None else str(value)


def public_draft(draft: ListingDraft) -> PublicDraft:
    """The client's view of a listing draft: its photos (server paths) left out."""
    amount = draft.price.amount
    return PublicDraft(
        title=draft.title, category_id=draft.category.category_id,
        category_name=draft.category.name,
        item_specifics={a.name: list(a.values) for a in draft.aspects},
        condition=draft.condition, condition_id=draft.condition_id,
        condition_description=draft.condition_description,
        price=None if amount is None else PublicMoney(amount=str(amount.amount),
                                                      currency=amount.currency),
        price_strategy=draft.price.strategy, description=draft.description,
        problems=list(draft.problems))


def draft_strategy(value: str | None) -> str | None:
    """The request's ``draft`` field: None (no draft) or a price strategy;
    raises ValueError("bad_draft") for anything else."""
    if not value:
        return None
    if value not in {s.value for s in PriceStrategy}:
        raise ValueError("bad_draft")
    return value


def public_analysis(analysis: Analysis, draft: ListingDraft | None = None) -> PublicAnalysis:
    """The client's view of ``analysis`` (and of its ``draft``): no server
    paths, no copy of the upload."""
    ident = analysis.identification
    price = analysis.price
    return PublicAnalysis(
        identification=PublicIdentification(
            brand=ident.brand,
            product_name=ident.product_name,
            category=ident.category,
            attributes=[PublicAttribute(name=a.name, value=a.value, confidence=a.confidence)
                        for a in ident.attributes],
            confidence=ident.confidence,
            summary=ident.summary,
            suggested_photos=list(ident.suggested_photos),
            evidence=[PublicEvidence(field=e.field, value=e.value, expert=e.expert,
                                     score=e.score, photo=e.photo) for e in ident.evidence],
        ),
        price=PublicPrice(
            status=price.status,
            basis=price.basis if price.estimate is not None else None,
            currency=price.currency, estimate=_amount(price.estimate),
            low=_amount(price.low), high=_amount(price.high), comps_used=price.comps_used,
            minimum_comps=price.minimum_comps,
        ),
        comps=[
            PublicComp(
                marketplace=comp.listing.marketplace,
                listing_id=comp.listing.listing_id,
                title=comp.listing.title,
                price=None if comp.listing.price is None else PublicMoney(
                    amount=str(comp.listing.price.amount),
                    currency=comp.listing.price.currency),
                condition=comp.listing.condition,
                sold=comp.listing.sold,
                url=_link(comp.listing.url),
                image_url=_link(comp.listing.image_url),
                similarity=comp.similarity,
                score=comp.score,
            )
            for comp in analysis.comps
        ],
        photos=[PublicPhoto(index=p.index, role=p.role, role_score=p.role_score)
                for p in analysis.photos],
        failed_experts=sorted(analysis.failed_experts),
        draft=None if draft is None else public_draft(draft),
    )


def item_from_uploads(photos: list[bytes], roles: str | None) -> Item:
    """An item from a request's uploads, read already within their limits, and
    its ``roles`` field (comma-separated, one per photo, empty where unknown);
    raises ValueError with the error code (``too_many_photos``, ``bad_roles``)."""
    if len(photos) > ITEM_MAX_PHOTOS:
        raise ValueError("too_many_photos")
    given: list[str | None] | None = None
    if roles:
        given = [r.strip().lower() or None for r in roles.split(",")]
        if len(given) != len(photos) or any(r not in _ROLES for r in given if r):
            raise ValueError("bad_roles")
    return Item(*photos, roles=given)


_ROLES = {role.value for role in PhotoRole}


def schema() -> dict[str, object]:
    """The JSON schema of a response, as ``analysis-response.schema.json`` holds it."""
    return PublicAnalysis.model_json_schema(mode="serialization")


def error_schema() -> dict[str, object]:
    """The JSON schema of an error, as ``error-response.schema.json`` holds it."""
    return PublicError.model_json_schema(mode="serialization")

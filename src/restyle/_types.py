"""The values that flow through the pipeline: frozen, typed, keyword-only.

Every value that comes back to a caller serialises with ``to_dict()``;
``Analysis.from_dict`` / ``Analysis.from_json`` rebuild an analysis from it.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

from restyle._serde import from_jsonable, redacting_repr, to_jsonable

__all__ = [
    "MAXIMUM_PRICE",
    "Analysis",
    "Attribute",
    "Box",
    "Comp",
    "CompFlag",
    "Condition",
    "Evidence",
    "Exclusion",
    "Identification",
    "Listing",
    "Money",
    "Observation",
    "Opinion",
    "OpinionStatus",
    "PhotoInfo",
    "PhotoRole",
    "PriceBand",
    "PriceBasis",
    "PriceEstimate",
    "PriceStatus",
    "PricedComp",
    "Query",
    "Value",
]

#: Comps priced at or above this, in any currency, are excluded as absurd.
#: Far above any real price (a trillion dollars is 2.5e16 Vietnamese dong,
#: too), and far enough below Decimal's 28-digit default precision that an
#: amount in cents always fits.
MAXIMUM_PRICE = Decimal(10) ** 18

_T = TypeVar("_T", bound="Value")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


class Value:
    """Mixin giving every pipeline value ``to_dict`` and ``from_dict``."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """Return this value as plain JSON types (Decimal as string, enums as values)."""
        result: dict[str, Any] = to_jsonable(self)
        return result

    @classmethod
    def from_dict(cls: type[_T], data: Mapping[str, Any]) -> _T:
        """Rebuild a value from the output of :meth:`to_dict`."""
        return from_jsonable(cls, dict(data))


def _check_score(owner: str, name: str, value: float | None) -> None:
    if value is None:
        return
    if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0):
        raise ValueError(f"{owner}.{name} must be a number in [0, 1], got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Box(Value):
    """A region of the photo, in fractions of its width and height."""

    left: float
    top: float
    width: float
    height: float

    def __post_init__(self) -> None:
        for name in ("left", "top", "width", "height"):
            _check_score("Box", name, getattr(self, name))


@dataclass(frozen=True, slots=True, kw_only=True)
class Observation(Value):
    """One thing an expert saw, with its score normalised to [0, 1].

    ``facet`` says what the text describes when the expert knows it
    (``"brand"``, ``"category"``, ``"color"``, ``"material"``, ...);
    ``raw_score`` keeps the service's own number when it was not in [0, 1].
    """

    text: str
    score: float
    facet: str | None = None
    box: Box | None = None
    raw_score: float | None = None

    def __post_init__(self) -> None:
        _check_score("Observation", "score", self.score)


class OpinionStatus(str, enum.Enum):
    """How an expert's examination ended."""

    OK = "ok"
    ERROR = "error"
    TIMEOUT = "timeout"
    #: Not asked: the expert was still stuck in an earlier call past its deadline.
    BUSY = "busy"


class PhotoRole(str, enum.Enum):
    """What one photo of an item shows."""

    #: The whole item: what the comps should look like.
    WHOLE = "whole"
    #: The brand tag or logo.
    TAG = "tag"
    #: The care or size label (size, material, RN/CA numbers).
    LABEL = "label"
    #: A close-up: a detail, the sole, a serial plate, the fabric.
    DETAIL = "detail"
    #: A flaw: a stain, a tear, wear.
    FLAW = "flaw"


@dataclass(frozen=True, slots=True, kw_only=True)
class Opinion(Value):
    """What one expert saw in one photo of the item, or why it saw nothing.

    ``photo`` is that photo's place in the item (0 for the first, and for a
    photo analysed alone)."""

    expert: str
    status: OpinionStatus = OpinionStatus.OK
    labels: tuple[Observation, ...] = ()
    entities: tuple[Observation, ...] = ()
    objects: tuple[Observation, ...] = ()
    logos: tuple[Observation, ...] = ()
    texts: tuple[Observation, ...] = ()
    pages: tuple[Observation, ...] = ()
    similar_images: tuple[str, ...] = ()
    error: str | None = None
    latency: float = 0.0
    photo: int = 0

    @property
    def ok(self) -> bool:
        return self.status is OpinionStatus.OK

    def observations(self) -> tuple[Observation, ...]:
        """Every observation of this opinion, whatever its group."""
        return self.labels + self.entities + self.objects + self.logos + self.texts + self.pages

    @classmethod
    def failure(
        cls,
        expert: str,
        error: str,
        *,
        status: OpinionStatus = OpinionStatus.ERROR,
        latency: float = 0.0,
    ) -> Opinion:
        """An opinion that records a failed examination."""
        return cls(expert=expert, status=status, error=error, latency=latency)


@dataclass(frozen=True, slots=True, kw_only=True)
class Attribute(Value):
    """A secondary trait of the item: ``Attribute(name="color", value="blue")``."""

    name: str
    value: str
    confidence: float = 0.0

    def __post_init__(self) -> None:
        _check_score("Attribute", "confidence", self.confidence)


@dataclass(frozen=True, slots=True, kw_only=True)
class Evidence(Value):
    """Which expert supported a field's value, how strongly, and in which photo
    of the item (its place; None when not known)."""

    field: str
    value: str
    expert: str
    score: float
    photo: int | None = None

    def __post_init__(self) -> None:
        _check_score("Evidence", "score", self.score)


@dataclass(frozen=True, slots=True, kw_only=True)
class Identification(Value):
    """What the item is, merged from the experts' opinions by a synthesizer."""

    product_name: str | None = None
    brand: str | None = None
    category: str | None = None
    attributes: tuple[Attribute, ...] = ()
    confidence: float = 0.0
    summary: str = ""
    evidence: tuple[Evidence, ...] = ()
    synthesizer: str = ""
    fallback_reason: str | None = None
    suggested_photos: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_score("Identification", "confidence", self.confidence)

    def attribute(self, name: str) -> str | None:
        """The value of attribute ``name``, or None."""
        for attr in self.attributes:
            if attr.name == name:
                return attr.value
        return None

    def evidence_for(self, field_name: str) -> tuple[Evidence, ...]:
        return tuple(e for e in self.evidence if e.field == field_name)

    def _repr_html_(self) -> str:
        from restyle._display import identification_html

        return identification_html(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class Money(Value):
    """An amount in one currency. ``amount`` is a Decimal; ``currency`` is ISO 4217."""

    amount: Decimal
    currency: str

    def __post_init__(self) -> None:
        amount = self.amount
        if isinstance(amount, float):
            amount = Decimal(repr(amount))
        try:
            amount = Decimal(amount)
        except (InvalidOperation, TypeError, ValueError) as exc:
            raise ValueError(f"Money.amount must be a decimal number, got {self.amount!r}") from exc
        if not amount.is_finite() or amount < 0:
            raise ValueError(f"Money.amount must be finite and not negative, got {self.amount!r}")
        currency = str(self.currency).upper()
        if not _CURRENCY.match(currency):
            raise ValueError(f"Money.currency must be a 3-letter ISO code, got {self.currency!r}")
        object.__setattr__(self, "amount", amount)
        object.__setattr__(self, "currency", currency)

    def __str__(self) -> str:
        return f"{self.amount:.2f} {self.currency}"


class Condition(str, enum.Enum):
    """A small condition scale every marketplace's grades map onto."""

    NEW = "new"
    LIKE_NEW = "like_new"
    USED = "used"
    FOR_PARTS = "for_parts"
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, text: str | None) -> Condition:
        """Map free text such as ``"Pre-owned"`` or ``"new with tags"`` onto the scale."""
        if not text:
            return cls.UNKNOWN
        t = text.strip().lower().replace("-", " ").replace("_", " ")
        if t in {"new", "brand new", "new with tags", "new with box", "nwt", "nwb", "sealed"}:
            return cls.NEW
        if "parts" in t or "not working" in t or "broken" in t:
            return cls.FOR_PARTS
        if "like new" in t or "excellent" in t or "open box" in t or "without tags" in t:
            return cls.LIKE_NEW
        if t.startswith("new"):
            return cls.NEW
        if "used" in t or "pre owned" in t or "good" in t or "fair" in t or "worn" in t:
            return cls.USED
        return cls.UNKNOWN


@dataclass(frozen=True, slots=True, kw_only=True)
class Query(Value):
    """What to search a marketplace for, built from an Identification.

    ``step`` names the relaxation step that produced this query (``"full"`` for
    the first, most specific one).
    """

    text: str
    brand: str | None = None
    category: str | None = None
    product_name: str | None = None
    model_number: str | None = None
    attributes: tuple[str, ...] = ()
    condition: Condition | None = None
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    currency: str | None = None
    limit: int = 50
    step: str = "full"


@dataclass(frozen=True, slots=True, kw_only=True)
class Listing(Value):
    """One item offered (or sold) on a marketplace.

    ``price`` is the asking price, or the current bid of an auction
    (``auction`` True, with ``bid_count``); for a sold item (``sold`` True)
    it is the price it sold for, ``sold_at`` when it sold (timezone-aware;
    a naive time is taken as UTC) and ``quantity_sold`` how many sold, when
    the marketplace said. ``shipping`` is None when the marketplace did not
    say, which is not the same as free.
    """

    marketplace: str
    listing_id: str
    title: str
    price: Money | None = None
    url: str | None = None
    image_url: str | None = None
    brand: str | None = None
    category: str | None = None
    condition: Condition = Condition.UNKNOWN
    shipping: Money | None = None
    sold: bool | None = None
    seller: str | None = None
    seller_feedback_percent: float | None = None
    seller_feedback_score: int | None = None
    auction: bool | None = None
    bid_count: int | None = None
    sold_at: dt.datetime | None = None
    quantity_sold: int | None = None

    def __post_init__(self) -> None:
        if self.sold_at is not None:
            if not isinstance(self.sold_at, dt.datetime):
                raise ValueError(f"Listing.sold_at must be a datetime, got {self.sold_at!r}")
            if self.sold_at.tzinfo is None:
                object.__setattr__(self, "sold_at", self.sold_at.replace(tzinfo=dt.timezone.utc))
        quantity = self.quantity_sold
        if quantity is not None and (isinstance(quantity, bool) or not isinstance(quantity, int)
                                     or quantity < 0):
            raise ValueError(f"Listing.quantity_sold must be a count, got {quantity!r}")

    @property
    def key(self) -> str:
        """A key unique across marketplaces."""
        return f"{self.marketplace}:{self.listing_id}"

    @property
    def delivered_price(self) -> Money | None:
        """Price plus shipping, only when both are known and in one currency."""
        if self.price is None or self.shipping is None:
            return None
        if self.price.currency != self.shipping.currency:
            return None
        return Money(amount=self.price.amount + self.shipping.amount, currency=self.price.currency)


class CompFlag(str, enum.Enum):
    """What re-ranking noticed about a comp; pricing reads the same flags."""

    #: The comp's image could not be fetched, decoded or encoded.
    IMAGE_UNAVAILABLE = "image_unavailable"
    #: The same picture as a better-ranked comp (one stock photo, several listings).
    DUPLICATE_IMAGE = "duplicate_image"
    #: Below this query's similarity cut-off: it does not look like the photo.
    BELOW_CUTOFF = "below_cutoff"


@dataclass(frozen=True, slots=True, kw_only=True)
class Comp(Value):
    """A comparable listing plus how much it looks like the photo.

    ``similarity`` is the visual cosine similarity (None when the comp's image
    could not be used; ``image_error`` says why). ``text_similarity`` compares
    the identification with the title, when the re-ranker is asked to.
    ``score`` orders the comps. ``flags`` holds :class:`CompFlag` values
    (``image_unavailable``, ``duplicate_image``, ``below_cutoff``) as strings.
    """

    listing: Listing
    score: float
    similarity: float | None = None
    text_similarity: float | None = None
    image_error: str | None = None
    flags: tuple[str, ...] = ()
    query_step: str = "full"

    def __post_init__(self) -> None:
        # Plain strings, so the flags hash, print and serialise the same way
        # whether they were given as CompFlag members or read back from JSON.
        flags = tuple(f.value if isinstance(f, CompFlag) else str(f) for f in self.flags)
        object.__setattr__(self, "flags", flags)

    def _repr_html_(self) -> str:
        from restyle._display import comp_html

        return comp_html(self)


class PriceStatus(str, enum.Enum):
    OK = "ok"
    NOT_ENOUGH_DATA = "not_enough_data"


class PriceBasis(str, enum.Enum):
    """What the headline estimate rests on."""

    #: Prices items sold for: there were at least ``minimum_comps`` of them.
    SOLD = "sold"
    #: Asking prices only: no comp was known to have sold.
    ASKING = "asking"
    #: Too few sold comps for a sold price: they are mixed with asking prices.
    MIXED = "mixed"


@dataclass(frozen=True, slots=True, kw_only=True)
class PricedComp(Value):
    """A comp that counted towards an estimate, and with what weight.

    ``weight`` is the comp's similarity weight times ``recency``, the factor
    a sold comp's age gave it (None when its age did not count: an asking
    price, or a sale without a date); ``sold_at`` is when it sold.
    """

    listing_key: str
    price: Money
    weight: float
    condition: Condition = Condition.UNKNOWN
    sold: bool | None = None
    down_weighted: str | None = None
    recency: float | None = None
    sold_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Exclusion(Value):
    """A comp left out of the headline estimate: ``reason`` is a stable code,
    ``detail`` says more in words. An ``asking_price`` is left out when the
    headline rests on sold prices; it counts in its asking band.

    Reasons: ``no_price``, ``absurd_price``, ``below_cutoff``, ``not_alike``,
    ``auction_without_bids``, ``outlier``, and ``other_currency`` (estimated in its
    own currency's band).
    """

    listing_key: str
    reason: str
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.listing_key}: {self.detail or self.reason}"


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceBand(Value):
    """The estimate for one slice of the comps: a currency, and optionally one
    condition or only sold (``sold`` True) or only active (False) listings."""

    currency: str
    status: PriceStatus
    condition: Condition | None = None
    sold: bool | None = None
    estimate: Decimal | None = None
    low: Decimal | None = None
    high: Decimal | None = None
    comps_used: int = 0
    effective_weight: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceEstimate(Value):
    """A price a reseller can act on, and what it rests on.

    The headline amounts are for ``currency``, the currency carrying the most
    weight. ``basis`` says whether they rest on sold prices, asking prices or
    both, and ``basis_detail`` why, in words. ``status`` is
    ``not_enough_data`` when fewer than ``minimum_comps`` good comps were
    found; the amounts are then None. ``counted`` and ``exclusions`` explain
    the headline comp by comp; ``bands`` gives the estimate per currency,
    condition and sold vs active. Sold comps weigh less the older they are,
    halving every ``half_life_days`` before ``as_of`` (None when no comp's age
    counted).
    """

    status: PriceStatus
    currency: str | None = None
    estimate: Decimal | None = None
    low: Decimal | None = None
    high: Decimal | None = None
    comps_used: int = 0
    effective_weight: float = 0.0
    minimum_comps: int = 3
    counted: tuple[PricedComp, ...] = ()
    exclusions: tuple[Exclusion, ...] = ()
    bands: tuple[PriceBand, ...] = ()
    basis: PriceBasis | None = None
    basis_detail: str = ""
    half_life_days: float | None = None
    as_of: dt.datetime | None = None

    @property
    def ok(self) -> bool:
        return self.status is PriceStatus.OK

    @property
    def excluded(self) -> tuple[str, ...]:
        """Why each comp left out was left out, in words (``exclusions`` as text)."""
        return tuple(str(e) for e in self.exclusions)


@dataclass(frozen=True, slots=True, kw_only=True)
class PhotoInfo(Value):
    """What restyle kept of an analysed photo: ``index`` is its place in the
    item, ``role`` what it shows (``role_score`` how sure restyle is when it
    found the role itself; None when the role was given)."""

    sha256: str
    width: int
    height: int
    format: str
    source: str | None = None
    thumbnail: str | None = field(default=None, repr=False)
    index: int = 0
    role: PhotoRole | None = None
    role_score: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Analysis(Value):
    """Everything restyle found out about one item.

    ``photo`` is the photo that shows the item whole (the first such); ``photos``
    every photo of the item in the order given, each with its role and a small
    thumbnail (one entry for a photo analysed alone)."""

    photo: PhotoInfo
    opinions: tuple[Opinion, ...]
    identification: Identification
    query: Query | None
    comps: tuple[Comp, ...]
    price: PriceEstimate
    model_id: str | None = None
    warnings: tuple[str, ...] = ()
    elapsed: float = 0.0
    created_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    photos: tuple[PhotoInfo, ...] = ()

    @property
    def failed_experts(self) -> dict[str, str]:
        """The experts that failed, with the reason each gave (of an item of
        several photos, named with the photo: ``"google-vision (photo 2)"``)."""
        several = len({o.photo for o in self.opinions}) > 1
        return {(f"{o.expert} (photo {o.photo + 1})" if several else o.expert):
                o.error or o.status.value for o in self.opinions if not o.ok}

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> Analysis:
        return cls.from_dict(json.loads(text))

    def _repr_html_(self) -> str:
        from restyle._display import analysis_html

        return analysis_html(self)


# Every value's repr hides the registered secrets, also one learnt after it was made.
for _name in __all__:
    _cls = globals()[_name]
    if isinstance(_cls, type) and issubclass(_cls, Value) and _cls is not Value:
        redacting_repr(_cls)

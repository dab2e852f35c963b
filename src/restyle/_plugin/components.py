"""The four kinds of component a plugin can provide, as small abstract
classes, and the context they are handed.

A component is constructed cheaply (no network, no model loading) when its
plugin registers it; expensive set-up happens lazily on first use. An Engine
calls :meth:`Component.attach` with its :class:`~restyle.Context` once when
it adopts a component; while it runs, :attr:`Component.context` is the
context of the Engine calling, so one instance can serve several Engines.

The :class:`Context` is what a component may use of the Engine that calls it:
its encoder, its fetcher, a read-only view of its catalog
(:class:`CatalogView`), a logger and the time left for the call. The Engine
makes its context the *current* one while it runs the pipeline.
"""

from __future__ import annotations

import contextvars
import logging
import math
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol, TypeGuard, TypeVar

import numpy as np

from restyle._errors import ConfigurationError, EncoderError
from restyle._plugin.contracts import check_vectors
from restyle._types import Identification, Listing, Opinion, PhotoRole, Query

if TYPE_CHECKING:
    from PIL import Image

    from restyle._input.fetching import Fetcher
    from restyle._input.imaging import Photo

__all__ = [
    "CALL_DEADLINE",
    "RETURN_SECONDS",
    "CatalogView",
    "Component",
    "Context",
    "Encoder",
    "Expert",
    "Marketplace",
    "Synthesizer",
    "activate",
    "check_component",
    "check_component_name",
    "check_timeout",
    "current_context",
    "deactivate",
    "is_timeout",
    "wait_time",
]

# -- the context a component is handed ----------------------------------------

class CatalogView(Protocol):
    """What components may use of the Engine's local catalog: read-only
    lookups (the catalog itself, or a view of it with held-out listings hidden)."""

    @property
    def model_id(self) -> str:
        """The id of the encoder model the catalog's vectors come from."""

    def search_vector(self, vector: np.ndarray, query: Query | None = None, *,
                      limit: int = 20) -> list[tuple[Listing, float]]:
        """Nearest listings to ``vector`` matching ``query``'s filters, best first."""

    def search_text(self, query: Query) -> list[Listing]:
        """Listings whose title, brand or category share words with the query."""

    def vectors_for(self, listing_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vector of each listing that has one, by listing id."""


_CURRENT: contextvars.ContextVar[Context] = contextvars.ContextVar("restyle_context")
# The deadline (a time.monotonic value) of the component call running in this
# thread; infinity for work started on behalf of no one call (a warm-up).
CALL_DEADLINE: contextvars.ContextVar[float] = contextvars.ContextVar("restyle_call_deadline")


@dataclass(frozen=True, eq=False)
class Context:
    """The parts of an Engine a component may use.

    - ``encoder``: the Engine's encoder (the photo's vectors come from it).
    - ``fetcher``: the guarded image downloader, with the Engine's limits.
    - ``catalog``: the Engine's local catalog, opened on first use.
    - ``logger``: where components log (``restyle.components``).
    - :meth:`time_left`: seconds left for the call in progress, to size a
      component's own network timeouts.
    """

    encoder: Encoder
    fetcher: Fetcher
    open_catalog: Callable[[], CatalogView] = field(repr=False)
    logger: logging.Logger = field(default=logging.getLogger("restyle.components"), repr=False)

    @property
    def catalog(self) -> CatalogView:
        return self.open_catalog()

    @staticmethod
    def time_left() -> float | None:
        """Seconds left before the current component call is abandoned; None
        outside a call made by an Engine."""
        deadline = CALL_DEADLINE.get(None)
        if deadline is None or deadline == float("inf"):  # outside a call, or work of no call's
            return None
        return max(0.0, deadline - time.monotonic())


#: How long before its call's deadline a component stops waiting for shared
#: work, so that the call has returned when the pipeline stops waiting for it
#: (and the component is not left *busy*).
RETURN_SECONDS = 0.1


def wait_time() -> float | None:
    """How long a component call running on this thread may wait for work it
    shares with others (a model load, a vector another call computes): until
    :data:`RETURN_SECONDS` before its deadline; None outside a call, or for
    work done on behalf of no one call (no limit)."""
    left = Context.time_left()
    return None if left is None else max(0.0, left - RETURN_SECONDS)


def current_context() -> Context:
    """The context of the Engine whose pipeline is running in this thread."""
    context = _CURRENT.get(None)
    if context is None:
        raise ConfigurationError(
            "this component needs an Engine: call it through Engine.analyze() (or "
            "identify(), find_comps()), not directly"
        )
    return context


def activate(context: Context) -> contextvars.Token[Context]:
    return _CURRENT.set(context)


def deactivate(token: contextvars.Token[Context]) -> None:
    _CURRENT.reset(token)


# -- components --------------------------------------------------------------

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
#: Longer per-call timeouts are refused: threads cannot wait that long.
MAX_TIMEOUT = 1e9

C = TypeVar("C", bound="Component")


class Component(ABC):  # noqa: B024 - abstract in spirit; subclasses add the methods
    """Base of every component: a kind, a name, and an optional attach step."""

    kind: ClassVar[str] = "component"
    #: The name users select the component by, e.g. ``Engine(experts=["clip"])``.
    name: str = ""

    def attach(self, context: Context) -> None:  # noqa: B027 - optional hook, empty on purpose
        """Called once by each Engine that adopts this component, before first use.

        Check here what the component needs (and raise ConfigurationError if
        it is missing); keep per-Engine resources out of ``self``: read them
        from :attr:`context` when called.
        """

    def warm_up(self) -> None:  # noqa: B027 - optional hook, empty on purpose
        """Do the expensive set-up now (load a model, encode prompts, open a
        file), outside any analysis's deadline; :meth:`Engine.warm_up` calls it,
        with the Engine's context current. What is not warmed up is done on
        first use, inside that call's deadline."""

    @property
    def context(self) -> Context:
        """The context of the Engine calling this component now."""
        return current_context()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.kind} {self.name!r}>"


def check_component_name(component: Component) -> str:
    """The component's ``name``, if it is a lower-case identifier; ValueError if not."""
    name = getattr(component, "name", None)
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"{type(component).__name__}.name must be a lower-case identifier "
            f"such as 'google-vision', got {name!r}"
        )
    return name


def is_timeout(value: object) -> TypeGuard[float]:
    """Whether ``value`` is a usable per-call timeout: a positive number of seconds."""
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and 0 < value < MAX_TIMEOUT
    )


def check_timeout(component: Component) -> float:
    """The component's ``timeout`` in seconds, if it is usable; ValueError if not."""
    value = getattr(component, "timeout", None)
    if not is_timeout(value):
        raise ValueError(
            f"{type(component).__name__}.timeout must be a positive number of seconds, "
            f"got {value!r}"
        )
    return float(value)


def check_component(component: object, base: type[C]) -> C:
    """``component`` if it keeps the rules every ``base`` keeps before it is used.

    The rules, shared by plugin registration, the Engine and
    :mod:`restyle.testing`: an instance (not a class) of ``base``, a ``name``
    that is a lower-case identifier, and, for experts and marketplaces, a
    ``timeout`` that is a positive number of seconds. Raises TypeError for the
    wrong kind of object and ValueError for a bad name or timeout.
    """
    wanted = _kind_of(base)
    if isinstance(component, type):
        if issubclass(component, base):
            raise TypeError(
                f"{component.__name__} is a class, not {_a(wanted)} {wanted}: "
                f"pass an instance, {component.__name__}()"
            )
        raise TypeError(f"{component.__name__} is a class, not {_a(wanted)} {wanted}")
    if not isinstance(component, base):
        if isinstance(component, Component):
            raise TypeError(
                f"{component!r} is {_a(component.kind)} {component.kind}, not "
                f"{_a(wanted)} {wanted}"
            )
        raise TypeError(
            f"{component!r} is not {_a(wanted)} {wanted}: it does not subclass "
            f"restyle.{base.__name__}"
        )
    check_component_name(component)
    if isinstance(component, (Expert, Marketplace)):
        check_timeout(component)
    return component


def _kind_of(base: type[Component]) -> str:
    return base.kind if base is not Component else "component"


def _a(word: str) -> str:
    return "an" if word[:1] in ("a", "e", "i", "o", "u") else "a"


class Expert(Component):
    """Looks at the photo and reports what it sees as an :class:`Opinion`.

    ``timeout`` is this expert's own deadline in seconds; an expert that takes
    longer is reported as timed out and the pipeline goes on without it.
    Raising any exception is fine: the Engine records it in the Opinion.

    With several photos of one item, ``examine`` is called once per photo
    (concurrently, under the analysis's one budget); ``photo.role`` and
    ``photo.index`` say which photo it is. ``photo_roles`` names the roles of
    the photos this expert is asked about (None, the default: every photo): an
    expert that has nothing to say about a brand tag need not be asked. A
    photo analysed alone is always asked about.
    """

    kind: ClassVar[str] = "expert"
    timeout: float = 20.0
    photo_roles: ClassVar[frozenset[PhotoRole] | None] = None

    @abstractmethod
    def examine(self, photo: Photo) -> Opinion:
        """Examine the photo and return an Opinion whose ``expert`` is ``self.name``."""


class Synthesizer(Component):
    """Merges the experts' opinions into one :class:`Identification`."""

    kind: ClassVar[str] = "synthesizer"

    @abstractmethod
    def synthesize(self, opinions: Sequence[Opinion], *, photo: Photo) -> Identification:
        """Merge ``opinions`` (failed ones included, for context) into an Identification."""


class Marketplace(Component):
    """Finds listings comparable to the identified item.

    ``timeout`` bounds each call in seconds (one search per relaxation step);
    a call that takes longer is abandoned and the marketplace skipped for the
    rest of that analysis, keeping what it found before.
    """

    kind: ClassVar[str] = "marketplace"
    timeout: float = 20.0

    @abstractmethod
    def search(self, query: Query) -> Sequence[Listing]:
        """Listings matching ``query``, best first, at most ``query.limit``."""

    def search_by_image(
        self, photo: Photo, query: Query, *, embedding: np.ndarray, model_id: str
    ) -> Sequence[Listing] | None:
        """Listings that look like the photo, filtered by ``query``; None if unsupported.

        ``embedding`` is the photo's unit vector under the Engine's encoder
        ``model_id``, for marketplaces that search by vector.
        """
        return None

    def image_embeddings(
        self, listings: Sequence[Listing], *, model_id: str
    ) -> Mapping[str, np.ndarray]:
        """Known embeddings of these listings' images under ``model_id``, keyed by
        :attr:`Listing.key`. Listings left out have their images fetched and encoded."""
        return {}


class Encoder(Component):
    """Embeds images and texts into one vector space (unit-length rows)."""

    kind: ClassVar[str] = "encoder"

    @property
    @abstractmethod
    def model_id(self) -> str:
        """A stable id of the model and weights; vectors from different ids never mix."""

    @property
    @abstractmethod
    def dim(self) -> int:
        """The length of each embedding."""

    @abstractmethod
    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """A float32 array of shape (len(images), dim) with unit-length rows."""

    def encode_image_batches(
        self, batches: Iterable[Sequence[Image.Image]]
    ) -> Iterator[np.ndarray]:
        """Each batch's :meth:`encode_images` array, in order (a catalog build
        hands its batches this way). An encoder may override it to prepare the
        next batch while its model works on this one."""
        for batch in batches:
            yield self.encode_images(batch) if batch else np.zeros((0, self.dim), np.float32)

    @abstractmethod
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """A float32 array of shape (len(texts), dim) with unit-length rows."""

    def photo_vector(self, photo: Photo) -> np.ndarray:
        """The photo's unit vector under this encoder, computed once per photo
        and model: the one the photo keeps for :attr:`model_id`, else
        :meth:`encode_images` of it, checked (one finite row of :attr:`dim`, a
        :class:`~restyle.PluginContractError` if not) and kept on the photo, so
        the experts and the Engine that all need it share one computation.
        A caller that finds it being computed by another waits for it only
        until its own call's deadline (then an :class:`~restyle.EncoderError`)."""
        model_id = self.model_id
        known = photo.vector(model_id)
        if known is not None:
            return known
        future, mine = photo.vector_to_compute(model_id)
        if not mine:
            try:
                return future.result(wait_time())
            except FutureTimeout:
                raise EncoderError("the photo's vector is still being computed for another "
                                   "call") from None
        try:
            vector = check_vectors(self, self.encode_images([photo.image]), count=1)[0]
        except BaseException as exc:
            photo.vector_failed(model_id, exc)
            raise
        return photo.keep_vector(model_id, vector)

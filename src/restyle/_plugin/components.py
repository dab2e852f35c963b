"""The four kinds of component a plugin can provide, as small abstract classes.

A component is constructed cheaply (no network, no model loading) when its
plugin registers it; expensive set-up happens lazily on first use. An Engine
calls :meth:`Component.attach` with its :class:`~restyle.Context` once when
it adopts a component; while it runs, :attr:`Component.context` is the
context of the Engine calling, so one instance can serve several Engines.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar, TypeGuard, TypeVar

import numpy as np

from restyle._plugin.context import Context, current_context
from restyle._plugin.contracts import check_vectors
from restyle._types import Identification, Listing, Opinion, Query

if TYPE_CHECKING:
    from PIL import Image

    from restyle._input.imaging import Photo

__all__ = [
    "Component",
    "Encoder",
    "Expert",
    "Marketplace",
    "Synthesizer",
    "check_component",
    "check_component_name",
    "check_timeout",
    "is_timeout",
]

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
    """

    kind: ClassVar[str] = "expert"
    timeout: float = 20.0

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
        Two callers at once may both compute it; neither waits on the other."""
        model_id = self.model_id
        known = photo.vector(model_id)
        if known is not None:
            return known
        vector = check_vectors(self, self.encode_images([photo.image]), count=1)[0]
        return photo.keep_vector(model_id, vector)

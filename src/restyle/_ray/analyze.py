"""Bulk analysis on Ray: one analyst (an Engine) per actor, made on the actor by
a factory its caller hands over, photos sent as what ``load_photo`` reads."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from restyle._errors import ConfigurationError, RestyleError
from restyle._ray.cluster import (
    Failure,
    Pool,
    adopt,
    batch_of,
    objects,
    on_actors,
    ordered,
    results,
)

if TYPE_CHECKING:
    from restyle._input.imaging import ImageInput, Photo
    from restyle._types import Analysis


class Analyst(Protocol):
    """What analyzes photos on an actor (an Engine, without an executor)."""

    def analyze_iter(self, images: Iterable[Any], *,
                     deadline: float | None = None) -> Iterator[Analysis | RestyleError]: ...


@dataclass(frozen=True, slots=True)
class _Upload:
    """A photo read from a file object on the driver, with the file's name."""

    data: bytes
    name: str | None

    def read(self, size: int = -1) -> bytes:
        return self.data if size < 0 else self.data[:size]


@dataclass(frozen=True, slots=True)
class _PhotoParts:
    """A decoded Photo, as the parts it is made of."""

    image: Any
    data: bytes | None
    fmt: str
    source: str | None


def _portable(image: ImageInput | Photo) -> Any:
    """``image`` as something an actor can receive and give to ``load_photo``, which
    then behaves as it would here: paths stay as written (the actor works in this
    process's directory), file objects are read here."""
    from PIL import Image

    from restyle._input.imaging import DEFAULT_MAX_BYTES, Photo

    if isinstance(image, Photo):
        return _PhotoParts(image.image, image.data, image.format, image.source)
    if isinstance(image, os.PathLike):
        return os.fspath(image)
    if isinstance(image, (bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, bytes, Image.Image)) or not hasattr(image, "read"):
        return image
    name = getattr(image, "name", None)
    # One byte past the limit, so that load_photo in the actor says it is too large.
    return _Upload(image.read(DEFAULT_MAX_BYTES + 1), name if isinstance(name, str) else None)


def _local(image: Any) -> Any:
    if isinstance(image, _PhotoParts):
        from restyle._input.imaging import Photo

        return Photo(image=image.image, data=image.data, fmt=image.fmt, source=image.source)
    return image


class _Actor:
    """One analyst per actor, made by the driver's factory when the actor starts."""

    def __init__(self, make_analyst: Callable[[], Analyst], environment: Mapping[str, str],
                 cwd: str, deadline: float | None) -> None:
        adopt(environment, cwd)
        self.deadline = deadline
        self.failure: Failure | None = None
        try:
            self.analyst = make_analyst()
        except RestyleError as exc:
            self.failure = Failure(exc)

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, np.ndarray]:
        images = [_local(image) for image in objects(batch)]
        if self.failure is not None:
            return batch_of([self.failure] * len(images))
        return batch_of(self.analyst.analyze_iter(images, deadline=self.deadline))


def travels(make_analyst: Callable[[], Analyst]) -> None:
    """Refuse, here, a factory that cannot be sent to the actors, naming why."""
    try:
        pickle.dumps(make_analyst)
    except Exception:
        try:
            from ray import cloudpickle

            cloudpickle.dumps(make_analyst)  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise ConfigurationError(
                "to analyze on Ray, the Engine's arguments (components, fetcher, reranker, "
                f"plugins) must be picklable: {type(exc).__name__}: {exc}"
            ) from exc


def analyze(
    ray: Any, pool: Pool, make_analyst: Callable[[], Analyst],
    images: Sequence[ImageInput | Photo], *, deadline: float | None, batch_photos: int,
) -> Iterator[Analysis | RestyleError]:
    """Each photo's Analysis or RestyleError, in input order, from analysts on Ray actors,
    each given ``batch_photos`` photos at a time."""
    travels(make_analyst)
    ds = ray.data.from_items([{"item": pickle.dumps(_portable(image))} for image in images])
    ds = ds.repartition(target_num_rows_per_block=batch_photos)
    # No more actors than batches: the others would load their models for nothing.
    actors = min(pool.actors, -(-len(images) // batch_photos))
    ds = on_actors(ray, ds, _Actor, pool, size=actors, batch_size=batch_photos,
                   make_analyst=make_analyst, deadline=deadline)
    yield from results(ordered(ds).iter_rows(), "the analysis", _result)


def _result(row: Mapping[str, Any]) -> Analysis | RestyleError:
    result = pickle.loads(row["item"])
    if isinstance(result, Failure):
        raise result.error  # the analyst could not be made on the actor
    return result  # type: ignore[no-any-return]

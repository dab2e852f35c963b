"""The read-only :class:`Photo` every stage is handed, and the image object
through which it shares its pixels without a copy.
"""

from __future__ import annotations

import base64
import hashlib
import io
import threading
import warnings
from concurrent.futures import Future
from typing import Any

import numpy as np
from PIL import Image

from restyle._types import PhotoInfo, PhotoRole

__all__ = ["Photo"]


class _SharedImage(Image.Image):
    """A photo's pixels as a plugin is handed them: the same pixels as restyle's,
    marked read-only, so Pillow copies them before any change made through its
    API (``paste``, ``putpixel``, ``ImageDraw``, ``frombytes``...)."""

    def frombytes(self, *args: Any, **kwargs: Any) -> None:
        # Pillow's own frombytes writes into the shared pixels even when read-only.
        self._ensure_mutable()
        super().frombytes(*args, **kwargs)


class Photo:
    """A decoded, validated photo: upright RGB pixels, at most
    :data:`WORKING_SIDE` a side, plus the bytes it came from.

    Read-only: its attributes cannot be set, and :attr:`image` hands out the
    photo's pixels as a new image object each time, sharing them without a copy
    until someone draws on it (Pillow then copies first), so a component can
    change neither what restyle reports (source, hash) nor what the others and
    the thumbnail see.

    Embeddings are memoised per encoder, so the experts and the re-ranker that
    all need the photo's vector compute it once.
    """

    __slots__ = ("_computing", "_data", "_embeddings", "_format", "_image", "_index", "_lock",
                 "_role", "_role_score", "_sha256", "_source")

    def __init__(
        self, *, image: Image.Image, data: bytes | None, fmt: str, source: str | None,
        sha256: str | None = None,
    ) -> None:
        image.load()
        self._image = image
        self._data = data
        self._format = fmt
        self._source = source
        if sha256 is None:
            sha256 = hashlib.sha256(data if data is not None else image.tobytes()).hexdigest()
        self._sha256 = sha256
        self._embeddings: dict[str, np.ndarray] = {}
        self._computing: dict[str, Future[np.ndarray]] = {}
        self._lock = threading.Lock()
        self._index = 0
        self._role: PhotoRole | None = None
        self._role_score: float | None = None

    def placed(self, index: int, role: PhotoRole | None,
               role_score: float | None = None) -> Photo:
        """This photo as photo ``index`` of an item, showing it as ``role``
        (found with ``role_score``, None when given): the same pixels and the
        same kept vectors, shared, in a Photo of its own."""
        twin = object.__new__(Photo)
        for name in Photo.__slots__:
            object.__setattr__(twin, name, object.__getattribute__(self, name))
        object.__setattr__(twin, "_index", index)
        object.__setattr__(twin, "_role", role)
        object.__setattr__(twin, "_role_score", role_score)
        return twin

    @property
    def index(self) -> int:
        """Which photo of its item this is (0 for the first, and for a photo alone)."""
        return self._index

    @property
    def role(self) -> PhotoRole | None:
        """What this photo of an item shows (None until known)."""
        return self._role

    @property
    def role_score(self) -> float | None:
        """How sure restyle is of :attr:`role` when it found it (None when given)."""
        return self._role_score

    def __repr__(self) -> str:
        return (
            f"Photo(source={self._source!r}, format={self._format!r}, "
            f"size={self.width}x{self.height}, sha256={self._sha256[:12]}...)"
        )

    @property
    def image(self) -> Image.Image:
        """The pixels, as a new image object that shares them until it is changed."""
        view = self._image._new(self._image.im)
        view.__class__ = _SharedImage
        view.readonly = 1
        return view

    @property
    def data(self) -> bytes | None:
        """The encoded bytes the photo was decoded from (None for a PIL image handed in)."""
        return self._data

    @property
    def format(self) -> str:
        return self._format

    @property
    def source(self) -> str | None:
        """The path or file name the photo was read from, if any."""
        return self._source

    @property
    def sha256(self) -> str:
        return self._sha256

    @property
    def width(self) -> int:
        return self._image.width

    @property
    def height(self) -> int:
        return self._image.height

    def vector(self, model_id: str) -> np.ndarray | None:
        """This photo's vector under the model ``model_id``, if one was kept."""
        with self._lock:
            return self._embeddings.get(model_id)

    def vector_to_compute(self, model_id: str) -> tuple[Future[np.ndarray], bool]:
        """The vector under ``model_id`` as a future, and whether the caller is
        the one to compute it (and then :meth:`keep_vector` or
        :meth:`vector_failed`): callers at once share one computation."""
        with self._lock:
            known = self._embeddings.get(model_id)
            future = self._computing.get(model_id)
            if known is None and future is None:
                future = self._computing[model_id] = Future()
                return future, True
        if future is None:  # kept already: nothing to wait for
            assert known is not None
            future = Future()
            future.set_result(known)
        return future, False

    def vector_failed(self, model_id: str, error: BaseException) -> None:
        """The computation of the vector under ``model_id`` failed: those
        waiting get ``error``; the next caller computes it again."""
        with self._lock:
            future = self._computing.pop(model_id, None)
        if future is not None and not future.done():
            future.set_exception(error)

    def keep_vector(self, model_id: str, vector: np.ndarray) -> np.ndarray:
        """Keep ``vector`` (checked by whoever computed it) as this photo's
        vector under ``model_id``, unless one is kept already; returns the
        one kept. The photo never computes a vector itself: an encoder does
        (:meth:`restyle.Encoder.photo_vector`)."""
        with self._lock:
            kept = self._embeddings.setdefault(model_id, vector)
            future = self._computing.pop(model_id, None)  # the vector is kept: no more waiting
        if future is not None and not future.done():
            future.set_result(kept)
        return kept

    def embedding(self, encoder: Any) -> np.ndarray:
        """Deprecated: ``encoder.photo_vector(photo)``."""
        warnings.warn("Photo.embedding(encoder) is deprecated; use encoder.photo_vector(photo)",
                      DeprecationWarning, stacklevel=2)
        vector: np.ndarray = encoder.photo_vector(self)
        return vector

    def known_embedding(self, encoder: Any) -> np.ndarray | None:
        """Deprecated: ``photo.vector(encoder.model_id)``."""
        warnings.warn("Photo.known_embedding(encoder) is deprecated; use "
                      "photo.vector(encoder.model_id)", DeprecationWarning, stacklevel=2)
        return self.vector(encoder.model_id)

    def encoded(
        self, *, fmt: str = "JPEG", max_side: int | None = None, quality: int = 90
    ) -> bytes:
        """The photo re-encoded (and downscaled to ``max_side`` if given)."""
        img = self._image
        if max_side is not None and max(img.size) > max_side:
            img = img.copy()
            img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, format=fmt, quality=quality)
        return buf.getvalue()

    def info(self, *, thumbnail_side: int = 256) -> PhotoInfo:
        thumb = self.encoded(max_side=thumbnail_side, quality=80)
        return PhotoInfo(
            sha256=self._sha256,
            width=self.width,
            height=self.height,
            format=self._format,
            source=self._source,
            thumbnail="data:image/jpeg;base64," + base64.b64encode(thumb).decode("ascii"),
            index=self._index,
            role=self._role,
            role_score=self._role_score,
        )

"""One item, several photos: the :class:`Item` a caller hands ``analyze``, and
its photos read through the gate together, under one deadline and one bound.

A list of photos is never an item by itself: ``analyze_many([a, b])`` is two
items of one photo each, ``analyze(Item(a, b))`` one item of two photos.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from restyle._errors import ConfigurationError, ImageError, RestyleError
from restyle._input.imaging import ImageInput, load_photo
from restyle._input.limits import FORMAT_NAMES, PHOTO_SUFFIXES, WORKING_SIDE
from restyle._input.photo import Photo
from restyle._types import PhotoRole

__all__ = [
    "ITEM_MAX_BYTES",
    "ITEM_MAX_PHOTOS",
    "ITEM_MAX_PIXEL_BYTES",
    "Item",
    "LoadedItem",
    "as_item",
    "is_photo_file",
    "load_item",
    "photo_files",
]

#: Most photos one item may have.
ITEM_MAX_PHOTOS = 12
#: Most bytes of photo files one item may hold in all (each photo has its own
#: bound too, :data:`~restyle._input.limits.DEFAULT_MAX_BYTES`).
ITEM_MAX_BYTES = 120 * 1024 * 1024
#: Most bytes of decoded pixels one item holds: each photo is kept at most
#: :data:`WORKING_SIDE` a side, in RGB.
ITEM_MAX_PIXEL_BYTES = ITEM_MAX_PHOTOS * WORKING_SIDE * WORKING_SIDE * 3

_ROLE_WORDS = ", ".join(role.value for role in PhotoRole)


def _role(value: object, where: str) -> PhotoRole | None:
    if value is None or isinstance(value, PhotoRole):
        return value
    if isinstance(value, str):
        try:
            return PhotoRole(value.strip().lower())
        except ValueError:
            pass
    raise ConfigurationError(f"{where} must be one of {_ROLE_WORDS} or None, got {value!r}")


@dataclass(frozen=True, slots=True, init=False)
class Item:
    """The photos of one item, each with the role it shows when known.

    ``Item("front.jpg", "tag.jpg", "label.jpg")`` lets restyle find each
    photo's role; ``roles=["whole", "tag", "label"]`` (or
    :class:`~restyle.PhotoRole` values, None where unknown) gives them. A photo
    is anything ``analyze`` takes (a path, bytes, a file object such as a web
    form's upload, a PIL image, a :class:`~restyle.Photo`). At most
    :data:`ITEM_MAX_PHOTOS` photos; :meth:`from_folder` makes one from a folder
    and :meth:`from_roles` from a mapping of photo to role.
    """

    photos: tuple[ImageInput | Photo, ...]
    roles: tuple[PhotoRole | None, ...]

    def __init__(self, *photos: ImageInput | Photo,
                 roles: Sequence[PhotoRole | str | None] | None = None) -> None:
        if len(photos) == 1 and isinstance(photos[0], (list, tuple)):
            raise ConfigurationError("pass an item's photos one by one: Item(*photos)")
        if not photos:
            raise ConfigurationError("an item needs at least one photo")
        if len(photos) > ITEM_MAX_PHOTOS:
            raise ConfigurationError(
                f"an item may have at most {ITEM_MAX_PHOTOS} photos, got {len(photos)}")
        for photo in photos:
            if isinstance(photo, Item):
                raise ConfigurationError("an item's photos cannot be items")
        if roles is None:
            checked: tuple[PhotoRole | None, ...] = (None,) * len(photos)
        else:
            if isinstance(roles, (str, bytes)) or not isinstance(roles, Sequence):
                raise ConfigurationError("roles must be a list with one role per photo")
            if len(roles) != len(photos):
                raise ConfigurationError(
                    f"roles must give one role per photo: {len(photos)} photos, "
                    f"{len(roles)} roles")
            checked = tuple(_role(r, f"roles[{i}]") for i, r in enumerate(roles))
        object.__setattr__(self, "photos", tuple(photos))
        object.__setattr__(self, "roles", checked)

    def __repr__(self) -> str:
        shown = [p if isinstance(p, (str, os.PathLike)) else type(p).__name__
                 for p in self.photos]
        roles = [r and r.value for r in self.roles]
        return f"Item({len(self.photos)} photos: {shown!r}, roles={roles!r})"

    def __len__(self) -> int:
        return len(self.photos)

    @classmethod
    def from_roles(cls, photos: Mapping[ImageInput, PhotoRole | str | None]) -> Item:
        """An item from ``{photo: role}``, in the mapping's order."""
        return cls(*photos, roles=list(photos.values()))

    @classmethod
    def from_folder(cls, folder: str | os.PathLike[str]) -> Item:
        """The photos of ``folder`` (not its sub-folders), in name order, as one
        item whose roles restyle finds."""
        path = Path(folder).expanduser()
        if not path.is_dir():
            raise ConfigurationError(f"{path} is not a folder")
        files = photo_files(path)
        if not files:
            raise ConfigurationError(f"no {FORMAT_NAMES} files in {path}")
        return cls(*(path / name for name in files))


def is_photo_file(path: Path) -> bool:
    """Whether ``path`` is a file whose suffix names a photo format."""
    return path.suffix.lower() in PHOTO_SUFFIXES and path.is_file()


def photo_files(folder: str | os.PathLike[str], *, recursive: bool = False) -> list[Path]:
    """The photos in ``folder`` (and its subfolders when ``recursive``),
    relative to it, sorted by name; none when it holds none.

    Hidden files and folders are left out: they are a system's or a tool's
    (``._photo.jpg`` from macOS, ``.thumbnails/``), not the user's photos.
    """
    found: list[Path] = []
    for root, folders, files in os.walk(folder):
        folders[:] = [f for f in folders if not f.startswith(".")] if recursive else []
        base = Path(root).relative_to(folder)
        found += [base / name for name in files
                  if not name.startswith(".") and is_photo_file(Path(root, name))]
    return sorted(found)


@dataclass(frozen=True, slots=True)
class LoadedItem:
    """An item's photos read and decoded, each placed (index and given role),
    and why each photo that could not be read could not."""

    photos: tuple[Photo, ...]
    problems: tuple[str, ...]


def _name(image: object, index: int) -> str:
    if isinstance(image, (str, os.PathLike)):
        return f"photo {index + 1} ({Path(os.fsdecode(image)).name})"
    return f"photo {index + 1}"


def load_item(item: Item, *, deadline: float | None) -> LoadedItem:
    """Read and decode every photo of ``item`` through the gate by ``deadline``.

    A photo that cannot be read is reported in ``problems`` and the others are
    kept; when none can be read, the first photo's ImageError is raised (the
    item's only error when it has one photo). The photo files together may
    hold at most :data:`ITEM_MAX_BYTES`: a photo past that is refused.
    """
    photos: list[Photo] = []
    problems: list[str] = []
    first_error: RestyleError | None = None
    total = 0
    for index, (image, role) in enumerate(zip(item.photos, item.roles, strict=True)):
        try:
            if deadline is not None and time.monotonic() >= deadline:
                raise ImageError("no time was left to read it")
            photo = load_photo(image, deadline=deadline)
            total += len(photo.data) if photo.data is not None else photo.width * photo.height * 3
            if total > ITEM_MAX_BYTES:
                raise ImageError(f"the item's photos are over {ITEM_MAX_BYTES // 2**20} MB in all")
        except RestyleError as exc:
            first_error = first_error or exc
            problems.append(f"{_name(image, index)} could not be read: {exc}")
            continue
        photos.append(photo.placed(index, role))
    if not photos:
        assert first_error is not None
        if len(item.photos) == 1:
            raise first_error
        raise ImageError(f"none of the item's {len(item.photos)} photos could be read: "
                         + "; ".join(problems))
    return LoadedItem(photos=tuple(photos), problems=tuple(problems))


def as_item(value: object) -> Item:
    """``value`` as an item: an Item, or one photo as an item of one."""
    if isinstance(value, Item):
        return value
    if isinstance(value, (list, tuple)) and not isinstance(value, (bytes, bytearray)):
        raise ConfigurationError(
            "a list of photos is ambiguous: wrap the photos of one item in "
            "restyle.Item(*photos), or analyze several items with analyze_many")
    return Item(value)  # type: ignore[arg-type]


"""Files named by untrusted input, opened only inside their folder, and never
blocking: the one way the input gate opens a local file.

A listings file names its images and a recording names its files: either may
name a path outside the folder it belongs to, a link leading out of it, a
named pipe that would block a read forever, or a device. One way to open
such a file serves both: :func:`resolve_inside` resolves the name (links
followed) and checks it lies inside the folder, :func:`open_regular` opens
what was resolved without following a link swapped in since and without
blocking, and keeps it only if it is a regular file, and :func:`read_capped`
reads it within a size limit. Catalog ingestion resolves when it validates a
row and opens when it loads the image (another stage, maybe another
machine); a recording does both at once with :func:`open_inside`.

Each refusal is an :class:`Unsafe` naming the problem; callers word it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO, Literal

__all__ = ["Problem", "Unsafe", "open_inside", "open_regular", "read_capped", "resolve_inside"]

#: Why a file was refused: its name cannot be resolved, it lies outside the
#: folder, it cannot be opened, it cannot be read, it is not a regular file
#: (a folder, FIFO, device or socket), or it is over the size limit.
Problem = Literal["unresolvable", "outside", "unopenable", "unreadable", "irregular",
                  "too large"]

# Read only; never block on a FIFO or device; binary on Windows. A file a
# folder names also never follows a last link (the name was resolved already).
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
               | getattr(os, "O_BINARY", 0))
_NO_FOLLOW = getattr(os, "O_NOFOLLOW", 0)
#: What a path that is not a regular file is, in words.
_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class Unsafe(Exception):
    """A file refused, and why: ``problem``, and the error behind it if any
    (``cause``; ``reason`` is the OS's words for it)."""

    def __init__(self, problem: Problem, cause: BaseException | None = None, *,
                 kind: str | None = None) -> None:
        super().__init__(problem if cause is None else f"{problem}: {cause}")
        self.problem: Problem = problem
        self.cause = cause
        #: For an ``"irregular"`` file: what it is ("a named pipe", "a directory", ...).
        self.kind = kind

    @property
    def reason(self) -> str:
        """The cause as the OS words it (``strerror``), else the cause's text."""
        return str(getattr(self.cause, "strerror", None) or self.cause or self.problem)


def resolve_inside(root: Path, name: str | Path, *, base: Path | None = None) -> Path:
    """``name`` resolved, links followed, relative to ``base`` (default:
    ``root``) unless absolute, if it lies inside ``root`` and is not ``root``
    itself; else :class:`Unsafe` (``"unresolvable"`` when ``root`` does not
    exist or a part of the name cannot be resolved, ``"outside"``)."""
    try:
        top = root.resolve(strict=True)
        path = Path(name)
        resolved = (path if path.is_absolute() else (base or top) / path).resolve()
        inside = resolved != top and resolved.is_relative_to(top)
    except (OSError, RuntimeError, ValueError) as exc:
        raise Unsafe("unresolvable", exc) from exc
    if not inside:
        raise Unsafe("outside")
    return resolved


def open_regular(path: str | bytes | Path, *, follow_links: bool = False) -> BinaryIO:
    """``path`` opened for reading without blocking (and without following a
    last link, unless ``follow_links``: a user's own photo may be a link), if
    it is a regular file; else :class:`Unsafe`."""
    flags = _OPEN_FLAGS if follow_links else _OPEN_FLAGS | _NO_FOLLOW

    def opener(name: str, given: int) -> int:
        return os.open(name, given | flags)

    try:
        handle = open(path, "rb", opener=opener)  # noqa: SIM115
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the name
        raise Unsafe("unopenable", exc) from exc
    try:
        mode = os.fstat(handle.fileno()).st_mode
    except OSError as exc:
        handle.close()
        raise Unsafe("unreadable", exc) from exc
    if not stat.S_ISREG(mode):
        handle.close()
        kind = next((name for test, name in _KINDS if test(mode)), "not a file")
        raise Unsafe("irregular", kind=kind)
    return handle


def open_inside(root: Path, name: str | Path, *, base: Path | None = None) -> BinaryIO:
    """The regular file ``name`` inside ``root`` (see :func:`resolve_inside`),
    opened as :func:`open_regular` opens it."""
    return open_regular(resolve_inside(root, name, base=base))


def read_capped(handle: BinaryIO, limit: int) -> bytes:
    """All of ``handle``, or :class:`Unsafe` (``"too large"``) when it is over
    ``limit`` bytes: refused before reading when the file says so, and read
    with a buffer sized by the file, not by the limit (one byte more tells a
    file that grew)."""
    try:
        size = os.fstat(handle.fileno()).st_size
        if size > limit:
            raise Unsafe("too large")
        data = handle.read(size + 1)
    except OSError as exc:
        raise Unsafe("unreadable", exc) from exc
    if len(data) > limit:
        raise Unsafe("too large")
    return data

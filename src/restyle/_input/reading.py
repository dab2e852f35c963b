"""Reading a photo's bytes: paths opened without blocking (a regular file or
nothing), file objects and buffers read to a cap, and :func:`within`, the
deadline thread reading and decoding run on.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from restyle._errors import ImageError
from restyle._input.confined import Unsafe, open_regular
from restyle._input.confined import read_capped as read_file_capped

__all__ = ["checked_path", "read_capped", "read_path", "too_large", "within"]

_READ_CHUNK = 1024 * 1024
_T = TypeVar("_T")


def _megabytes(size: int) -> str:
    return f"{size // (1024 * 1024)} MiB" if size >= 1024 * 1024 else f"{size:,} bytes"


def too_large(what: str, max_bytes: int) -> ImageError:
    return ImageError(f"{what} is larger than restyle's limit of {_megabytes(max_bytes)}")


def read_capped(read: Callable[[int], Any], max_bytes: int, what: str) -> bytes:
    """Everything ``read`` gives until the end, a chunk at a time, refused as soon
    as it passes ``max_bytes``; a short read is not taken for the end."""
    buf = bytearray()
    while True:
        chunk = read(min(_READ_CHUNK, max_bytes + 1 - len(buf)))
        if chunk is None:
            raise ImageError(f"{what} cannot be read: its file object is non-blocking")
        if not isinstance(chunk, (bytes, bytearray)):
            raise ImageError(f"{what} file object must be opened in binary mode")
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > max_bytes:
            raise too_large(what, max_bytes)


def checked_path(source: str | os.PathLike[str]) -> str | bytes:
    """The path as the OS takes it; a path with a NUL byte (which no file has) is an ImageError."""
    raw = os.fspath(source)
    if ("\0" in raw) if isinstance(raw, str) else (b"\0" in raw):
        raise ImageError(f"photo path {os.fsdecode(raw)!r} contains a NUL byte")
    return raw


def read_path(raw: str | bytes, max_bytes: int) -> bytes:
    """The bytes of the regular file at ``raw`` (links followed: a user's own
    photo may be one), opened through the gate's one open
    (:func:`~restyle._input.confined.open_regular`): without blocking, so a
    named pipe with no writer or a device is refused at once."""
    path = os.fsdecode(raw)
    try:
        handle = open_regular(raw, follow_links=True)
    except Unsafe as exc:
        cause = exc.cause
        if isinstance(cause, FileNotFoundError):
            raise ImageError(f"photo not found: {path}") from cause
        if isinstance(cause, IsADirectoryError) or exc.kind == "a directory":
            raise ImageError(f"photo path is a directory: {path}") from cause
        if exc.problem == "irregular":
            raise ImageError(f"photo {path} is {exc.kind}, not a regular file") from None
        if isinstance(cause, ValueError):  # a name the file system cannot encode
            raise ImageError(f"cannot read photo {path!r}: {cause}") from cause
        raise ImageError(f"cannot read photo {path}: {exc.reason}") from cause
    what = f"photo {os.path.basename(path)!r}"
    with handle:
        try:
            return read_file_capped(handle, max_bytes)
        except Unsafe as exc:
            if exc.problem == "too large":
                raise too_large(what, max_bytes) from None
            raise ImageError(f"cannot read photo {path}: {exc.reason}") from exc.cause


def within(deadline: float | None, action: str, work: Callable[[], _T]) -> _T:
    """``work()`` on a daemon thread, waited for until ``deadline``: an
    ImageError then, and the thread is abandoned (it holds nothing another
    decode waits for without a deadline, and its decode ends by restyle's
    limits). Without a deadline, ``work()`` on this thread."""
    if deadline is None:
        return work()
    start = time.monotonic()
    budget = deadline - start
    if not budget > 0:
        raise ImageError(f"photo was not {action}: no time was left")
    done = threading.Event()
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, work()))
        except BaseException as exc:  # handed to the caller
            outcome.append((False, exc))
        finally:
            done.set()

    threading.Thread(target=run, daemon=True, name="restyle-decode").start()
    if not done.wait(budget):
        raise ImageError(f"photo was not {action} within {budget:.3g} s")
    ok, value = outcome[0]
    if ok:
        return value  # type: ignore[no-any-return]
    raise value

"""Reading a photo's bytes: paths opened without blocking (a regular file or
nothing), file objects and buffers read to a cap, and :func:`within`, the
deadline thread reading and decoding run on.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from restyle._errors import ImageError

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


_NOT_REGULAR = (
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
               | getattr(os, "O_BINARY", 0))


def checked_path(source: str | os.PathLike[str]) -> str | bytes:
    """The path as the OS takes it; a path with a NUL byte (which no file has) is an ImageError."""
    raw = os.fspath(source)
    if ("\0" in raw) if isinstance(raw, str) else (b"\0" in raw):
        raise ImageError(f"photo path {os.fsdecode(raw)!r} contains a NUL byte")
    return raw


def read_path(raw: str | bytes, max_bytes: int) -> bytes:
    """The bytes of the regular file at ``raw``. The file is opened without
    blocking, so a named pipe with no writer or a device is refused at once."""
    path = os.fsdecode(raw)
    try:
        fd = os.open(raw, _OPEN_FLAGS)
    except FileNotFoundError as exc:
        raise ImageError(f"photo not found: {path}") from exc
    except IsADirectoryError as exc:
        raise ImageError(f"photo path is a directory: {path}") from exc
    except OSError as exc:
        raise ImageError(f"cannot read photo {path}: {exc.strerror or exc}") from exc
    except ValueError as exc:  # a name the file system cannot encode
        raise ImageError(f"cannot read photo {path!r}: {exc}") from exc
    try:
        status = os.fstat(fd).st_mode
        if stat.S_ISDIR(status):
            raise ImageError(f"photo path is a directory: {path}")
        if not stat.S_ISREG(status):
            kind = next((name for test, name in _NOT_REGULAR if test(status)), "not a file")
            raise ImageError(f"photo {path} is {kind}, not a regular file")
        what = f"photo {os.path.basename(path)!r}"
        if os.fstat(fd).st_size > max_bytes:
            raise too_large(what, max_bytes)
        try:
            return read_capped(lambda size: os.read(fd, size), max_bytes, what)
        except OSError as exc:
            raise ImageError(f"cannot read photo {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


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

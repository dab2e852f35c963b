"""Progress bars for long work: a widget in a notebook, text on a terminal, nothing when piped.

Beside the bars: :func:`status_line`, a line saying what is under way and for
how long (a model loading), and :func:`logging_through_bars`, log lines
written above a bar instead of through it.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

__all__ = ["BarSafeStream", "in_kernel", "logging_through_bars", "progress_bar", "status_line"]

#: Seconds between redraws of a status line.
STATUS_REFRESH = 0.5


def progress_bar(*, total: int | Callable[[], int | None] | None, desc: str, unit: str,
                 enabled: bool | None) -> Any:
    """A tqdm bar; ``enabled=None`` shows it only where someone is watching.

    Someone is watching in a Jupyter kernel (the bar is a widget when ipywidgets
    is installed, else text on stderr, which Jupyter shows too) and when stderr
    is a terminal; output piped to a file or a log stays clean. A ``total``
    that costs something to find (a function) is found only for a bar shown.
    """
    kernel = in_kernel()
    if enabled is None:
        enabled = kernel or _stderr_is_terminal()
    if callable(total):
        total = total() if enabled else None
    if enabled and kernel:
        widget = _widget_tqdm()
        if widget is not None:
            return widget(total=total, desc=desc, unit=unit, leave=False)
    # tqdm.std, never tqdm.auto: in a kernel without ipywidgets, tqdm.auto warns
    # "IProgress not found" and gives a bar that cannot draw.
    from tqdm.std import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False,
                file=sys.stderr)


@contextmanager
def status_line(desc: str, *, enabled: bool | None) -> Iterator[None]:
    """``desc`` and the seconds it has taken, redrawn every :data:`STATUS_REFRESH`
    seconds on a terminal (``enabled=None``: where someone is watching, as
    :func:`progress_bar`), cleared when the work is done."""
    if enabled is None:
        enabled = _stderr_is_terminal()
    if not enabled:
        yield
        return
    from tqdm.std import tqdm

    bar = tqdm(total=None, desc=desc, bar_format="{desc}... {elapsed}", leave=False,
               file=sys.stderr)
    done = threading.Event()

    def redraw() -> None:
        while not done.wait(STATUS_REFRESH):
            bar.refresh()

    thread = threading.Thread(target=redraw, name="restyle status", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        bar.close()


class BarSafeStream:
    """A text stream whose writes clear the progress bars drawn on it first and
    redraw them after: a log line appears above the bar, never through it."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        from tqdm.std import tqdm

        with tqdm.external_write_mode(file=self.stream):
            return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        try:
            return self.stream.isatty()
        except (AttributeError, ValueError):
            return False


@contextmanager
def logging_through_bars(logger: logging.Logger | None = None) -> Iterator[None]:
    """For its length, the stream handlers of ``logger`` (default: the root)
    that write to stderr or stdout write around the progress bars."""
    target = logger or logging.getLogger()
    swapped: list[tuple[logging.StreamHandler[Any], Any]] = []
    for handler in target.handlers:
        if (type(handler) is logging.StreamHandler
                and handler.stream in (sys.stderr, sys.stdout)):
            swapped.append((handler, handler.setStream(BarSafeStream(handler.stream))))
    try:
        yield
    finally:
        for handler, stream in swapped:
            handler.setStream(stream)


def in_kernel() -> bool:
    """Whether this code runs in a Jupyter kernel: IPython's shell with a kernel behind it.

    Only modules already imported are looked at; a terminal IPython has no kernel.
    """
    if "ipykernel" not in sys.modules:
        return False
    get_ipython = getattr(sys.modules.get("IPython"), "get_ipython", None)
    shell = get_ipython() if callable(get_ipython) else None
    return getattr(shell, "kernel", None) is not None


def _stderr_is_terminal() -> bool:
    stream = sys.stderr
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or already closed
        return False


def _widget_tqdm() -> Any:
    """tqdm's notebook widget bar, or None when ipywidgets is missing or too old for it."""
    try:
        if importlib.util.find_spec("ipywidgets") is None:
            return None
    except (ImportError, ValueError):
        return None
    from tqdm import notebook

    return notebook.tqdm if notebook.IProgress is not None else None

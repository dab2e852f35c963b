"""Progress bars for long work: a widget in a notebook, text on a terminal, nothing when piped."""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

__all__ = ["in_kernel", "progress_bar"]


def progress_bar(*, total: int | None, desc: str, unit: str, enabled: bool | None) -> Any:
    """A tqdm bar; ``enabled=None`` shows it only where someone is watching.

    Someone is watching in a Jupyter kernel (the bar is a widget when ipywidgets
    is installed, else text on stderr, which Jupyter shows too) and when stderr
    is a terminal; output piped to a file or a log stays clean.
    """
    kernel = in_kernel()
    if enabled is None:
        enabled = kernel or _stderr_is_terminal()
    if enabled and kernel:
        widget = _widget_tqdm()
        if widget is not None:
            return widget(total=total, desc=desc, unit=unit, leave=False)
    # tqdm.std, never tqdm.auto: in a kernel without ipywidgets, tqdm.auto warns
    # "IProgress not found" and gives a bar that cannot draw.
    from tqdm.std import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False,
                file=sys.stderr)


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

"""Progress bars for long work, shown on stderr only when someone is watching."""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(*, total: int | None, desc: str, unit: str, enabled: bool | None) -> Any:
    """A tqdm bar; ``enabled=None`` shows it only when stderr is a terminal."""
    from tqdm.auto import tqdm

    if enabled is None:
        enabled = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=False)

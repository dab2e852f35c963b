"""The files of a catalog directory: their names, and the temporaries that a
save stopped midway leaves behind (found by check, removed by writers)."""

from __future__ import annotations

import re
from pathlib import Path

from restyle._indexes.chooser import remove_stale_index_temporaries, stale_index_temporaries
from restyle._indexes.flat import remove_stale_temporaries as remove_stale_files
from restyle._indexes.flat import stale_temporaries as stale_files
from restyle._indexes.flat import temporary_pattern

__all__ = ["DB_NAME", "DRAWN_STEM", "INDEX_NAME", "REJECTED_NAME", "REJECTED_STEM",
           "remove_stale_temporaries", "stale_temporaries"]

DB_NAME = "catalog.sqlite"
INDEX_NAME = "vectors.faiss"
REJECTED_NAME = "rejected.jsonl"
REJECTED_STEM = "rejected"  # its temporaries are .rejected.XXXXXXXX.jsonl
#: The rows a build draws for its index's training: .drawn.XXXXXXXX.jsonl (or .csv).
DRAWN_STEM = "drawn"


def _temporary_patterns() -> list[re.Pattern[str]]:
    return [temporary_pattern(REJECTED_STEM, ".jsonl"), temporary_pattern(DRAWN_STEM, ".jsonl"),
            temporary_pattern(DRAWN_STEM, ".csv")]


def stale_temporaries(directory: Path) -> list[Path]:
    """Temporary files that restyle's own atomic writes (the index, its shards,
    ``rejected.jsonl``, a build's drawn rows) left in ``directory`` when stopped midway, and that no
    live writer holds. Nothing is written."""
    return [*stale_index_temporaries(directory / INDEX_NAME),
            *stale_files(directory, _temporary_patterns())]


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Remove :func:`stale_temporaries` (a writer's job: opening for write,
    repair, every save of the index)."""
    return [*remove_stale_index_temporaries(directory / INDEX_NAME),
            *remove_stale_files(directory, _temporary_patterns())]

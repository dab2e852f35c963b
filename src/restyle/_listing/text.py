"""Text as a marketplace takes it: NFC, no control or invisible characters,
one space between words, and counted as eBay counts a title's characters."""

from __future__ import annotations

import re
import unicodedata

__all__ = ["clean", "length", "word_key"]

_SPACES = re.compile(r"\s+")
_EDGE_PUNCTUATION = "\"'.,;:!?()[]{}-_/\\*"


def clean(text: str | None) -> str:
    """``text`` in NFC with every control, format, private-use, surrogate and
    unassigned character dropped and runs of white space made one space."""
    if not text:
        return ""
    text = unicodedata.normalize("NFC", str(text))
    kept = "".join(
        " " if ch.isspace() else ch for ch in text
        if ch.isspace() or not unicodedata.category(ch).startswith("C")
    )
    return _SPACES.sub(" ", kept).strip()


def length(text: str) -> int:
    """Characters as a marketplace counts them, on the safe side: UTF-16 code
    units (a character outside the Basic Multilingual Plane, an emoji, counts
    two), so a text within a limit here is within it however it is counted."""
    return len(text.encode("utf-16-le")) // 2


def word_key(word: str) -> str:
    """What makes two words the same word: case-folded, without the
    punctuation at their ends."""
    return unicodedata.normalize("NFKC", word).casefold().strip(_EDGE_PUNCTUATION)

"""Rejections as written to ``rejected.jsonl``, and the short, JSON-safe
preview of a row they keep (a row may be huge, or hold anything)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from restyle._ingestion.rows import Rejection

__all__ = ["clip", "preview", "rejection_json"]

# Rejections keep a preview of the row, not the row: it may be huge.
_PREVIEW_CHARS = 200
_PREVIEW_KEYS = 32


def rejection_json(rejection: Rejection) -> str:
    """One line of ``rejected.jsonl``: strict JSON (no NaN or Infinity), ASCII only."""
    return json.dumps({"row": rejection.row, "reason": rejection.reason,
                       "data": preview(rejection.data)}, allow_nan=False)


def clip(text: str, limit: int = _PREVIEW_CHARS) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def preview(data: Mapping[str, Any], depth: int = 0) -> dict[str, Any]:
    """A short, JSON-safe copy of a row for a rejection: values clipped, numbers
    that are not finite written as strings, at most a few nested levels."""
    out: dict[str, Any] = {}
    for i, (key, value) in enumerate(data.items()):
        if i == _PREVIEW_KEYS:
            out["..."] = f"{len(data) - _PREVIEW_KEYS} more columns"
            break
        out[_safe_text(clip(str(key), 80))] = _preview_value(value, depth)
    return out


def _preview_value(value: object, depth: int) -> object:
    if value is None or isinstance(value, (bool, int)):
        if isinstance(value, int) and value.bit_length() > 53:
            # Beyond what JSON readers keep exactly (and str() refuses the largest).
            return f"an integer of {value.bit_length()} bits"
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, str):
        return _safe_text(clip(value))
    if isinstance(value, bytes):
        return _safe_text(clip(value.decode("utf-8", "replace")))
    if isinstance(value, Mapping) and depth < 2:
        return preview(value, depth + 1)
    if isinstance(value, (list, tuple)) and depth < 2:
        items = [_preview_value(v, depth + 1) for v in value[:_PREVIEW_KEYS]]
        return items + ([f"... {len(value) - _PREVIEW_KEYS} more"]
                        if len(value) > _PREVIEW_KEYS else [])
    return _safe_text(clip(repr(value)))


def _safe_text(text: str) -> str:
    # Lone surrogates (from JSON escapes) cannot be written as UTF-8.
    return text.encode("utf-8", "replace").decode("utf-8")


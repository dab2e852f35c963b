"""The run trace: what each stage of one analysis returned, as the Engine saw
it, and writing it to disk as a recording (``Engine.analyze(photo,
record=DIR)``). Reading a recording back and replaying it is evaluation's
(:mod:`restyle._evaluation.recording`).

A recording directory holds:

- ``recording.json``: the Engine's settings, the listings the search found
  (with the relaxation step and rank of each), the warnings of each stage
  and where each vector is in ``vectors.npy``;
- ``analysis.json``: the Analysis;
- ``vectors.npy``: the photo's vector, then the other photos' of an item,
  then the comps' image vectors;
- ``photo.jpg`` (or ``.png``, ``.webp``): the photo that shows the item
  whole, and ``photo-N.jpg`` each other photo of an item (N its place).

Every text is redacted before it is written: no key or token of the cloud
components reaches the disk.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from restyle._errors import RestyleError
from restyle._input.imaging import Photo
from restyle._pipeline.search import Found
from restyle._secrets import redact
from restyle._types import Analysis
from restyle._version import __version__

__all__ = [
    "ANALYSIS_NAME",
    "FORMAT",
    "PHOTO_SUFFIXES",
    "RECORDING_NAME",
    "VECTORS_NAME",
    "Trace",
    "write_recording",
]

FORMAT = 1
RECORDING_NAME = "recording.json"
ANALYSIS_NAME = "analysis.json"
VECTORS_NAME = "vectors.npy"
PHOTO_SUFFIXES = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Trace:
    """What the stages of one analysis returned, as the Engine saw them."""

    photo: Photo
    analysis: Analysis
    photos: tuple[Photo, ...] = ()
    found: tuple[Found, ...]
    search_warnings: tuple[str, ...]
    rerank_warnings: tuple[str, ...]
    embedding: np.ndarray
    vectors: Mapping[str, np.ndarray]
    settings: Mapping[str, Any]


# -- writing -----------------------------------------------------------------------


def _redacted(value: Any) -> Any:
    """``value`` (plain JSON types) with every string redacted; image data is left
    as it is (base64 is no text, and a redaction would only break the picture)."""
    if isinstance(value, str):
        return value if value.startswith("data:image/") else redact(value)
    if isinstance(value, dict):
        return {redact(str(k)): _redacted(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redacted(v) for v in value]
    return value


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(_redacted(data), indent=2, ensure_ascii=False) + "\n",
                    encoding="utf-8")


def write_recording(directory: str | os.PathLike[str], trace: Trace) -> Path:
    """Write ``trace`` into ``directory`` (created if needed); returns the directory."""
    target = Path(directory).expanduser()
    if target.exists() and not target.is_dir():
        raise RestyleError(f"cannot record into {target}: it is a file")
    try:
        _write(target, trace, __version__)
    except OSError as exc:
        raise RestyleError(f"cannot record into {target}: {exc.strerror or exc}") from exc
    return target


def _photo_file(photo: Photo, stem: str) -> tuple[str, bytes]:
    suffix = PHOTO_SUFFIXES.get(photo.format) if photo.data is not None else None
    if suffix is not None and photo.data is not None:
        return f"{stem}{suffix}", photo.data
    return f"{stem}.png", photo.encoded(fmt="PNG")  # a PIL image given in code: losslessly


def _write(target: Path, trace: Trace, version: str) -> None:
    target.mkdir(parents=True, exist_ok=True)
    photo = trace.photo
    photo_name, photo_bytes = _photo_file(photo, "photo")
    others = [p for p in trace.photos if p.index != photo.index]
    keys = [key for key in (c.listing.key for c in trace.analysis.comps) if key in trace.vectors]
    rows = [np.atleast_2d(np.asarray(trace.embedding, dtype=np.float32))[0]]
    photos: list[dict[str, Any]] = []
    for other in others:
        name, data = _photo_file(other, f"photo-{other.index}")
        (target / name).write_bytes(data)
        model_id = trace.analysis.model_id
        vector = None if model_id is None else other.vector(model_id)
        photos.append({"file": name, "sha256": other.sha256, "index": other.index,
                       "role": other.role.value if other.role else None,
                       "vector": None if vector is None else len(rows)})
        if vector is not None:
            rows.append(np.asarray(vector, dtype=np.float32))
    first_comp = len(rows)
    rows += [np.asarray(trace.vectors[key], dtype=np.float32) for key in keys]
    np.save(target / VECTORS_NAME, np.stack(rows), allow_pickle=False)
    (target / photo_name).write_bytes(photo_bytes)
    _write_json(target / ANALYSIS_NAME, trace.analysis.to_dict())
    _write_json(target / RECORDING_NAME, {
        "format": FORMAT,
        "restyle": version,
        "recorded_at": dt.datetime.now(dt.timezone.utc).isoformat(),
        "engine": dict(trace.settings),
        "photo": {"file": photo_name, "sha256": photo.sha256, "index": photo.index,
                  "role": photo.role.value if photo.role else None},
        "photos": photos,
        "found": [{"listing": f.listing.to_dict(), "step": f.step, "step_index": f.step_index,
                   "rank": f.rank} for f in trace.found],
        "warnings": {"search": list(trace.search_warnings),
                     "rerank": list(trace.rerank_warnings)},
        "vectors": {"file": VECTORS_NAME, "photo": 0,
                    "comps": {key: row for row, key in enumerate(keys, start=first_comp)}},
    })



"""Reading a recording back as untrusted input: each file it names opened only
inside its folder and read within a size limit, each field checked, and
anything else one :class:`~restyle.RecordingError` naming the file and the
field."""

from __future__ import annotations

import json
import math
import os
import tokenize
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from restyle._errors import RecordingError
from restyle._input.confined import Unsafe, open_inside, read_capped
from restyle._pipeline.search import Found
from restyle._pipeline.trace import ANALYSIS_NAME
from restyle._types import Analysis, Listing

__all__ = [
    "CONVERSION_ERRORS",
    "MAX_JSON_BYTES",
    "MAX_VECTOR_BYTES",
    "MAX_VECTOR_DIM",
    "Checked",
    "clip",
    "engine_settings",
    "found_entry",
    "open_recorded",
    "read_analysis",
    "read_json",
    "read_vectors",
    "shown",
]

#: Largest recording.json, and largest analysis.json, a recording may hold. A
#: recording of 30 comps takes about 30 KB of each; 4 MiB holds thousands of
#: listings. JSON costs up to about 25 bytes of memory a byte while it is
#: parsed (a file of empty objects), so reading either stays under about
#: 105 MB whatever the file holds.
MAX_JSON_BYTES = 4 * 1024 * 1024
#: Largest vectors.npy data: 8,192 rows of 1,024 float32 numbers. The header is
#: checked against it, and against the file's size, before anything is allocated.
MAX_VECTOR_BYTES = 32 * 1024 * 1024
#: Most numbers in one vector.
MAX_VECTOR_DIM = 8192


def shown(value: object) -> str:
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class Checked:
    """Reads typed fields out of one JSON document, naming a wrong one by its
    path (``engine.reranker.cutoff``) and the file it is in."""

    def __init__(self, directory: Path, file: str) -> None:
        self.directory = directory
        self.file = file

    def fail(self, where: str, wanted: str, value: object) -> RecordingError:
        field_name = f" field {where}" if where else ""
        return RecordingError(f"the recording in {self.directory} is invalid: {self.file}"
                              f"{field_name} must be {wanted}, got {shown(value)}")

    def mapping(self, value: object, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, "an object", value)
        return value

    def member(self, data: Mapping[str, Any], key: str, where: str) -> Any:
        if key not in data:
            raise RecordingError(f"the recording in {self.directory} is invalid: {self.file} "
                                 f"has no field {_joined(where, key)}")
        return data[key]

    def text(self, value: object, where: str, *, empty: bool = True) -> str:
        if not isinstance(value, str) or (not empty and not value):
            raise self.fail(where, "a text" if empty else "a non-empty text", value)
        return value

    def texts(self, value: object, where: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(where, "a list of texts", value)
        return tuple(self.text(v, f"{where}[{i}]") for i, v in enumerate(value))

    def whole(self, value: object, where: str, *, minimum: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(where, f"a whole number of at least {minimum}", value)
        return value

    def number(self, value: object, where: str, *, low: float | None = None,
               high: float | None = None, positive: bool = False) -> float:
        if positive:
            wanted = "a positive number"
        elif low is not None and high is not None:
            wanted = f"a number from {low:g} to {high:g}"
        else:
            wanted = "a finite number"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.fail(where, wanted, value)
        try:
            number = float(value)
        except OverflowError:  # an integer past any float
            raise self.fail(where, wanted, value) from None
        if not (math.isfinite(number) and (not positive or number > 0)
                and (low is None or number >= low) and (high is None or number <= high)):
            raise self.fail(where, wanted, value)
        return number

    def flag(self, value: object, where: str) -> bool:
        if not isinstance(value, bool):
            raise self.fail(where, "true or false", value)
        return value


def _joined(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


# -- reading files inside the recording ------------------------------------------------
# The confinement catalog ingestion gives local images (restyle._input.confined):
# resolve, check containment, open what was resolved without following a link
# swapped in since, and never block on a FIFO or a device.


def open_recorded(folder: Path, name: object, what: str) -> BinaryIO:
    """The file ``name`` (as the recording gives it, relative to ``folder``)
    opened for reading, if it is a regular file inside ``folder``: a name or a
    link leading outside, a FIFO, a device or a folder is a RecordingError."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise RecordingError(f"the recording in {folder} is invalid: {what} must be named by "
                             f"a file name, got {shown(name)}")
    named = f"{what} {shown(name)}"
    try:
        return open_inside(folder, name)
    except Unsafe as exc:
        if exc.problem == "outside":
            raise RecordingError(f"{named} is outside the recording in {folder}: a "
                                 "recording reads only files inside its folder") from exc
        problem = {
            "unresolvable": f"cannot be found: {exc.cause}",
            "unopenable": f"cannot be opened: {exc.reason}",
            "unreadable": f"cannot be read: {exc.reason}",
        }.get(exc.problem, "is not a regular file")
        raise RecordingError(f"{named} of the recording in {folder} {problem}") from exc


def _read_capped(handle: BinaryIO, limit: int, what: str, folder: Path) -> bytes:
    """All of ``handle``, refused before reading when the file is over ``limit`` bytes."""
    try:
        return read_capped(handle, limit)
    except Unsafe as exc:
        if exc.problem == "too large":
            raise RecordingError(f"{what} of the recording in {folder} is larger than the "
                                 f"{limit // (1024 * 1024)} MiB limit") from exc
        raise RecordingError(f"{what} of the recording in {folder} cannot be read: "
                             f"{exc.reason}") from exc


def read_json(folder: Path, name: str) -> Any:
    with open_recorded(folder, name, name) as handle:
        data = _read_capped(handle, MAX_JSON_BYTES, name, folder)
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RecordingError(f"{name} of the recording in {folder} is not JSON: "
                             f"{clip(str(exc))}") from exc


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number JSON allows")


def clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def read_vectors(folder: Path, name: object) -> np.ndarray:
    """The rows of a ``.npy`` file inside ``folder``: its header is read and
    checked against the file's real size and :data:`MAX_VECTOR_BYTES` before
    anything is allocated; only finite float32 rows are accepted."""
    from numpy.lib import format as npy

    what = "the vectors file"
    with open_recorded(folder, name, what) as handle:
        def bad(reason: str) -> RecordingError:
            return RecordingError(f"{what} {shown(name)} of the recording in {folder} {reason}")

        try:
            size = os.fstat(handle.fileno()).st_size
            if size > MAX_VECTOR_BYTES + 64 * 1024:
                raise bad(f"is larger than the {MAX_VECTOR_BYTES // (1024 * 1024)} MiB limit")
            version = npy.read_magic(handle)
            if version == (1, 0):
                shape, fortran, dtype = npy.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, fortran, dtype = npy.read_array_header_2_0(handle)
            else:
                raise bad(f"is a .npy file of version {version}, not 1.0 or 2.0")
            start = handle.tell()
        except (ValueError, TypeError, SyntaxError, EOFError, RecursionError,
                tokenize.TokenError) as exc:  # what numpy's header parser raises
            raise bad(f"is not a .npy file: {clip(str(exc))}") from exc
        except OSError as exc:
            raise bad(f"cannot be read: {exc.strerror or exc}") from exc
        if dtype.hasobject or dtype.kind != "f" or dtype.itemsize != 4:
            raise bad(f"must hold float32 numbers, not {clip(str(dtype))}")
        if len(shape) != 2 or shape[0] < 1 or not 1 <= shape[1] <= MAX_VECTOR_DIM:
            raise bad(f"must hold rows of 1 to {MAX_VECTOR_DIM} numbers, not the shape "
                      f"{clip(str(shape))}")
        claimed = shape[0] * shape[1] * dtype.itemsize
        if claimed > MAX_VECTOR_BYTES:
            raise bad(f"claims {shape[0]} rows of {shape[1]}: more than the "
                      f"{MAX_VECTOR_BYTES // (1024 * 1024)} MiB limit")
        if claimed != size - start:
            raise bad(f"claims {shape[0]} rows of {shape[1]} ({claimed} bytes) but holds "
                      f"{size - start} bytes of them")
        try:
            data = handle.read(claimed + 1)
        except OSError as exc:
            raise bad(f"cannot be read: {exc.strerror or exc}") from exc
    if len(data) != claimed:
        raise bad("changed while it was read")
    rows = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    rows = rows.astype(np.float32)
    if not np.isfinite(rows).all():
        raise bad("holds numbers that are not finite")
    return rows


def engine_settings(check: Checked, value: object) -> dict[str, Any]:
    """The recorded Engine settings, each one a replay uses checked."""
    engine = check.mapping(value, "engine")
    for key in ("experts", "marketplaces"):
        if key in engine:
            check.texts(engine[key], f"engine.{key}")
    for key in ("synthesizer", "encoder"):
        if key in engine:
            check.text(engine[key], f"engine.{key}")
    if engine.get("model_id") is not None:
        check.text(engine["model_id"], "engine.model_id")
    for key in ("comps_wanted", "max_comps", "minimum_price_comps"):
        if key in engine:
            check.whole(engine[key], f"engine.{key}", minimum=1)
    if "price_half_life_days" in engine:
        check.number(engine["price_half_life_days"], "engine.price_half_life_days",
                     positive=True)
    if "reranker" in engine:
        reranker = check.mapping(engine["reranker"], "engine.reranker")
        if "text_weight" in reranker:
            check.number(reranker["text_weight"], "engine.reranker.text_weight",
                         low=0.0, high=1.0)
        if "duplicate_threshold" in reranker:
            check.number(reranker["duplicate_threshold"], "engine.reranker.duplicate_threshold")
        if "cutoff" in reranker:
            check.flag(reranker["cutoff"], "engine.reranker.cutoff")
    return dict(engine)


#: What rebuilding restyle's own values from a recording's fields may raise.
CONVERSION_ERRORS = (TypeError, ValueError, KeyError, AttributeError, IndexError,
                      ArithmeticError, RecursionError)


def found_entry(check: Checked, value: object, where: str) -> Found:
    entry = check.mapping(value, where)
    listing = check.mapping(check.member(entry, "listing", where), f"{where}.listing")
    try:
        rebuilt = Listing.from_dict(listing)
    except CONVERSION_ERRORS as exc:
        raise check.fail(f"{where}.listing", f"a listing ({clip(str(exc))})",
                         listing) from exc
    return Found(
        listing=rebuilt,
        step=check.text(check.member(entry, "step", where), f"{where}.step", empty=False),
        step_index=check.whole(check.member(entry, "step_index", where),
                               f"{where}.step_index", minimum=0),
        rank=check.whole(check.member(entry, "rank", where), f"{where}.rank", minimum=0),
    )


def read_analysis(folder: Path) -> Analysis:
    check = Checked(folder, ANALYSIS_NAME)
    data = check.mapping(read_json(folder, ANALYSIS_NAME), "")
    try:
        analysis = Analysis.from_dict(data)
    except CONVERSION_ERRORS as exc:
        raise RecordingError(f"the recording in {folder} is invalid: {ANALYSIS_NAME} is not "
                             f"an analysis: {clip(str(exc))}") from exc
    price = analysis.price
    check.whole(price.minimum_comps, "price.minimum_comps", minimum=1)
    if price.half_life_days is not None:
        check.number(price.half_life_days, "price.half_life_days", positive=True)
    return analysis

"""Recorded analyses: what each stage returned, kept on disk, and replayed offline.

``Engine.analyze(photo, record=DIR)`` writes into DIR:

- ``recording.json``: the Engine's settings, the listings the search found
  (with the relaxation step and rank of each), the warnings of each stage
  and where each vector is in ``vectors.npy``;
- ``analysis.json``: the Analysis (the opinions, the identification, the
  comps and the estimate among it);
- ``vectors.npy``: the photo's vector, then the comps' image vectors;
- ``photo.jpg`` (or ``.png``, ``.webp``): the photo.

Every text is redacted before it is written: no key or token of the cloud
components reaches the disk. :func:`load_recording` reads a recording back;
:meth:`Recording.replay` re-runs the stages after the experts (synthesis,
re-ranking, pricing) from it, offline, with other rules, and says what
changed; the recording's fake components build an Engine for tests.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import time
import tokenize
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
from PIL import Image

from restyle._errors import EncoderError, FetchError, RecordingError, RestyleError
from restyle._input.fetching import Fetcher
from restyle._input.imaging import Photo, load_photo
from restyle._pipeline.identify import synthesize
from restyle._pipeline.pricing import DEFAULT_HALF_LIFE_DAYS, estimate_price
from restyle._pipeline.query import build_query
from restyle._pipeline.rerank import Reranker
from restyle._pipeline.search import Found
from restyle._pipeline.trace import (
    ANALYSIS_NAME,
    FORMAT,
    RECORDING_NAME,
    Trace,
    write_recording,
)
from restyle._plugin.components import (
    Encoder,
    Expert,
    Marketplace,
    Synthesizer,
    activate,
    deactivate,
)
from restyle._types import Analysis, Comp, Identification, Listing, Opinion, Query, _Value

if TYPE_CHECKING:
    from restyle._engine import Engine

__all__ = [
    "Difference",
    "RecordedEncoder",
    "RecordedExpert",
    "RecordedMarketplace",
    "RecordedSynthesizer",
    "Recording",
    "RecordingError",
    "Replay",
    "Trace",
    "load_recording",
    "write_recording",
]

# How long a replayed synthesizer may take: the recording's own deadline is gone.
_REPLAY_SECONDS = 60.0
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


# -- reading -----------------------------------------------------------------------


def _shown(value: object) -> str:
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "a list"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Checked:
    """Reads typed fields out of one JSON document, naming a wrong one by its
    path (``engine.reranker.cutoff``) and the file it is in."""

    def __init__(self, directory: Path, file: str) -> None:
        self.directory = directory
        self.file = file

    def fail(self, where: str, wanted: str, value: object) -> RecordingError:
        field_name = f" field {where}" if where else ""
        return RecordingError(f"the recording in {self.directory} is invalid: {self.file}"
                              f"{field_name} must be {wanted}, got {_shown(value)}")

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
# The same confinement as catalog ingestion gives local images (_ingest._image_location
# and _read_local): resolve, check containment, open what was resolved without
# following a link swapped in since, and never block on a FIFO or a device.

_OPEN_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
               | getattr(os, "O_BINARY", 0))


def _open_inside(folder: Path, name: object, what: str) -> BinaryIO:
    """The file ``name`` (as the recording gives it, relative to ``folder``)
    opened for reading, if it is a regular file inside ``folder``: a name or a
    link leading outside, a FIFO, a device or a folder is a RecordingError."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise RecordingError(f"the recording in {folder} is invalid: {what} must be named by "
                             f"a file name, got {_shown(name)}")
    shown = _shown(name)
    try:
        root = folder.resolve(strict=True)
        resolved = (root / name).resolve()
        inside = resolved != root and resolved.is_relative_to(root)
    except (OSError, RuntimeError, ValueError) as exc:
        raise RecordingError(f"{what} {shown} of the recording in {folder} cannot be "
                             f"found: {exc}") from exc
    if not inside:
        raise RecordingError(f"{what} {shown} is outside the recording in {folder}: a "
                             "recording reads only files inside its folder")

    def opener(path: str, flags: int) -> int:
        return os.open(path, flags | _OPEN_FLAGS)

    try:
        handle = open(resolved, "rb", opener=opener)  # noqa: SIM115
    except OSError as exc:
        raise RecordingError(f"{what} {shown} of the recording in {folder} cannot be opened: "
                             f"{exc.strerror or exc}") from exc
    try:
        mode = os.fstat(handle.fileno()).st_mode
    except OSError as exc:
        handle.close()
        raise RecordingError(f"{what} {shown} of the recording in {folder} cannot be read: "
                             f"{exc.strerror or exc}") from exc
    if not stat.S_ISREG(mode):
        handle.close()
        raise RecordingError(f"{what} {shown} of the recording in {folder} is not a regular "
                             "file")
    return handle


def _read_capped(handle: BinaryIO, limit: int, what: str, folder: Path) -> bytes:
    """All of ``handle``, refused before reading when the file is over ``limit`` bytes."""
    refusal = RecordingError(f"{what} of the recording in {folder} is larger than the "
                             f"{limit // (1024 * 1024)} MiB limit")
    try:
        size = os.fstat(handle.fileno()).st_size
        if size > limit:
            raise refusal
        # Sized by the file, not the limit; one byte more tells a file that grew.
        data = handle.read(size + 1)
    except OSError as exc:
        raise RecordingError(f"{what} of the recording in {folder} cannot be read: "
                             f"{exc.strerror or exc}") from exc
    if len(data) > limit:
        raise refusal
    return data


def _read_json(folder: Path, name: str) -> Any:
    with _open_inside(folder, name, name) as handle:
        data = _read_capped(handle, MAX_JSON_BYTES, name, folder)
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise RecordingError(f"{name} of the recording in {folder} is not JSON: "
                             f"{_clip(str(exc))}") from exc


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number JSON allows")


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_vectors(folder: Path, name: object) -> np.ndarray:
    """The rows of a ``.npy`` file inside ``folder``: its header is read and
    checked against the file's real size and :data:`MAX_VECTOR_BYTES` before
    anything is allocated; only finite float32 rows are accepted."""
    from numpy.lib import format as npy

    what = "the vectors file"
    with _open_inside(folder, name, what) as handle:
        def bad(reason: str) -> RecordingError:
            return RecordingError(f"{what} {_shown(name)} of the recording in {folder} {reason}")

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
            raise bad(f"is not a .npy file: {_clip(str(exc))}") from exc
        except OSError as exc:
            raise bad(f"cannot be read: {exc.strerror or exc}") from exc
        if dtype.hasobject or dtype.kind != "f" or dtype.itemsize != 4:
            raise bad(f"must hold float32 numbers, not {_clip(str(dtype))}")
        if len(shape) != 2 or shape[0] < 1 or not 1 <= shape[1] <= MAX_VECTOR_DIM:
            raise bad(f"must hold rows of 1 to {MAX_VECTOR_DIM} numbers, not the shape "
                      f"{_clip(str(shape))}")
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


def _engine_settings(check: _Checked, value: object) -> dict[str, Any]:
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
_CONVERSION_ERRORS = (TypeError, ValueError, KeyError, AttributeError, IndexError,
                      ArithmeticError, RecursionError)


def _found(check: _Checked, value: object, where: str) -> Found:
    entry = check.mapping(value, where)
    listing = check.mapping(check.member(entry, "listing", where), f"{where}.listing")
    try:
        rebuilt = Listing.from_dict(listing)
    except _CONVERSION_ERRORS as exc:
        raise check.fail(f"{where}.listing", f"a listing ({_clip(str(exc))})",
                         listing) from exc
    return Found(
        listing=rebuilt,
        step=check.text(check.member(entry, "step", where), f"{where}.step", empty=False),
        step_index=check.whole(check.member(entry, "step_index", where),
                               f"{where}.step_index", minimum=0),
        rank=check.whole(check.member(entry, "rank", where), f"{where}.rank", minimum=0),
    )


def _read_analysis(folder: Path) -> Analysis:
    check = _Checked(folder, ANALYSIS_NAME)
    data = check.mapping(_read_json(folder, ANALYSIS_NAME), "")
    try:
        analysis = Analysis.from_dict(data)
    except _CONVERSION_ERRORS as exc:
        raise RecordingError(f"the recording in {folder} is invalid: {ANALYSIS_NAME} is not "
                             f"an analysis: {_clip(str(exc))}") from exc
    price = analysis.price
    check.whole(price.minimum_comps, "price.minimum_comps", minimum=1)
    if price.half_life_days is not None:
        check.number(price.half_life_days, "price.half_life_days", positive=True)
    return analysis


def _pixel_digest(image: Image.Image) -> str:
    return hashlib.sha256(f"{image.size}{image.mode}".encode() + image.tobytes()).hexdigest()


class RecordedEncoder(Encoder):
    """The recorded photo's vector for the recorded photo, under the recorded
    model id; any other image, and any text, is an EncoderError (a recording
    holds no model)."""

    name = "recorded"

    def __init__(self, model_id: str, photo: Photo, vector: np.ndarray) -> None:
        self._model_id = model_id
        self._digest = _pixel_digest(photo.image)
        self._vector = np.asarray(vector, dtype=np.float32)

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dim(self) -> int:
        return int(self._vector.shape[0])

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        rows = []
        for image in images:
            if _pixel_digest(image.convert("RGB")) != self._digest:
                raise EncoderError("a recording can encode only its own photo")
            rows.append(self._vector)
        return np.stack(rows) if rows else np.zeros((0, self.dim), np.float32)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise EncoderError("a recording holds no text vectors: titles are not compared offline")


class RecordedExpert(Expert):
    """Gives the recorded opinion of the expert it is named after."""

    def __init__(self, opinion: Opinion) -> None:
        self.name = opinion.expert
        self.opinion = opinion

    def examine(self, photo: Photo) -> Opinion:
        return self.opinion


class RecordedSynthesizer(Synthesizer):
    """Gives the recorded identification, whatever the opinions."""

    name = "recorded"

    def __init__(self, identification: Identification) -> None:
        self.identification = identification

    def synthesize(self, opinions: Sequence[Opinion], *, photo: Photo) -> Identification:
        return self.identification


class RecordedMarketplace(Marketplace):
    """Answers each relaxation step with the listings the recording found at that
    step, in the order they were merged, and knows their recorded vectors."""

    name = "recorded"

    def __init__(self, found: Sequence[Found], vectors: Mapping[str, np.ndarray]) -> None:
        self.found = tuple(found)
        self.vectors = dict(vectors)
        self.queries: list[Query] = []

    def search(self, query: Query) -> Sequence[Listing]:
        self.queries.append(query)
        return [f.listing for f in self.found if f.step == query.step][: query.limit]

    def image_embeddings(
        self, listings: Sequence[Listing], *, model_id: str
    ) -> Mapping[str, np.ndarray]:
        return {item.key: self.vectors[item.key] for item in listings if item.key in self.vectors}


class _ReplayFetcher(Fetcher):
    """Downloads nothing: each image URL fails with the reason recorded for it."""

    def __init__(self, reasons: Mapping[str, str]) -> None:
        super().__init__()
        self._reasons = dict(reasons)

    def fetch(self, url: str, *, deadline: float | None = None) -> bytes:
        raise FetchError(self._reasons.get(url, "not fetched: replaying a recording"))

    def fetch_many(
        self, urls: Sequence[str], *, deadline: float | None = None,
        on_result: Callable[[str, bytes | FetchError], object] | None = None,
    ) -> dict[str, bytes | FetchError]:
        results: dict[str, bytes | FetchError] = {}
        for url in dict.fromkeys(urls):
            error = FetchError(self._reasons.get(url, "not fetched: replaying a recording"))
            results[url] = error
            if on_result is not None:
                on_result(url, error)
        return results


@dataclass(frozen=True, slots=True, kw_only=True)
class Difference(_Value):
    """One thing a replay changed: ``what`` (``"price.estimate"``,
    ``"identification.brand"``, ``"comp catalog:x rank"``), before and after."""

    what: str
    before: str
    after: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Replay(_Value):
    """A recorded analysis (``before``), the same analysis re-run from its
    recording with ``changes`` (``after``), and their ``differences``."""

    before: Analysis
    after: Analysis
    changes: Mapping[str, Any] = field(default_factory=dict)
    differences: tuple[Difference, ...] = ()

    @property
    def same(self) -> bool:
        """Whether the replay reproduced the recording."""
        return not self.differences


class Recording:
    """A recorded analysis read back: the Analysis, the photo, what the search
    found and the vectors, plus fake components that give what was recorded.

    ``engine()`` builds an offline Engine from those components, for tests;
    ``replay(...)`` re-runs synthesis, re-ranking and pricing with changes.

    A recording is untrusted input: every file it names must be a regular file
    inside its folder, each file is read within a size limit
    (:data:`MAX_JSON_BYTES`, :data:`MAX_VECTOR_BYTES`, the photo's own), and
    every field is checked; anything else is a :class:`RecordingError`.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory).expanduser()
        if not os.path.lexists(self.directory / RECORDING_NAME):
            raise RecordingError(f"no recording in {self.directory} (no {RECORDING_NAME})")
        try:
            self._read()
        except RestyleError:
            raise
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError,
                ArithmeticError) as exc:  # a check this reader lacks: still one clear error
            raise RecordingError(f"the recording in {self.directory} is unreadable: "
                                 f"{type(exc).__name__}: {_clip(str(exc))}") from exc

    def _read(self) -> None:
        folder = self.directory
        check = _Checked(folder, RECORDING_NAME)
        manifest = check.mapping(_read_json(folder, RECORDING_NAME), "")
        version = manifest.get("format")
        if isinstance(version, bool) or version != FORMAT:
            raise RecordingError(f"the recording in {folder} is of format {_shown(version)}, not "
                                 f"{FORMAT}; record it again with this restyle")
        self.settings: dict[str, Any] = _engine_settings(check, check.member(manifest, "engine",
                                                                             ""))
        photo = check.mapping(check.member(manifest, "photo", ""), "photo")
        photo_file = check.text(check.member(photo, "file", "photo"), "photo.file", empty=False)
        found = check.member(manifest, "found", "")
        if not isinstance(found, list):
            raise check.fail("found", "a list", found)
        self.found = tuple(_found(check, entry, f"found[{i}]") for i, entry in enumerate(found))
        warnings = check.mapping(check.member(manifest, "warnings", ""), "warnings")
        self.search_warnings = check.texts(check.member(warnings, "search", "warnings"),
                                           "warnings.search")
        self.rerank_warnings = check.texts(check.member(warnings, "rerank", "warnings"),
                                           "warnings.rerank")
        vectors = check.mapping(check.member(manifest, "vectors", ""), "vectors")
        vectors_file = check.text(check.member(vectors, "file", "vectors"), "vectors.file",
                                  empty=False)
        photo_row = check.whole(check.member(vectors, "photo", "vectors"), "vectors.photo",
                                minimum=0)
        comps = check.mapping(check.member(vectors, "comps", "vectors"), "vectors.comps")
        comp_rows = {key: check.whole(row, f"vectors.comps[{_shown(key)}]", minimum=0)
                     for key, row in comps.items()}

        self.analysis = _read_analysis(folder)
        rows = _read_vectors(folder, vectors_file)
        for where, row in [("vectors.photo", photo_row),
                           *((f"vectors.comps[{_shown(k)}]", r) for k, r in comp_rows.items())]:
            if row >= len(rows):
                raise check.fail(where, f"a row of {vectors_file} (0 to {len(rows) - 1})", row)
        self.photo_vector = rows[photo_row].copy()
        self.vectors = {key: rows[row].copy() for key, row in comp_rows.items()}
        with _open_inside(folder, photo_file, "the photo") as handle:
            self.photo = load_photo(handle)

    def __repr__(self) -> str:
        return f"<Recording {str(self.directory)!r} comps={len(self.analysis.comps)}>"

    # -- fake components -----------------------------------------------------------

    @property
    def experts(self) -> tuple[Expert, ...]:
        """One RecordedExpert per recorded opinion, giving that opinion."""
        return tuple(RecordedExpert(o) for o in self.analysis.opinions)

    @property
    def synthesizer(self) -> RecordedSynthesizer:
        return RecordedSynthesizer(self.analysis.identification)

    @property
    def marketplace(self) -> RecordedMarketplace:
        return RecordedMarketplace(self.found, self.vectors)

    @property
    def encoder(self) -> RecordedEncoder:
        model_id = self.analysis.model_id or str(self.settings.get("model_id") or "recorded")
        return RecordedEncoder(model_id, self.photo, self.photo_vector)

    @property
    def fetcher(self) -> Fetcher:
        """A fetcher that downloads nothing: each comp image that had no vector
        fails again with the reason recorded for it."""
        reasons = {c.listing.image_url: c.image_error for c in self.analysis.comps
                   if c.listing.image_url and c.image_error}
        return _ReplayFetcher(reasons)

    def reranker(self, *, cutoff: bool | None = None) -> Reranker:
        """A reranker set as the recorded one was, without a cache or downloads."""
        options = self.settings.get("reranker", {})
        return Reranker(
            fetcher=self.fetcher, cache=None,
            text_weight=float(options.get("text_weight", 0.0)),
            duplicate_threshold=float(options.get("duplicate_threshold", 0.995)),
            cutoff=bool(options.get("cutoff", True)) if cutoff is None else cutoff,
        )

    def engine(self, **options: Any) -> Engine:
        """An offline Engine of the recorded components (``options`` override
        any Engine option): ``engine().analyze(recording.photo)`` runs the whole
        pipeline again on what was recorded."""
        from restyle._engine import Engine

        found = len(self.found) or 1
        settings: dict[str, Any] = {
            "experts": list(self.experts), "synthesizer": self.synthesizer,
            "marketplaces": [self.marketplace], "encoder": self.encoder,
            "reranker": self.reranker(), "load_entrypoints": False,
            # Walk every recorded step: the recorded marketplaces stopped on their own.
            "comps_wanted": max(found, int(self.settings.get("max_comps", found))),
            "max_comps": max(found, int(self.settings.get("max_comps", found))),
            "minimum_price_comps": self.analysis.price.minimum_comps,
            "price_half_life_days": self._half_life(),
        }
        settings.update(options)
        return Engine(**settings)

    def _half_life(self) -> float:
        recorded = self.analysis.price.half_life_days
        if recorded is None:
            recorded = self.settings.get("price_half_life_days", DEFAULT_HALF_LIFE_DAYS)
        return float(recorded)

    # -- replaying -----------------------------------------------------------------

    def replay(
        self,
        *,
        synthesizer: str | Synthesizer | None = None,
        minimum_comps: int | None = None,
        half_life_days: float | None = None,
        cutoff: bool | None = None,
        plugins: Sequence[object] = (),
        load_entrypoints: bool = True,
    ) -> Replay:
        """Re-run the stages after the experts from the recording, offline.

        With no changes the replay gives the recorded analysis again. A
        ``synthesizer`` (a name or an instance) merges the recorded opinions
        anew; the comps stay those the recorded search found (nothing is
        searched again), re-ranked with the recorded vectors (``cutoff``
        False turns the similarity cut-off off) and priced with
        ``minimum_comps`` and ``half_life_days`` (the recorded rules by
        default), as of the recorded moment.
        """
        from restyle._engine import Engine, _count, _days

        if minimum_comps is not None:
            _count("minimum_comps", minimum_comps)
        if half_life_days is not None:
            _days("half_life_days", half_life_days)
        before = self.analysis
        changes: dict[str, Any] = {}
        engine = Engine(
            experts=[], marketplaces=[], encoder=self.encoder,
            synthesizer=synthesizer if synthesizer is not None else self.synthesizer,
            reranker=self.reranker(cutoff=cutoff), plugins=plugins,
            load_entrypoints=load_entrypoints,
        )
        if synthesizer is not None:
            changes["synthesizer"] = engine.synthesizer.name
        if cutoff is not None:
            changes["cutoff"] = cutoff
        minimum = before.price.minimum_comps if minimum_comps is None else minimum_comps
        if minimum_comps is not None:
            changes["minimum_comps"] = minimum_comps
        half_life = self._half_life() if half_life_days is None else half_life_days
        if half_life_days is not None:
            changes["half_life_days"] = half_life_days
        token = activate(engine.context)
        try:
            identification, query = before.identification, before.query
            if synthesizer is not None:
                now = time.monotonic()
                identification = synthesize(
                    engine.synthesizer, before.opinions, self.photo,
                    deadline=now + _REPLAY_SECONDS, fallback=engine._fallback_synthesizer,
                    borrow_until=now + _REPLAY_SECONDS + 2.0,
                )
                if _fields(identification) != _fields(before.identification):
                    query = build_query(identification,
                                        limit=int(self.settings.get("max_comps", 30)))
            reranked = engine.reranker.rerank(
                self.photo_vector, [(f.listing, f.step) for f in self.found],
                encoder=engine.encoder, known_vectors=self.vectors,
                identification=identification, deadline=time.monotonic() + _REPLAY_SECONDS,
            )
        finally:
            deactivate(token)
        price = estimate_price(reranked.comps, minimum_comps=minimum, half_life_days=half_life,
                               now=before.price.as_of or before.created_at)
        after = replace(before, identification=identification, query=query,
                        comps=reranked.comps, price=price,
                        warnings=self.search_warnings + reranked.warnings)
        return Replay(before=before, after=after, changes=changes,
                      differences=differences(before, after))


def load_recording(directory: str | Path) -> Recording:
    """Read the recording in ``directory`` (written by ``analyze(..., record=DIR)``)."""
    return Recording(directory)


# -- differences -----------------------------------------------------------------------


def _fields(identification: Identification) -> dict[str, str]:
    return {
        "product_name": identification.product_name or "",
        "brand": identification.brand or "",
        "category": identification.category or "",
        "attributes": ", ".join(f"{a.name}={a.value}" for a in identification.attributes),
        "confidence": f"{identification.confidence:.2f}",
        "synthesizer": identification.synthesizer,
        "fallback_reason": identification.fallback_reason or "",
    }


def _price_fields(analysis: Analysis) -> dict[str, str]:
    price = analysis.price

    def text(value: object) -> str:
        return "" if value is None else str(getattr(value, "value", value))

    return {
        "status": text(price.status), "basis": text(price.basis),
        "currency": text(price.currency), "estimate": text(price.estimate),
        "low": text(price.low), "high": text(price.high),
        "comps_used": str(price.comps_used), "effective_weight": str(price.effective_weight),
        "minimum_comps": str(price.minimum_comps), "half_life_days": text(price.half_life_days),
        "counted": " ".join(sorted(c.listing_key for c in price.counted)),
    }


def _comps(comps: Sequence[Comp]) -> dict[str, tuple[int, str]]:
    return {c.listing.key: (rank, ", ".join(c.flags)) for rank, c in enumerate(comps, start=1)}


def differences(before: Analysis, after: Analysis) -> tuple[Difference, ...]:
    """What differs between two analyses of one photo: identification fields,
    the query's words, each comp's rank and flags, and the price."""
    found: list[Difference] = []

    def compare(prefix: str, old: Mapping[str, str], new: Mapping[str, str]) -> None:
        for name in old:
            if old[name] != new[name]:
                found.append(Difference(what=f"{prefix}.{name}", before=old[name],
                                        after=new[name]))

    compare("identification", _fields(before.identification), _fields(after.identification))
    old_query = before.query.text if before.query else ""
    new_query = after.query.text if after.query else ""
    if old_query != new_query:
        found.append(Difference(what="query.text", before=old_query, after=new_query))
    old_comps, new_comps = _comps(before.comps), _comps(after.comps)
    for key in [*old_comps, *(k for k in new_comps if k not in old_comps)]:
        old_rank, old_flags = old_comps.get(key, (0, ""))
        new_rank, new_flags = new_comps.get(key, (0, ""))
        if old_rank != new_rank:
            found.append(Difference(what=f"comp {key} rank", before=str(old_rank or "-"),
                                    after=str(new_rank or "-")))
        if old_flags != new_flags:
            found.append(Difference(what=f"comp {key} flags", before=old_flags or "-",
                                    after=new_flags or "-"))
    compare("price", _price_fields(before), _price_fields(after))
    return tuple(found)

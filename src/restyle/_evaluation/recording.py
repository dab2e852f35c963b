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

This module is the front door; beside it, :mod:`~restyle._evaluation.reading`
reads a recording's files as untrusted input, :mod:`~restyle._evaluation.fakes`
holds the recorded components and :mod:`~restyle._evaluation.differences`
says what a replay changed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from restyle._errors import RecordingError, RestyleError
from restyle._evaluation.differences import Difference, differences, identification_fields
from restyle._evaluation.fakes import (
    RecordedEncoder,
    RecordedExpert,
    RecordedMarketplace,
    RecordedSynthesizer,
    ReplayFetcher,
)
from restyle._evaluation.reading import (
    MAX_JSON_BYTES,
    MAX_VECTOR_BYTES,
    MAX_VECTOR_DIM,
    Checked,
    clip,
    engine_settings,
    found_entry,
    open_recorded,
    read_analysis,
    read_json,
    read_vectors,
    shown,
)
from restyle._input.fetching import Fetcher
from restyle._input.imaging import load_photo
from restyle._input.item import ITEM_MAX_PHOTOS, Item
from restyle._pipeline.pricing import (
    DEFAULT_HALF_LIFE_DAYS,
    check_half_life_days,
    check_minimum_comps,
)
from restyle._pipeline.rerank import Reranker
from restyle._pipeline.trace import FORMAT, RECORDING_NAME, Trace, write_recording
from restyle._plugin.components import Expert, Synthesizer
from restyle._types import Analysis, PhotoRole, Value

if TYPE_CHECKING:
    from restyle._engine import Engine

__all__ = [
    "MAX_JSON_BYTES",
    "MAX_VECTOR_BYTES",
    "MAX_VECTOR_DIM",
    "Difference",
    "RecordedEncoder",
    "RecordedExpert",
    "RecordedMarketplace",
    "RecordedSynthesizer",
    "Recording",
    "RecordingError",
    "Replay",
    "Trace",
    "differences",
    "load_recording",
    "write_recording",
]

# How long a replayed synthesizer may take: the recording's own deadline is gone.
_REPLAY_SECONDS = 60.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Replay(Value):
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
                                 f"{type(exc).__name__}: {clip(str(exc))}") from exc

    def _read(self) -> None:
        folder = self.directory
        check = Checked(folder, RECORDING_NAME)
        manifest = check.mapping(read_json(folder, RECORDING_NAME), "")
        version = manifest.get("format")
        if isinstance(version, bool) or version != FORMAT:
            raise RecordingError(f"the recording in {folder} is of format {shown(version)}, not "
                                 f"{FORMAT}; record it again with this restyle")
        self.settings: dict[str, Any] = engine_settings(check, check.member(manifest, "engine",
                                                                             ""))
        photo = check.mapping(check.member(manifest, "photo", ""), "photo")
        photo_file = check.text(check.member(photo, "file", "photo"), "photo.file", empty=False)
        found = check.member(manifest, "found", "")
        if not isinstance(found, list):
            raise check.fail("found", "a list", found)
        self.found = tuple(found_entry(check, entry, f"found[{i}]")
                           for i, entry in enumerate(found))
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
        comp_rows = {key: check.whole(row, f"vectors.comps[{shown(key)}]", minimum=0)
                     for key, row in comps.items()}
        others = self._other_photos(check, manifest)

        self.analysis = read_analysis(folder)
        rows = read_vectors(folder, vectors_file)
        for where, row in [("vectors.photo", photo_row),
                           *((f"vectors.comps[{shown(k)}]", r) for k, r in comp_rows.items()),
                           *((f"photos[{i}].vector", o[3]) for i, o in enumerate(others)
                             if o[3] is not None)]:
            if row >= len(rows):
                raise check.fail(where, f"a row of {vectors_file} (0 to {len(rows) - 1})", row)
        self.photo_vector = rows[photo_row].copy()
        self.vectors = {key: rows[row].copy() for key, row in comp_rows.items()}
        with open_recorded(folder, photo_file, "the photo") as handle:
            self.photo = load_photo(handle)
        index = check.whole(photo.get("index", 0), "photo.index", minimum=0)
        role = photo.get("role")
        if role is not None and role not in {r.value for r in PhotoRole}:
            raise check.fail("photo.role", "a photo role", role)
        placed = [(index, self.photo, role, self.photo_vector)]
        for name, other_index, other_role, other_row in others:
            with open_recorded(folder, name, f"photo {other_index}") as handle:
                placed.append((other_index, load_photo(handle), other_role,
                               None if other_row is None else rows[other_row].copy()))
        placed.sort(key=lambda entry: entry[0])
        #: Every photo of the recorded item, in the item's order, with its role and vector.
        self.photos = tuple(p for _, p, _, _ in placed)
        self.roles = tuple(r for _, _, r, _ in placed)
        self.photo_vectors = tuple(v for _, _, _, v in placed)

    @staticmethod
    def _other_photos(check: Checked, manifest: dict[str, Any]
                      ) -> list[tuple[str, int, str | None, int | None]]:
        """The item's other photos: file, place, role and vector row of each."""
        listed = manifest.get("photos", [])
        if not isinstance(listed, list) or len(listed) >= ITEM_MAX_PHOTOS:
            raise check.fail("photos", f"a list of at most {ITEM_MAX_PHOTOS - 1}", listed)
        others = []
        for i, entry in enumerate(listed):
            entry = check.mapping(entry, f"photos[{i}]")
            name = check.text(check.member(entry, "file", f"photos[{i}]"), f"photos[{i}].file",
                              empty=False)
            index = check.whole(check.member(entry, "index", f"photos[{i}]"),
                                f"photos[{i}].index", minimum=0)
            role = entry.get("role")
            if role is not None and role not in {r.value for r in PhotoRole}:
                raise check.fail(f"photos[{i}].role", "a photo role", role)
            row = entry.get("vector")
            others.append((name, index, role,
                           None if row is None else check.whole(row, f"photos[{i}].vector",
                                                                minimum=0)))
        return others

    @property
    def item(self) -> Item:
        """The recorded item: every photo, with the role it was found or given."""
        return Item(*self.photos, roles=list(self.roles))

    def __repr__(self) -> str:
        return f"<Recording {str(self.directory)!r} comps={len(self.analysis.comps)}>"

    # -- fake components -----------------------------------------------------------

    @property
    def experts(self) -> tuple[Expert, ...]:
        """One RecordedExpert per recorded expert, giving its opinion of each photo."""
        names = dict.fromkeys(o.expert for o in self.analysis.opinions)
        return tuple(RecordedExpert([o for o in self.analysis.opinions if o.expert == name])
                     for name in names)

    @property
    def synthesizer(self) -> RecordedSynthesizer:
        return RecordedSynthesizer(self.analysis.identification)

    @property
    def marketplace(self) -> RecordedMarketplace:
        return RecordedMarketplace(self.found, self.vectors)

    @property
    def encoder(self) -> RecordedEncoder:
        model_id = self.analysis.model_id or str(self.settings.get("model_id") or "recorded")
        return RecordedEncoder(model_id, [(p, v) for p, v in zip(
            self.photos, self.photo_vectors, strict=True) if v is not None])

    @property
    def fetcher(self) -> Fetcher:
        """A fetcher that downloads nothing: each comp image that had no vector
        fails again with the reason recorded for it."""
        reasons = {c.listing.image_url: c.image_error for c in self.analysis.comps
                   if c.listing.image_url and c.image_error}
        return ReplayFetcher(reasons)

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
        any Engine option): ``engine().analyze(recording.item)`` runs the whole
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
            "minimum_comps": self.analysis.price.minimum_comps,
            "half_life_days": self._half_life(),
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
        if minimum_comps is not None:
            check_minimum_comps(minimum_comps)
        if half_life_days is not None:
            check_half_life_days(half_life_days)
        engine = self.engine(
            synthesizer=self.synthesizer if synthesizer is None else synthesizer,
            reranker=self.reranker(cutoff=cutoff), plugins=plugins,
            load_entrypoints=load_entrypoints,
            **({} if minimum_comps is None else {"minimum_comps": minimum_comps}),
            **({} if half_life_days is None else {"half_life_days": half_life_days}),
        )
        changes: dict[str, Any] = {}
        if synthesizer is not None:
            changes["synthesizer"] = engine.synthesizer.name
        if cutoff is not None:
            changes["cutoff"] = cutoff
        if minimum_comps is not None:
            changes["minimum_comps"] = minimum_comps
        if half_life_days is not None:
            changes["half_life_days"] = half_life_days
        before = self.analysis
        # The Engine's own pipeline, on the recorded components: the recorded
        # opinions, the recorded search's listings step by step, the recorded
        # vectors, priced as of the recorded moment.
        again = engine.analyze(self.item, deadline=_REPLAY_SECONDS,
                               as_of=before.price.as_of or before.created_at)
        query = before.query
        if identification_fields(again.identification) != identification_fields(
                before.identification):
            query = again.query
        after = replace(before, identification=again.identification, query=query,
                        comps=again.comps, price=again.price,
                        warnings=self.search_warnings + again.warnings)
        return Replay(before=before, after=after, changes=changes,
                      differences=differences(before, after))


def load_recording(directory: str | Path) -> Recording:
    """Read the recording in ``directory`` (written by ``analyze(..., record=DIR)``)."""
    return Recording(directory)


"""The Engine: runs the pipeline from one photo to an Analysis."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import time
import warnings
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

import numpy as np

from restyle import _settings
from restyle._errors import ConfigurationError, EncoderError, PluginError, RestyleError
from restyle._input.fetching import Fetcher
from restyle._input.imaging import ImageInput, Photo, load_photo
from restyle._pipeline import budget as _budget
from restyle._pipeline.budget import CALL_LIMIT, STAGE_MARKS, Budget, CallLimit, Pending
from restyle._pipeline.identify import IdentifyResult, examine, synthesize
from restyle._pipeline.pricing import (
    DEFAULT_HALF_LIFE_DAYS,
    MINIMUM_COMPS,
    check_half_life_days,
    check_minimum_comps,
    estimate_price,
)
from restyle._pipeline.rerank import Reranker, RerankResult
from restyle._pipeline.search import SearchResult, search_marketplaces
from restyle._pipeline.trace import Trace, write_recording
from restyle._plugin.components import (
    CatalogView,
    Component,
    Context,
    Encoder,
    Expert,
    Marketplace,
    Synthesizer,
    activate,
    check_component,
    deactivate,
)
from restyle._plugin.contracts import check_vectors
from restyle._plugin.registry import PluginRegistry
from restyle._progress import progress_bar
from restyle._ray.executor import Executor, RayExecutor, analyze_on_ray
from restyle._secrets import describe, exposes_secret, without_secrets
from restyle._store.catalog import (
    EXECUTORS,
    MARKETPLACE_NAME,
    BuildReport,
    Catalog,
    ListingLimits,
)
from restyle._store.holdout import HeldOutCatalog, catalog_ids
from restyle._types import Analysis, Comp, Identification, Opinion

# The store sits below Ray and takes an executor by what it does: the name
# "ray" of Catalog.build(executor="ray") is given it here, above both.
EXECUTORS["ray"] = RayExecutor

#: Seconds an analysis may take, end to end, unless told otherwise.
DEFAULT_DEADLINE = 60.0
#: Photos :meth:`Engine.analyze_many` decodes and encodes together.
BATCH_PHOTOS = 16
#: Analyses :meth:`Engine.analyze_many` runs at once (their experts and
#: marketplaces wait on the network while the others compute).
ANALYSIS_WORKERS = 4
#: Longest deadline an analysis may be given, in seconds (a day).
MAX_DEADLINE = 86_400.0
#: Most comps an Engine may be asked to want, fetch or price on.
MAX_COUNT = 1_000

__all__ = ["Engine"]

logger = logging.getLogger("restyle")

C = TypeVar("C", bound=Component)


class Engine:
    """One configured pipeline. Thread-safe; build one per process and share it.

    Components are given by name (looked up among the registered plugins) or
    as instances. With no arguments the embedded defaults are used: the
    ``clip`` and ``catalog`` experts, the ``consensus`` synthesizer, the
    ``catalog`` marketplace and the ``openclip`` encoder, all offline.

    ``model`` picks the ``openclip`` encoder's model: a built-in name with
    its pretrained tag (``"ViT-L-14/datacomp_xl_s13b_b90k"``), ``"hf-hub:org/repo"``
    or ``"local-dir:/path"``; it wins over ``RESTYLE_MODEL``.
    ``deadline`` is the wall-clock time one analysis may take, in seconds;
    ``identify_budget``, when given, caps the experts' share of it.
    ``minimum_comps`` is the fewest comps a price may rest on and
    ``half_life_days`` how fast a sold comp's weight fades with its age (see
    docs/pricing.md), spelt as :func:`estimate_price`, replay and the CLI spell
    them (``minimum_price_comps`` and ``price_half_life_days`` still work, with
    a DeprecationWarning).
    """

    def __init__(
        self,
        *,
        experts: Sequence[str | Expert] | None = None,
        synthesizer: str | Synthesizer | None = None,
        marketplaces: Sequence[str | Marketplace] | None = None,
        encoder: str | Encoder | None = None,
        model: str | None = None,
        catalog: str | Path | None = None,
        plugins: Sequence[object] = (),
        load_entrypoints: bool = True,
        strict_plugins: bool = False,
        deadline: float = DEFAULT_DEADLINE,
        identify_budget: float | None = None,
        comps_wanted: int = 10,
        max_comps: int = 30,
        minimum_comps: int = MINIMUM_COMPS,
        half_life_days: float = DEFAULT_HALF_LIFE_DAYS,
        fetcher: Fetcher | None = None,
        reranker: Reranker | None = None,
        minimum_price_comps: int | None = None,
        price_half_life_days: float | None = None,
    ) -> None:
        # As given: an Engine on a Ray actor is made from these (see restyle._ray.analyze).
        self._arguments: dict[str, Any] = {k: v for k, v in locals().items() if k != "self"}
        self.deadline = _seconds("deadline", deadline)
        self.identify_budget = (
            None if identify_budget is None else _seconds("identify_budget", identify_budget)
        )
        self.comps_wanted = _count("comps_wanted", comps_wanted)
        self.max_comps = _count("max_comps", max_comps)
        self.minimum_comps = check_minimum_comps(*_renamed(
            "minimum_comps", minimum_comps, MINIMUM_COMPS,
            "minimum_price_comps", minimum_price_comps))
        self.half_life_days = check_half_life_days(*_renamed(
            "half_life_days", half_life_days, DEFAULT_HALF_LIFE_DAYS,
            "price_half_life_days", price_half_life_days))
        _check_parts(plugins=plugins, fetcher=fetcher, reranker=reranker, catalog=catalog)
        self.registry = PluginRegistry(
            plugins=plugins, load_entrypoints=load_entrypoints, strict=strict_plugins
        )
        self.reranker = reranker or Reranker(fetcher=fetcher or Fetcher())
        self.catalog_dir = Path(catalog).expanduser() if catalog else _settings.catalog_dir()
        self._catalog: Catalog | None = None
        self._catalog_lock = threading.Lock()
        self._calls = CallLimit()
        self._resolve_components(encoder=encoder, model=model, experts=experts,
                                 synthesizer=synthesizer, marketplaces=marketplaces)

    def _resolve_components(
        self, *, encoder: str | Encoder | None, model: str | None,
        experts: Sequence[str | Expert] | None, synthesizer: str | Synthesizer | None,
        marketplaces: Sequence[str | Marketplace] | None,
    ) -> None:
        """The components by name or as given, checked, each attached once."""
        expert_specs = _names("experts", experts)
        market_specs = _names("marketplaces", marketplaces)
        encoder_spec = encoder or _settings.env_str("RESTYLE_ENCODER") or _settings.DEFAULT_ENCODER
        if model is not None:
            encoder_spec = _model_encoder(model, encoder_spec)
        self.encoder: Encoder = self._resolve(
            "encoder", encoder_spec, Encoder,  # type: ignore[type-abstract]
        )
        expert_names = expert_specs if expert_specs is not None else _settings.env_list(
            "RESTYLE_EXPERTS", _settings.DEFAULT_EXPERTS
        )
        self.experts: tuple[Expert, ...] = tuple(
            self._resolve("expert", e, Expert) for e in expert_names)
        self.synthesizer: Synthesizer = self._resolve(
            "synthesizer",
            synthesizer or _settings.env_str("RESTYLE_SYNTHESIZER")
            or _settings.DEFAULT_SYNTHESIZER,
            Synthesizer,  # type: ignore[type-abstract]
        )
        market_names = market_specs if market_specs is not None else _settings.env_list(
            "RESTYLE_MARKETPLACES", _settings.DEFAULT_MARKETPLACES
        )
        self.marketplaces: tuple[Marketplace, ...] = tuple(
            self._resolve("marketplace", m, Marketplace) for m in market_names)
        _unique("expert", self.experts)
        _unique("marketplace", self.marketplaces)
        self.context = Context(encoder=self.encoder, fetcher=self.fetcher,
                               open_catalog=self._open_catalog)
        for component in (self.encoder, *self.experts, self.synthesizer, *self.marketplaces):
            _check_name(component)
            component.attach(self.context)


    @property
    def minimum_price_comps(self) -> int:
        """Deprecated: :attr:`minimum_comps`."""
        _deprecated("Engine.minimum_price_comps", "Engine.minimum_comps")
        return self.minimum_comps

    @property
    def price_half_life_days(self) -> float:
        """Deprecated: :attr:`half_life_days`."""
        _deprecated("Engine.price_half_life_days", "Engine.half_life_days")
        return self.half_life_days

    def __repr__(self) -> str:
        return (
            f"<Engine experts={[e.name for e in self.experts]} "
            f"synthesizer={self.synthesizer.name!r} "
            f"marketplaces={[m.name for m in self.marketplaces]} encoder={self.encoder.name!r}>"
        )

    @property
    def fetcher(self) -> Fetcher:
        """The downloader of comp images (the reranker's)."""
        return self.reranker.fetcher

    @property
    def plugin_errors(self) -> list[PluginError]:
        """Problems with plugins: ones that failed to load, components refused,
        hooks that raised (each also issued a PluginLoadWarning)."""
        return list(self.registry.errors)

    def _resolve(self, kind: str, spec: str | C, base: type[C]) -> C:
        if isinstance(spec, base):
            return spec
        if isinstance(spec, Component) or not isinstance(spec, str):
            raise ConfigurationError(
                f"{spec!r} is not {'an' if kind[0] in 'aeiou' else 'a'} {kind}: pass a name or "
                f"a restyle.{base.__name__} instance"
            )
        registration = self.registry.get(kind, spec)
        if registration is None:
            raise self.registry.missing(kind, spec)
        component = registration.component
        assert isinstance(component, base)
        return component

    def warm_up(self) -> None:
        """Load now what the first analysis would otherwise load inside its own
        deadline: the encoder's model, the ``clip`` expert's prompt vectors,
        whatever each component's :meth:`~restyle.Component.warm_up` does.

        Call it once at start-up (a web app's worker, a notebook's first cell;
        the CLI calls it before its first photo) so the first answer is as
        complete as the second. It takes as long as loading takes, with no
        deadline. Raises :class:`~restyle.EncoderError` when the encoder cannot
        load; any other component that fails to warm up is logged and tried
        again on first use. Without it the work starts on first use, and a
        call that comes too early degrades only its own answer."""
        with self._running("warm_up"):
            self.encoder.warm_up()
            for component in (*self.experts, self.synthesizer, *self.marketplaces):
                try:
                    component.warm_up()
                except Exception as exc:
                    logger.warning("%s %s did not warm up: %s", component.kind, component.name,
                                   describe(exc))

    @property
    def catalog(self) -> Catalog:
        """The local catalog, opened on first use for this Engine's encoder."""
        return self._open_catalog()

    def _open_catalog(self) -> Catalog:
        with self._catalog_lock:
            if self._catalog is None:
                self._catalog = Catalog.open(self.catalog_dir, self.encoder)
            return self._catalog

    def build_catalog(
        self, listings: str | Path, *, progress: bool | None = None,
        images_root: str | Path | None = None, limits: ListingLimits | None = None,
        executor: Executor = None,
    ) -> BuildReport:
        """Add the listings of a JSONL, CSV or Parquet file to this Engine's catalog
        (see :meth:`Catalog.build`); image URLs are fetched with this Engine's fetcher.
        ``executor="ray"`` or a :class:`~restyle.RayExecutor` builds on Ray."""
        with self._running("build_catalog"):
            with self._catalog_lock:
                if self._catalog is None:
                    self._catalog = Catalog.open(self.catalog_dir, self.encoder, create=True)
                catalog = self._catalog
            return catalog.build(listings, self.encoder, progress=progress,
                                 images_root=images_root, limits=limits, fetcher=self.fetcher,
                                 executor=executor)

    def _context_hiding(self, hidden: frozenset[str]) -> Context:
        """This Engine's context, with the catalog listings among ``hidden``
        (listing keys) hidden from the components."""
        ids = catalog_ids(hidden, MARKETPLACE_NAME)
        if not ids:
            return self.context

        def open_held_out() -> CatalogView:
            return HeldOutCatalog(self._open_catalog(), ids)

        return dataclasses.replace(self.context, open_catalog=open_held_out)

    @contextmanager
    def _running(self, method: str, *, hidden: frozenset[str] = frozenset()) -> Iterator[None]:
        """Make this Engine's context the components' for the call, and let only
        RestyleErrors out of a public method: anything else is a bug somewhere
        in the pipeline, logged with its traceback and raised typed."""
        token = activate(self._context_hiding(hidden))
        limit_token = CALL_LIMIT.set(self._calls)
        try:
            yield
        except RestyleError as exc:
            raise without_secrets(exc)  # noqa: B904 - the same exception, made safe
        except Exception as exc:
            logger.exception("unexpected error in Engine.%s", method)
            raise RestyleError(
                f"Engine.{method} failed unexpectedly: {describe(exc)}"
            ) from (None if exposes_secret(exc) else exc)
        finally:
            CALL_LIMIT.reset(limit_token)
            deactivate(token)

    # -- identify ------------------------------------------------------------

    def _budget(self, deadline: float | None) -> Budget:
        return Budget.of(self.deadline if deadline is None else _seconds("deadline", deadline))

    @staticmethod
    def _load_photo(image: ImageInput | Photo, budget: Budget) -> Photo:
        """The photo read and decoded through the input gate, by the end of the
        experts' stage (reading it is part of the analysis)."""
        return load_photo(image, deadline=budget.stage("experts").end)

    def _experts_deadline(self, budget: Budget) -> float:
        return budget.stage("experts", cap=self.identify_budget).end

    def examine(self, image: ImageInput | Photo, *,
                deadline: float | None = None) -> tuple[Opinion, ...]:
        """Every expert's Opinion of the photo, gathered concurrently.

        Each expert runs under its own ``timeout`` within the experts' share
        of ``deadline`` (seconds; the Engine's by default). One that raises,
        times out, hangs or answers off its contract gives an Opinion with an
        error status; the others are unaffected.
        """
        with self._running("examine"):
            budget = self._budget(deadline)
            photo = self._load_photo(image, budget)
            return examine(self.experts, photo, deadline=self._experts_deadline(budget))

    def identify(self, image: ImageInput | Photo, *,
                 deadline: float | None = None) -> Identification:
        """What the item in the photo is."""
        with self._running("identify"):
            budget = self._budget(deadline)
            return self._identify(self._load_photo(image, budget), budget).identification

    def _identify(self, photo: Photo, budget: Budget) -> IdentifyResult:
        opinions = examine(self.experts, photo, deadline=self._experts_deadline(budget))
        identification = synthesize(
            self.synthesizer, opinions, photo, deadline=budget.stage("synthesize").end,
            fallback=self._fallback_synthesizer, borrow_until=budget.stage("search").end,
        )
        return IdentifyResult(opinions=opinions, identification=identification)

    def synthesize(self, opinions: Sequence[Opinion], image: ImageInput | Photo, *,
                   deadline: float | None = None) -> Identification:
        """The Identification this Engine's synthesizer makes of ``opinions``
        (experts' opinions of the photo, e.g. recorded ones), falling back to
        the ``consensus`` synthesizer as an analysis does; all within
        ``deadline`` seconds (the Engine's by default), a fifth of it kept for
        the fallback."""
        opinions = list(opinions) if isinstance(opinions, (list, tuple)) else opinions
        if not isinstance(opinions, list) or not all(isinstance(o, Opinion) for o in opinions):
            raise ConfigurationError("opinions must be a list of restyle.Opinion")
        with self._running("synthesize"):
            budget = self._budget(deadline)
            photo = self._load_photo(image, budget)
            return synthesize(
                self.synthesizer, opinions, photo,
                deadline=budget.start + 0.8 * budget.total,
                fallback=self._fallback_synthesizer, borrow_until=budget.end,
            )

    def _recorded_settings(self) -> dict[str, Any]:
        """The settings a replay needs, or that explain a recording."""
        reranker = self.reranker
        return {
            "experts": [e.name for e in self.experts],
            "synthesizer": self.synthesizer.name,
            "marketplaces": [m.name for m in self.marketplaces],
            "encoder": self.encoder.name,
            "model_id": self.encoder.model_id,
            "comps_wanted": self.comps_wanted,
            "max_comps": self.max_comps,
            "minimum_price_comps": self.minimum_comps,
            "price_half_life_days": self.half_life_days,
            "reranker": {"text_weight": reranker.text_weight,
                         "duplicate_threshold": reranker.duplicate_threshold,
                         "cutoff": reranker.cutoff},
        }

    def _fallback_synthesizer(self) -> Synthesizer | None:
        registration = self.registry.get("synthesizer", _settings.DEFAULT_SYNTHESIZER)
        component = None if registration is None else registration.component
        return component if isinstance(component, Synthesizer) else None

    # -- comps ---------------------------------------------------------------

    def find_comps(
        self, image: ImageInput | Photo, identification: Identification, *,
        deadline: float | None = None,
    ) -> list[Comp]:
        """Comparable listings for the identified item, most alike first."""
        if not isinstance(identification, Identification):
            raise ConfigurationError(
                "identification must be the restyle.Identification of the photo (from "
                f"Engine.identify), got {type(identification).__name__}")
        with self._running("find_comps"):
            budget = self._budget(deadline)
            _, reranked, _ = self._find_comps(self._load_photo(image, budget), identification,
                                              budget)
            return list(reranked.comps)

    def _photo_embedding(self, photo: Photo, deadline: float) -> np.ndarray:
        encoder = self.encoder
        known = photo.vector(encoder.model_id)
        if known is not None:  # the experts needed it too: no call to wait for
            return known
        label = f"encoder {encoder.name}"
        try:
            vector: np.ndarray = _budget.call(encoder, label, encoder.photo_vector, photo,
                                              deadline=deadline)
        except (_budget.Overdue, _budget.ComponentBusy) as exc:
            raise EncoderError(f"the photo could not be encoded: {exc}") from None
        except RestyleError:
            raise
        except Exception as exc:
            raise EncoderError(
                f"{label} could not encode the photo: {describe(exc)}"
            ) from (None if exposes_secret(exc) else exc)
        return vector

    def _find_comps(
        self, photo: Photo, identification: Identification, budget: Budget,
        hidden: frozenset[str] = frozenset(),
    ) -> tuple[SearchResult, RerankResult, np.ndarray]:
        search_deadline = budget.stage("search").end
        embedding = self._photo_embedding(photo, search_deadline)
        search = search_marketplaces(
            self.marketplaces, photo, identification, embedding=embedding,
            model_id=self.encoder.model_id, wanted=self.comps_wanted, limit=self.max_comps,
            deadline=search_deadline, exclude=hidden,
        )
        reranked = self.reranker.rerank(
            embedding, [(f.listing, f.step) for f in search.found], encoder=self.encoder,
            known_vectors=search.known_vectors, identification=identification,
            deadline=budget.stage("rerank").end,
        )
        return search, reranked, embedding

    # -- analyze -------------------------------------------------------------

    def analyze(
        self, image: ImageInput | Photo, *, deadline: float | None = None,
        exclude: Iterable[str] = (), record: str | os.PathLike[str] | None = None,
    ) -> Analysis:
        """Identify the item, find and re-rank comps, and estimate a price.

        The whole analysis ends by ``deadline`` seconds (the Engine's
        ``deadline`` by default), whatever the components and servers do: each
        stage gets its share (see docs/guarantees.md) and what one leaves
        unused goes to the next. Raises only :class:`RestyleError`.

        ``exclude`` holds listings out of this analysis, by
        :attr:`Listing.key` (``"catalog:nw-jacket-blue"``): no marketplace's
        answer includes them, and the local catalog hides them from every
        component (the ``catalog`` expert's neighbours too), with nothing
        rebuilt. ``record`` is a directory where what each stage returned is
        written (see :func:`restyle.testing.load_recording`).
        """
        hidden = _keys(exclude)
        record = _record_dir(record)
        with self._running("analyze", hidden=hidden):
            budget = self._budget(deadline)
            photo = self._load_photo(image, budget)
            identified = self._identify(photo, budget)
            search, reranked, embedding = self._find_comps(
                photo, identified.identification, budget, hidden)
            price = estimate_price(reranked.comps, minimum_comps=self.minimum_comps,
                                   half_life_days=self.half_life_days)
            analysis = Analysis(
                photo=photo.info(),
                opinions=identified.opinions,
                identification=identified.identification,
                query=search.query,
                comps=reranked.comps,
                price=price,
                model_id=self.encoder.model_id,
                warnings=search.warnings + reranked.warnings,
                elapsed=round(time.monotonic() - budget.start, 4),
            )
            if record is not None:
                write_recording(record, Trace(
                    photo=photo, analysis=analysis, found=search.found,
                    search_warnings=search.warnings, rerank_warnings=reranked.warnings,
                    embedding=embedding, vectors=reranked.vectors,
                    settings=self._recorded_settings(),
                ))
            return analysis

    def analyze_iter(
        self, images: Iterable[ImageInput], *, deadline: float | None = None,
        executor: Executor = None,
    ) -> Iterator[Analysis | RestyleError]:
        """Analyze photos as :meth:`analyze_many` does, yielding each photo's
        Analysis, or the RestyleError it failed with, in input order.

        ``images`` is read :data:`BATCH_PHOTOS` at a time and each batch's
        results are yielded as soon as it is done, so a stream of photos of any
        length (a generator over a folder) runs in bounded memory and the caller
        can write each result out as it comes. With an ``executor`` (see
        :meth:`analyze_many`) ``images`` is read whole first, and the results
        still come as the Ray actors finish them, in input order.
        """
        if deadline is not None:
            _seconds("deadline", deadline)
        images = _images(images)
        if executor is None:
            return self._analyze_stream(images, deadline=deadline)
        # Each actor's Engine is made from this one's arguments, with the
        # catalog directory this Engine resolved (from the environment, or
        # relative to here).
        arguments = {**self._arguments, "catalog": str(self.catalog_dir.absolute())}
        items = images if isinstance(images, Sequence) else list(images)
        return analyze_on_ray(partial(Engine, **arguments), items, deadline=deadline,
                              executor=executor, batch_photos=BATCH_PHOTOS)

    @overload
    def analyze_many(
        self, images: Iterable[ImageInput], *, progress: bool | None = ...,
        return_exceptions: Literal[False] = ..., deadline: float | None = ...,
        executor: Executor = ...,
    ) -> list[Analysis]: ...

    @overload
    def analyze_many(
        self, images: Iterable[ImageInput], *, progress: bool | None = ...,
        return_exceptions: Literal[True], deadline: float | None = ...,
        executor: Executor = ...,
    ) -> list[Analysis | RestyleError]: ...

    def analyze_many(
        self, images: Iterable[ImageInput], *, progress: bool | None = None,
        return_exceptions: bool = False, deadline: float | None = None,
        executor: Executor = None,
    ) -> list[Analysis] | list[Analysis | RestyleError]:
        """Analyze several photos, with a progress bar on a terminal.

        Photos are taken :data:`BATCH_PHOTOS` at a time: their embeddings are
        computed in one batch and their analyses run concurrently, while the
        model embeds the next batch; at most two batches are held, so memory
        stays bounded however many photos there are. ``deadline`` applies to
        each photo. With ``return_exceptions=True`` a photo that fails gives
        its RestyleError in its place and the others go on (as in
        ``asyncio.gather``).

        ``executor="ray"`` (or a :class:`~restyle.RayExecutor`) runs the
        analyses on Ray actors, each with an Engine made from this one's
        arguments (which must be picklable) and ``RESTYLE_*`` settings; the
        results are the same, in the same order (see docs/scale.md).
        """
        results: list[Any] = []
        images = _images(images)
        items = images if isinstance(images, Sequence) else list(images)
        stream = self.analyze_iter(items, deadline=deadline, executor=executor)
        bar = progress_bar(total=len(items), desc="Analyzing", unit="photo", enabled=progress)
        try:
            for result in stream:
                if isinstance(result, RestyleError) and not return_exceptions:
                    raise result
                results.append(result)
                bar.update(1)
        finally:
            bar.close()
            # A photo's error ends the loop early: stop the stream now (on Ray,
            # while the cluster is still there to hear it), not when it is collected.
            if isinstance(stream, Generator):
                stream.close()
        return results

    def _analyze_stream(
        self, images: Iterable[ImageInput | Photo], *, deadline: float | None
    ) -> Iterator[Analysis | RestyleError]:
        """Each photo's Analysis or RestyleError, in input order, a batch at a time.

        The next batch is decoded and its embeddings started before this batch's
        analyses run, so the model works while they search: at most two batches
        are held at once."""
        if deadline is not None:
            _seconds("deadline", deadline)
        started: _StartedBatch | None = None
        batch: list[ImageInput | Photo] = []
        for image in images:
            batch.append(image)
            if len(batch) == BATCH_PHOTOS:
                following = self._start_batch(batch, deadline)
                if started is not None:
                    yield from self._finish_batch(started, deadline)
                started, batch = following, []
        last = self._start_batch(batch, deadline) if batch else None
        if started is not None:
            yield from self._finish_batch(started, deadline)
        if last is not None:
            yield from self._finish_batch(last, deadline)

    def _start_batch(self, images: Sequence[ImageInput | Photo],
                     deadline: float | None) -> _StartedBatch:
        """Decode the photos and start their embeddings in one encoder call."""
        photos: list[Photo | RestyleError] = []
        seconds = self.deadline if deadline is None else deadline
        for image in images:
            try:
                photos.append(load_photo(image, deadline=time.monotonic()
                                         + seconds * STAGE_MARKS["experts"]))
            except RestyleError as exc:
                photos.append(exc)
        decoded = [p for p in photos if isinstance(p, Photo)]
        pending = None
        if len(decoded) > 1:  # one photo alone gains nothing from a batch
            encoder = self.encoder
            with self._running("analyze_many"):
                try:
                    pending = _budget.start(
                        encoder, f"encoder {encoder.name}", encoder.encode_images,
                        [p.image for p in decoded],
                        deadline=time.monotonic() + seconds * STAGE_MARKS["search"],
                        check=partial(check_vectors, encoder, count=len(decoded)))
                except RestyleError as exc:
                    logger.debug("batch encoding of %d photos not started: %s",
                                 len(decoded), exc)
        return _StartedBatch(photos=photos, embeddings=pending)

    def _finish_batch(self, started: _StartedBatch,
                      deadline: float | None) -> list[Analysis | RestyleError]:
        """The batch's analyses, run concurrently once its embeddings are in."""
        photos = started.photos
        if started.embeddings is not None:
            self._remember_embeddings(started.embeddings,
                                      [p for p in photos if isinstance(p, Photo)])

        def one(photo: Photo | RestyleError) -> Analysis | RestyleError:
            if isinstance(photo, RestyleError):
                return photo
            try:
                return self.analyze(photo, deadline=deadline)
            except RestyleError as exc:
                return exc

        if len(photos) == 1:
            return [one(photos[0])]
        with ThreadPoolExecutor(max_workers=min(ANALYSIS_WORKERS, len(photos)),
                                thread_name_prefix="restyle analyze") as pool:
            return list(pool.map(one, photos))

    def _remember_embeddings(self, pending: Pending, photos: Sequence[Photo]) -> None:
        """Give each photo its vector from the batch; on any failure each
        analysis encodes its photo itself."""
        model_id = self.encoder.model_id
        try:
            vectors = pending.result()  # checked on the worker
        except Exception as exc:
            logger.debug("batch encoding of %d photos failed: %s", len(photos), exc)
            return
        for photo, vector in zip(photos, vectors, strict=True):
            photo.keep_vector(model_id, vector)


@dataclass(frozen=True, slots=True)
class _StartedBatch:
    """Photos of :meth:`Engine.analyze_many` decoded (or why not), and their
    embeddings under way in one encoder call (None when not started)."""

    photos: list[Photo | RestyleError]
    embeddings: Pending | None


def _model_encoder(model: object, encoder: str | Encoder) -> Encoder:
    """The openclip encoder for ``model``; ``model`` with another encoder is a mistake."""
    if not isinstance(model, str) or not model.strip():
        raise ConfigurationError(f"model must be a model name such as "
                                 f"'ViT-B-32/laion2b_s34b_b79k', got {model!r}")
    if encoder != _settings.DEFAULT_ENCODER:
        raise ConfigurationError(
            f"model= chooses the {_settings.DEFAULT_ENCODER} encoder's model, but the encoder "
            f"is {getattr(encoder, 'name', encoder)!r}; configure that encoder itself instead"
        )
    from restyle.encoders.openclip import OpenClipEncoder

    chosen = OpenClipEncoder(model)
    try:
        chosen.spec  # noqa: B018 - parse now, so a malformed name fails here, not mid-analysis
    except RestyleError as exc:
        raise ConfigurationError(str(exc)) from None
    return chosen


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a number of seconds, got {value!r}")
    if not (math.isfinite(value) and 0 < value <= MAX_DEADLINE):
        raise ConfigurationError(f"{name} must be a positive number of seconds, at most "
                                 f"{MAX_DEADLINE:,.0f}, got {value!r}")
    return float(value)


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_COUNT:
        raise ConfigurationError(
            f"{name} must be a whole number from 1 to {MAX_COUNT:,}, got {value!r}")
    return int(value)


def _keys(value: object) -> frozenset[str]:
    """``exclude``: listing keys, as a set (None: none)."""
    if value is None:
        return frozenset()
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise ConfigurationError(
            "exclude must be a collection of listing keys such as ['catalog:nw-1'], "
            f"got {type(value).__name__}")
    keys = list(value)
    for key in keys:
        if not isinstance(key, str):
            raise ConfigurationError(
                f"exclude must hold listing keys (strings), found {type(key).__name__}")
    return frozenset(keys)


def _record_dir(value: object) -> str | os.PathLike[str] | None:
    if value is not None and not isinstance(value, (str, os.PathLike)):
        raise ConfigurationError(f"record must be a directory path, got {type(value).__name__}")
    return value


def _images(value: object) -> Iterable[Any]:
    """``images`` of analyze_many / analyze_iter: an iterable of photos, not one photo."""
    if isinstance(value, (str, bytes, bytearray, memoryview, os.PathLike)) or not isinstance(
            value, Iterable) or hasattr(value, "read"):
        raise ConfigurationError(
            f"images must be a list (or any iterable) of photos, got {type(value).__name__}; "
            "for one photo use analyze()")
    return value


def _renamed(name: str, value: Any, default: Any, old_name: str,
             old_value: Any) -> tuple[Any, str]:
    """``value`` and ``name``, or the value given under the option's deprecated
    ``old_name`` and that name (for messages)."""
    if old_value is None:
        return value, name
    if value != default:
        raise ConfigurationError(f"give {name} only ({old_name} is its deprecated name)")
    _deprecated(old_name, name, stacklevel=4)
    return old_value, old_name


def _deprecated(old: str, new: str, *, stacklevel: int = 3) -> None:
    warnings.warn(f"{old} is deprecated; use {new}", DeprecationWarning, stacklevel=stacklevel)


def _check_parts(*, plugins: object, fetcher: object, reranker: object, catalog: object) -> None:
    if isinstance(plugins, (str, bytes)) or not isinstance(plugins, Sequence):
        raise ConfigurationError("plugins must be a list of plugin modules or objects")
    if fetcher is not None and not isinstance(fetcher, Fetcher):
        raise ConfigurationError(f"fetcher must be a restyle.Fetcher, got {fetcher!r}")
    if reranker is not None and not isinstance(reranker, Reranker):
        raise ConfigurationError(f"reranker must be a restyle.Reranker, got {reranker!r}")
    if catalog is not None and not isinstance(catalog, (str, os.PathLike)):
        raise ConfigurationError(f"catalog must be a directory path, got {catalog!r}")
    if reranker is not None and fetcher is not None and reranker.fetcher is not fetcher:
        raise ConfigurationError(
            "pass the fetcher to the Reranker (Reranker(fetcher=...)), not beside it"
        )


def _names(option: str, value: object) -> list[Any] | None:
    """A list of component names or instances; a bare string is a mistake worth naming."""
    if value is None:
        return None
    if isinstance(value, str):
        suggestion = [part.strip() for part in value.split(",") if part.strip()]
        raise ConfigurationError(
            f"{option} must be a list of names or instances, not the string {value!r}; "
            f"did you mean {option}={suggestion!r}?"
        )
    if isinstance(value, Component) or not isinstance(value, Iterable) or isinstance(
        value, (bytes, Mapping)
    ):
        raise ConfigurationError(
            f"{option} must be a list of names or instances, got {type(value).__name__}"
        )
    return list(value)


def _check_name(component: Component) -> None:
    try:
        check_component(component, Component)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(str(exc)) from None


def _unique(kind: str, components: Sequence[Component]) -> None:
    names = [c.name for c in components]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigurationError(f"{kind} {', '.join(duplicates)} selected more than once")


"""The Engine: runs the pipeline from one photo to an Analysis."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import numpy as np

from restyle import _settings
from restyle._errors import ConfigurationError, PluginError, RestyleError
from restyle._input.fetching import Fetcher
from restyle._input.imaging import ImageInput, Photo
from restyle._input.item import Item, as_item
from restyle._listing import ListingDraft, Taxonomy, make_draft
from restyle._options import (
    check_count,
    check_identification,
    check_images,
    check_keys,
    check_moment,
    check_name,
    check_names,
    check_opinions,
    check_parts,
    check_record_dir,
    check_seconds,
    check_unique,
    deprecated,
    model_encoder,
    renamed,
    resolve_component,
)
from restyle._pipeline.batching import BATCH_PHOTOS, Batches
from restyle._pipeline.budget import CALL_LIMIT, Budget, CallLimit
from restyle._pipeline.identify import IdentifyResult, examine, synthesize
from restyle._pipeline.pricing import (
    DEFAULT_HALF_LIFE_DAYS,
    MINIMUM_COMPS,
    check_half_life_days,
    check_minimum_comps,
    estimate_price,
)
from restyle._pipeline.rerank import Reranker, RerankResult
from restyle._pipeline.roles import prepare_item, warm_up_roles, whole_item_vectors
from restyle._pipeline.search import SearchResult, search_marketplaces
from restyle._pipeline.trace import Trace, write_recording
from restyle._plugin.components import (
    CatalogView,
    Context,
    Encoder,
    Expert,
    Marketplace,
    Synthesizer,
    activate,
    deactivate,
)
from restyle._plugin.registry import PluginRegistry
from restyle._progress import progress_bar
from restyle._ray.executor import Executor, RayExecutor, analyze_on_ray, ray_executor
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

__all__ = ["BATCH_PHOTOS", "DEFAULT_DEADLINE", "Engine"]

if TYPE_CHECKING:
    from restyle._engine.drafting import DraftTaxonomies

logger = logging.getLogger("restyle")

#: Longest side of the thumbnails of an analysis's strip of photos (``Analysis.photos``).
STRIP_SIDE = 96

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
        precision: str | None = None,
        catalog: str | Path | Catalog | None = None,
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
        self.deadline = check_seconds("deadline", deadline)
        self.identify_budget = (
            None if identify_budget is None else check_seconds("identify_budget", identify_budget)
        )
        self.comps_wanted = check_count("comps_wanted", comps_wanted)
        self.max_comps = check_count("max_comps", max_comps)
        self.minimum_comps = check_minimum_comps(*renamed(
            "minimum_comps", minimum_comps, MINIMUM_COMPS,
            "minimum_price_comps", minimum_price_comps))
        self.half_life_days = check_half_life_days(*renamed(
            "half_life_days", half_life_days, DEFAULT_HALF_LIFE_DAYS,
            "price_half_life_days", price_half_life_days))
        check_parts(plugins=plugins, fetcher=fetcher, reranker=reranker)
        self.registry = PluginRegistry(
            plugins=plugins, load_entrypoints=load_entrypoints, strict=strict_plugins
        )
        self.reranker = reranker or Reranker(fetcher=fetcher or Fetcher())
        self._catalog, self.catalog_dir = _catalog_argument(catalog)
        self._catalog_lock = threading.Lock()
        self._calls = CallLimit()
        self._drafts: DraftTaxonomies | None = None  # made by the first draft
        self._resolve_components(encoder=encoder, model=model, precision=precision,
                                 experts=experts, synthesizer=synthesizer,
                                 marketplaces=marketplaces)
        if self._catalog is not None and self._catalog.model_id != self.encoder.model_id:
            raise ConfigurationError(
                f"the catalog {self._catalog.directory} holds vectors of model "
                f"{self._catalog.model_id}, not of this Engine's encoder "
                f"({self.encoder.model_id}): open it with the same model")

    def _resolve_components(
        self, *, encoder: str | Encoder | None, model: str | None, precision: str | None,
        experts: Sequence[str | Expert] | None, synthesizer: str | Synthesizer | None,
        marketplaces: Sequence[str | Marketplace] | None,
    ) -> None:
        """The components by name or as given, checked, each attached once."""
        expert_specs: Sequence[Any] | None = check_names("experts", experts)
        market_specs: Sequence[Any] | None = check_names("marketplaces", marketplaces)
        encoder_spec = encoder or _settings.env_str("RESTYLE_ENCODER") or _settings.DEFAULT_ENCODER
        if model is not None or precision is not None:
            encoder_spec = model_encoder(
                model if model is not None
                else _settings.env_str("RESTYLE_MODEL") or _settings.DEFAULT_MODEL,
                encoder_spec, precision)
        resolve = partial(resolve_component, self.registry)
        self.encoder: Encoder = resolve(
            "encoder", encoder_spec, Encoder)  # type: ignore[type-abstract]
        if expert_specs is None:
            expert_specs = _settings.env_list("RESTYLE_EXPERTS", _settings.DEFAULT_EXPERTS)
        self.experts: tuple[Expert, ...] = tuple(
            resolve("expert", e, Expert) for e in expert_specs)
        self.synthesizer: Synthesizer = resolve(
            "synthesizer", synthesizer or _settings.env_str("RESTYLE_SYNTHESIZER")
            or _settings.DEFAULT_SYNTHESIZER, Synthesizer)  # type: ignore[type-abstract]
        if market_specs is None:
            market_specs = _settings.env_list("RESTYLE_MARKETPLACES",
                                              _settings.DEFAULT_MARKETPLACES)
        self.marketplaces: tuple[Marketplace, ...] = tuple(
            resolve("marketplace", m, Marketplace) for m in market_specs)
        check_unique("expert", self.experts)
        check_unique("marketplace", self.marketplaces)
        # Components get a read-only view of the catalog, never the Catalog itself.
        self.context = Context(encoder=self.encoder, fetcher=self.fetcher,
                               open_catalog=lambda: HeldOutCatalog(self._open_catalog(), ()))
        for component in (self.encoder, *self.experts, self.synthesizer, *self.marketplaces):
            check_name(component)
            component.attach(self.context)

    @property
    def minimum_price_comps(self) -> int:
        """Deprecated: :attr:`minimum_comps`."""
        deprecated("Engine.minimum_price_comps", "Engine.minimum_comps")
        return self.minimum_comps

    @property
    def price_half_life_days(self) -> float:
        """Deprecated: :attr:`half_life_days`."""
        deprecated("Engine.price_half_life_days", "Engine.half_life_days")
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

    def warm_up(self) -> None:
        """Load now what the first analysis would otherwise load inside its own
        deadline: the encoder's model, the photo roles' and the ``clip``
        expert's prompt vectors,
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
            try:
                warm_up_roles(self.encoder)
            except Exception as exc:
                logger.info("the photo roles' vectors are not ready: %s", describe(exc))
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
        self, source: str | Path | None = None, *, progress: bool | None = None,
        images_root: str | Path | None = None, limits: ListingLimits | None = None,
        executor: Executor = None, checkpoint_every: int = 2000,
        listings: str | Path | None = None,
    ) -> BuildReport:
        """Add the listings of ``source``, a JSONL, CSV or Parquet file, to this
        Engine's catalog (see :meth:`Catalog.build`); image URLs are fetched with
        this Engine's fetcher; the work is saved every ``checkpoint_every``
        listings. ``executor="ray"`` or a :class:`~restyle.RayExecutor` builds on
        Ray, connected before the catalog is made: a cluster out of reach leaves
        no catalog behind. (``listings=`` is the deprecated name of ``source``.)"""
        source = renamed("source", source, None, "listings", listings)[0]
        if source is None:
            raise ConfigurationError("build_catalog needs the listings file (source)")
        if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, int) \
                or checkpoint_every < 1:
            raise ConfigurationError(
                f"checkpoint_every must be a whole number of listings, at least 1, got "
                f"{checkpoint_every!r}")
        if executor is not None:
            executor = ray_executor(executor)
            executor.connect()
        with self._running("build_catalog"):
            with self._catalog_lock:
                if self._catalog is None:
                    self._catalog = Catalog.open(self.catalog_dir, self.encoder, create=True)
                catalog = self._catalog
            return catalog.build(source, self.encoder, progress=progress,
                                 images_root=images_root, limits=limits, fetcher=self.fetcher,
                                 executor=executor, checkpoint_every=checkpoint_every)

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
        return Budget.of(self.deadline if deadline is None else check_seconds("deadline", deadline))

    def _load_item(self, image: ImageInput | Photo | Item, budget: Budget,
                   problems: list[str] | None = None) -> list[Photo]:
        """The item's photos, read by the end of the experts' stage, with their
        roles, the whole-item ones first (see :func:`prepare_item`); a photo
        that could not be read is told in ``problems``."""
        photos, unread = prepare_item(as_item(image), encoder=self.encoder,
                                      deadline=budget.stage("experts").end)
        if problems is not None:
            problems.extend(unread)
        return photos

    def _experts_deadline(self, budget: Budget) -> float:
        return budget.stage("experts", cap=self.identify_budget).end

    def examine(self, image: ImageInput | Photo | Item, *,
                deadline: float | None = None) -> tuple[Opinion, ...]:
        """Every expert's Opinion of the photo (of each photo of an
        :class:`~restyle.Item`, each naming its photo), gathered concurrently.

        Each expert runs under its own ``timeout`` within the experts' share
        of ``deadline`` (seconds; the Engine's by default). One that raises,
        times out, hangs or answers off its contract gives an Opinion with an
        error status; the others are unaffected.
        """
        with self._running("examine"):
            budget = self._budget(deadline)
            photos = self._load_item(image, budget)
            return examine(self.experts, photos, deadline=self._experts_deadline(budget))

    def identify(self, image: ImageInput | Photo | Item, *,
                 deadline: float | None = None) -> Identification:
        """What the item in the photo (or the photos of an Item) is."""
        with self._running("identify"):
            budget = self._budget(deadline)
            return self._identify(self._load_item(image, budget), budget).identification

    def _identify(self, photos: Sequence[Photo], budget: Budget) -> IdentifyResult:
        opinions = examine(self.experts, photos, deadline=self._experts_deadline(budget))
        identification = synthesize(
            self.synthesizer, opinions, photos, deadline=budget.stage("synthesize").end,
            fallback=self._fallback_synthesizer, borrow_until=budget.stage("search").end,
        )
        return IdentifyResult(opinions=opinions, identification=identification)

    def synthesize(self, opinions: Sequence[Opinion], image: ImageInput | Photo | Item, *,
                   deadline: float | None = None) -> Identification:
        """The Identification this Engine's synthesizer makes of ``opinions``
        (experts' opinions of the photo, e.g. recorded ones), falling back to
        the ``consensus`` synthesizer as an analysis does; all within
        ``deadline`` seconds (the Engine's by default), a fifth of it kept for
        the fallback."""
        opinions = check_opinions(opinions)
        with self._running("synthesize"):
            budget = self._budget(deadline)
            photos = self._load_item(image, budget)
            return synthesize(
                self.synthesizer, opinions, photos,
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
        self, image: ImageInput | Photo | Item, identification: Identification, *,
        deadline: float | None = None,
    ) -> list[Comp]:
        """Comparable listings for the identified item, most alike first."""
        check_identification(identification)
        with self._running("find_comps"):
            budget = self._budget(deadline)
            _, reranked, _ = self._find_comps(self._load_item(image, budget), identification,
                                              budget)
            return list(reranked.comps)

    def _find_comps(
        self, photos: Sequence[Photo], identification: Identification, budget: Budget,
        hidden: frozenset[str] = frozenset(),
    ) -> tuple[SearchResult, RerankResult, np.ndarray]:
        """Search with the photos that show the item whole (all of them when
        none does), by their vectors' normalised mean; re-rank each comp by its
        best match among them. Returns their vectors, one row each."""
        search_deadline = budget.stage("search").end
        whole, rows, embedding = whole_item_vectors(photos, self.encoder, search_deadline)
        search = search_marketplaces(
            self.marketplaces, whole, identification, embedding=embedding,
            model_id=self.encoder.model_id, wanted=self.comps_wanted, limit=self.max_comps,
            deadline=search_deadline, exclude=hidden,
        )
        reranked = self.reranker.rerank(
            rows, [(f.listing, f.step) for f in search.found], encoder=self.encoder,
            known_vectors=search.known_vectors, identification=identification,
            deadline=budget.stage("rerank").end,
        )
        return search, reranked, rows

    # -- analyze -------------------------------------------------------------

    def analyze(
        self, image: ImageInput | Photo | Item, *, deadline: float | None = None,
        exclude: Iterable[str] = (), record: str | os.PathLike[str] | None = None,
        as_of: datetime | None = None,
    ) -> Analysis:
        """Identify the item, find and re-rank comps, and estimate a price.

        ``image`` is one photo, or an :class:`~restyle.Item` of up to
        :data:`~restyle.ITEM_MAX_PHOTOS` photos of one item (the whole item,
        its brand tag, its care label, details, flaws): every expert examines
        every photo, the synthesizer fuses what they saw, and the comps are
        found and re-ranked with the photos that show the item whole. A
        photo of an item that cannot be read is told in the warnings; the
        analysis fails only when none can.

        The whole analysis ends by ``deadline`` seconds (the Engine's
        ``deadline`` by default), whatever the components and servers do: each
        stage gets its share (see docs/guarantees.md) and what one leaves
        unused goes to the next. Raises only :class:`RestyleError`.

        ``exclude`` holds listings out of this analysis, by
        :attr:`Listing.key` (``"catalog:nw-jacket-blue"``): no marketplace's
        answer includes them, and the local catalog hides them from every
        component (the ``catalog`` expert's neighbours too), with nothing
        rebuilt. ``record`` is a directory where what each stage returned is
        written (see :func:`restyle.testing.load_recording`). ``as_of`` is the
        moment sold comps' ages are counted from (now by default): the price an
        item would have been given then (a naive datetime is taken as UTC).
        """
        hidden = check_keys(exclude)
        record = check_record_dir(record)
        moment = check_moment("as_of", as_of)
        with self._running("analyze", hidden=hidden):
            budget = self._budget(deadline)
            problems: list[str] = []
            photos = self._load_item(image, budget, problems)
            identified = self._identify(photos, budget)
            search, reranked, embedding = self._find_comps(
                photos, identified.identification, budget, hidden)
            in_order = tuple(sorted(photos, key=lambda p: p.index))  # photos: whole ones first
            analysis = Analysis(
                photo=photos[0].info(),
                photos=tuple(p.info(thumbnail_side=STRIP_SIDE) for p in in_order),
                opinions=identified.opinions, identification=identified.identification,
                query=search.query, comps=reranked.comps,
                price=estimate_price(reranked.comps, minimum_comps=self.minimum_comps,
                                     half_life_days=self.half_life_days, now=moment),
                model_id=self.encoder.model_id,
                warnings=(*problems, *search.warnings, *reranked.warnings),
                elapsed=round(time.monotonic() - budget.start, 4),
            )
            if record is not None:
                write_recording(record, Trace(
                    photo=photos[0], photos=in_order,
                    analysis=analysis, found=search.found,
                    search_warnings=search.warnings, rerank_warnings=reranked.warnings,
                    embedding=embedding, vectors=reranked.vectors,
                    settings=self._recorded_settings(),
                ))
            return analysis

    def analyze_iter(
        self, images: Iterable[ImageInput | Item], *, deadline: float | None = None,
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
            check_seconds("deadline", deadline)
        images = check_images(images)
        if executor is None:
            return self._batches().analyze(images, deadline=deadline)
        # Each actor's Engine is made from this one's arguments, with the
        # catalog directory this Engine resolved (from the environment, or
        # relative to here).
        arguments = {**self._arguments, "catalog": str(self.catalog_dir.absolute())}
        # Items of several photos travel as they are: each actor's Engine reads them.
        items: Sequence[Any] = images if isinstance(images, Sequence) else list(images)
        return analyze_on_ray(partial(Engine, **arguments), items, deadline=deadline,
                              executor=executor, batch_photos=BATCH_PHOTOS)

    def _batches(self) -> Batches:
        """This Engine's analyses of many photos, :data:`BATCH_PHOTOS` at a time."""
        return Batches(
            analyze_one=lambda photo, deadline: self.analyze(photo, deadline=deadline),
            encoder=self.encoder, deadline=self.deadline,
            running=partial(self._running, "analyze_many"), size=BATCH_PHOTOS)

    @overload
    def analyze_many(
        self, images: Iterable[ImageInput | Item], *, progress: bool | None = ...,
        return_exceptions: Literal[False] = ..., deadline: float | None = ...,
        executor: Executor = ...,
    ) -> list[Analysis]: ...

    @overload
    def analyze_many(
        self, images: Iterable[ImageInput | Item], *, progress: bool | None = ...,
        return_exceptions: Literal[True], deadline: float | None = ...,
        executor: Executor = ...,
    ) -> list[Analysis | RestyleError]: ...

    def analyze_many(
        self, images: Iterable[ImageInput | Item], *, progress: bool | None = None,
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
        images = check_images(images)
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

    # -- listing drafts --------------------------------------------------------

    def draft(
        self, analysis: Analysis, *, price: str = "market", marketplace_id: str | None = None,
        condition: str | None = None, taxonomy: Taxonomy | None = None, offline: bool = False,
        write: bool = False, deadline: float | None = None,
    ) -> ListingDraft:
        """A listing draft of ``analysis`` a reseller can post (docs/listing.md).

        A method of the Engine, not of the Analysis: an analysis is a plain
        value that must stay readable anywhere, while a draft asks the
        marketplace (eBay's Taxonomy and Metadata APIs, with this process's
        eBay keys) and, with ``write=True``, this Engine's synthesizer, all
        under one deadline, as :meth:`analyze` does.

        ``price`` is ``"quick"``, ``"market"`` or ``"patient"``;
        ``marketplace_id`` eBay's (``EBAY_MARKETPLACE_ID`` or ``EBAY_US``);
        ``condition`` the item's condition when the photos do not tell it
        (``"new with tags"``, ``"used"``). ``taxonomy`` answers the category
        questions; by default eBay's, when ``EBAY_CLIENT_ID`` and
        ``EBAY_CLIENT_SECRET`` are set, and none (offline: a generic list of
        item specifics) otherwise or when ``offline``. ``write=True`` has the
        synthesizer write the description (its ``write_description``), checked
        against the evidence. Every call ends by ``deadline`` seconds
        (:data:`~restyle._listing.DRAFT_DEADLINE` or the Engine's, the
        shorter); what could not be decided is in ``problems``.
        """
        from restyle._engine.drafting import DraftTaxonomies  # only a draft needs it

        if self._drafts is None:
            self._drafts = DraftTaxonomies()
        chosen = self._drafts.settings(
            synthesizer=self.synthesizer, engine_deadline=self.deadline,
            marketplace_id=marketplace_id, taxonomy=taxonomy, offline=offline, write=write,
            deadline=deadline)
        with self._running("draft"):
            return make_draft(analysis, price=price, marketplace_id=chosen.marketplace_id,
                              taxonomy=chosen.taxonomy, condition=condition,
                              currency=chosen.currency, writer=chosen.writer,
                              deadline=chosen.seconds)


def _catalog_argument(catalog: object) -> tuple[Catalog | None, Path]:
    """``Engine(catalog=)``: an open Catalog (what ``engine.catalog`` gives) and
    its folder, or a folder (the environment's when None)."""
    if isinstance(catalog, Catalog):
        return catalog, catalog.directory
    if catalog is not None and not isinstance(catalog, (str, os.PathLike)):
        raise ConfigurationError(
            f"catalog must be a restyle.Catalog or its directory path, got {catalog!r}")
    return None, Path(catalog).expanduser() if catalog else _settings.catalog_dir()

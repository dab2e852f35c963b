"""The Engine: runs the pipeline from one photo to an Analysis."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout  # not the builtin before 3.11
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

from restyle import _settings
from restyle._catalog import Catalog, ListingLimits
from restyle._components import Component, Encoder, Expert, Marketplace, Synthesizer
from restyle._errors import (
    ConfigurationError,
    PluginError,
    RestyleError,
)
from restyle._fetching import Fetcher
from restyle._imaging import ImageInput, Photo, load_photo
from restyle._plugins import PluginRegistry
from restyle._pricing import MINIMUM_COMPS, estimate_price
from restyle._progress import progress_bar
from restyle._rerank import Reranker
from restyle._search import search_marketplaces
from restyle._types import Analysis, Comp, Identification, Opinion, OpinionStatus, Query

__all__ = ["Engine"]

logger = logging.getLogger("restyle")

C = TypeVar("C", bound=Component)


class Engine:
    """One configured pipeline. Thread-safe; build one per process and share it.

    Components are given by name (looked up among the registered plugins) or
    as instances. With no arguments the embedded defaults are used: the
    ``clip`` and ``catalog`` experts, the ``consensus`` synthesizer, the
    ``catalog`` marketplace and the ``openclip`` encoder, all offline.
    """

    def __init__(
        self,
        *,
        experts: Sequence[str | Expert] | None = None,
        synthesizer: str | Synthesizer | None = None,
        marketplaces: Sequence[str | Marketplace] | None = None,
        encoder: str | Encoder | None = None,
        catalog: str | Path | None = None,
        plugins: Sequence[object] = (),
        load_entrypoints: bool = True,
        strict_plugins: bool = False,
        identify_budget: float = 60.0,
        comps_wanted: int = 10,
        max_comps: int = 30,
        minimum_price_comps: int = MINIMUM_COMPS,
        fetcher: Fetcher | None = None,
        reranker: Reranker | None = None,
    ) -> None:
        if identify_budget <= 0:
            raise ConfigurationError("identify_budget must be positive")
        self.registry = PluginRegistry(
            plugins=plugins, load_entrypoints=load_entrypoints, strict=strict_plugins
        )
        self.identify_budget = identify_budget
        self.comps_wanted = comps_wanted
        self.max_comps = max_comps
        self.minimum_price_comps = minimum_price_comps
        if reranker is not None and fetcher is not None and reranker.fetcher is not fetcher:
            raise ConfigurationError(
                "pass the fetcher to the Reranker (Reranker(fetcher=...)), not beside it"
            )
        self.reranker = reranker or Reranker(fetcher=fetcher or Fetcher())
        self.catalog_dir = Path(catalog).expanduser() if catalog else _settings.catalog_dir()
        self._catalog: Catalog | None = None
        self._catalog_lock = threading.Lock()

        self.encoder: Encoder = self._resolve(
            "encoder",
            encoder or _settings.env_str("RESTYLE_ENCODER") or _settings.DEFAULT_ENCODER,
            Encoder,  # type: ignore[type-abstract]
        )
        expert_names = experts if experts is not None else _settings.env_list(
            "RESTYLE_EXPERTS", _settings.DEFAULT_EXPERTS
        )
        self.experts: tuple[Expert, ...] = tuple(
            self._resolve("expert", e, Expert)  # type: ignore[type-abstract]
            for e in expert_names
        )
        self.synthesizer: Synthesizer = self._resolve(
            "synthesizer",
            synthesizer
            or _settings.env_str("RESTYLE_SYNTHESIZER")
            or _settings.DEFAULT_SYNTHESIZER,
            Synthesizer,  # type: ignore[type-abstract]
        )
        market_names = marketplaces if marketplaces is not None else _settings.env_list(
            "RESTYLE_MARKETPLACES", _settings.DEFAULT_MARKETPLACES
        )
        self.marketplaces: tuple[Marketplace, ...] = tuple(
            self._resolve("marketplace", m, Marketplace)  # type: ignore[type-abstract]
            for m in market_names
        )
        _unique("expert", self.experts)
        _unique("marketplace", self.marketplaces)
        for component in (self.encoder, *self.experts, self.synthesizer, *self.marketplaces):
            component.attach(self)

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
        """Plugins that failed to load (each also issued a PluginLoadWarning)."""
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
            known = ", ".join(self.registry.names(kind)) or "none"
            message = f"no {kind} named {spec!r} is registered (available: {known})"
            if self.registry.errors:
                failed = "; ".join(str(e) for e in self.registry.errors)
                message += f". Plugins that failed to load: {failed}"
            raise ConfigurationError(message)
        component = registration.component
        assert isinstance(component, base)
        return component

    @property
    def catalog(self) -> Catalog:
        """The local catalog, opened on first use for this Engine's encoder."""
        with self._catalog_lock:
            if self._catalog is None:
                self._catalog = Catalog.open(self.catalog_dir, self.encoder)
            return self._catalog

    def build_catalog(
        self, listings: str | Path, *, progress: bool | None = None,
        images_root: str | Path | None = None, limits: ListingLimits | None = None,
    ) -> Any:
        """Add the listings of a JSONL, CSV or Parquet file to this Engine's catalog
        (see :meth:`Catalog.build`); image URLs are fetched with this Engine's fetcher."""
        with self._catalog_lock:
            if self._catalog is None:
                self._catalog = Catalog.open(self.catalog_dir, self.encoder, create=True)
            catalog = self._catalog
        return catalog.build(listings, self.encoder, progress=progress, images_root=images_root,
                             limits=limits, fetcher=self.fetcher)

    # -- identify ------------------------------------------------------------

    def examine(self, image: ImageInput | Photo) -> tuple[Opinion, ...]:
        """Every expert's Opinion of the photo, gathered concurrently.

        Each expert runs under its own ``timeout`` inside the Engine's
        ``identify_budget``. One that raises, times out or hangs gives an
        Opinion with an error status; the others are unaffected.
        """
        photo = load_photo(image)
        start = time.monotonic()
        budget_end = start + self.identify_budget
        futures: list[tuple[Expert, Future[Opinion], float]] = []
        for expert in self.experts:
            future: Future[Opinion] = Future()
            thread = threading.Thread(
                target=_run_expert, args=(expert, photo, future),
                name=f"restyle-expert-{expert.name}", daemon=True,
            )
            thread.start()
            futures.append((expert, future, min(start + expert.timeout, budget_end)))
        opinions = []
        for expert, future, deadline in futures:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                opinion = future.result(timeout=remaining)
            except FutureTimeout:
                waited = time.monotonic() - start
                limit = min(expert.timeout, self.identify_budget)
                opinion = Opinion.failure(
                    expert.name, f"no answer within {limit:g} s",
                    status=OpinionStatus.TIMEOUT, latency=waited,
                )
                logger.warning("expert %s timed out after %.1f s", expert.name, waited)
            opinions.append(opinion)
        return tuple(opinions)

    def identify(self, image: ImageInput | Photo) -> Identification:
        """What the item in the photo is."""
        photo = load_photo(image)
        return self._synthesize(self.examine(photo), photo)

    def _synthesize(self, opinions: Sequence[Opinion], photo: Photo) -> Identification:
        try:
            return self.synthesizer.synthesize(opinions, photo=photo)
        except Exception as exc:
            if self.synthesizer.name == _settings.DEFAULT_SYNTHESIZER:
                raise
            fallback = self.registry.get("synthesizer", _settings.DEFAULT_SYNTHESIZER)
            if fallback is None:
                raise
            reason = f"{self.synthesizer.name} failed: {type(exc).__name__}: {exc}"
            logger.warning("%s; falling back to consensus", reason)
            ident = fallback.component.synthesize(opinions, photo=photo)  # type: ignore[attr-defined]
            return replace(ident, fallback_reason=reason)

    # -- comps ---------------------------------------------------------------

    def find_comps(
        self, image: ImageInput | Photo, identification: Identification
    ) -> list[Comp]:
        """Comparable listings for the identified item, most alike first."""
        comps, _, _ = self._find_comps(load_photo(image), identification)
        return comps

    def _find_comps(
        self, photo: Photo, identification: Identification
    ) -> tuple[list[Comp], Query | None, list[str]]:
        warnings: list[str] = []
        embedding = photo.embedding(self.encoder)
        found, first_query = search_marketplaces(
            self.marketplaces, photo, identification, embedding=embedding,
            model_id=self.encoder.model_id, wanted=self.comps_wanted, limit=self.max_comps,
            warnings=warnings,
        )
        comps = self.reranker.rerank(
            embedding, [(f.listing, f.step) for f in found], encoder=self.encoder,
            marketplaces=self.marketplaces, identification=identification, warnings=warnings,
        )
        return comps, first_query, warnings

    # -- analyze -------------------------------------------------------------

    def analyze(self, image: ImageInput | Photo) -> Analysis:
        """Identify the item, find and re-rank comps, and estimate a price."""
        start = time.monotonic()
        photo = load_photo(image)
        opinions = self.examine(photo)
        identification = self._synthesize(opinions, photo)
        comps, query, warnings = self._find_comps(photo, identification)
        price = estimate_price(comps, minimum_comps=self.minimum_price_comps)
        return Analysis(
            photo=photo.info(),
            opinions=opinions,
            identification=identification,
            query=query,
            comps=tuple(comps),
            price=price,
            model_id=self.encoder.model_id,
            warnings=tuple(warnings),
            elapsed=round(time.monotonic() - start, 4),
        )

    @overload
    def analyze_many(
        self, images: Iterable[ImageInput], *, progress: bool | None = ...,
        return_exceptions: Literal[False] = ...,
    ) -> list[Analysis]: ...

    @overload
    def analyze_many(
        self, images: Iterable[ImageInput], *, progress: bool | None = ...,
        return_exceptions: Literal[True],
    ) -> list[Analysis | RestyleError]: ...

    def analyze_many(
        self, images: Iterable[ImageInput], *, progress: bool | None = None,
        return_exceptions: bool = False,
    ) -> list[Analysis] | list[Analysis | RestyleError]:
        """Analyze several photos, with a progress bar on a terminal.

        With ``return_exceptions=True`` a photo that fails gives its
        RestyleError in its place and the others go on (as in ``asyncio.gather``).
        """
        items = list(images)
        results: list[Any] = []
        bar = progress_bar(total=len(items), desc="Analyzing", unit="photo", enabled=progress)
        try:
            for item in items:
                try:
                    results.append(self.analyze(item))
                except RestyleError as exc:
                    if not return_exceptions:
                        raise
                    results.append(exc)
                bar.update(1)
        finally:
            bar.close()
        return results


def _run_expert(expert: Expert, photo: Photo, future: Future[Opinion]) -> None:
    start = time.monotonic()
    try:
        opinion = expert.examine(photo)
        if not isinstance(opinion, Opinion):
            raise TypeError(f"examine() returned {type(opinion).__name__}, not an Opinion")
        opinion = replace(opinion, expert=expert.name, latency=time.monotonic() - start)
    except Exception as exc:
        logger.warning("expert %s failed: %s: %s", expert.name, type(exc).__name__, exc)
        opinion = Opinion.failure(
            expert.name, f"{type(exc).__name__}: {exc}", latency=time.monotonic() - start
        )
    future.set_result(opinion)


def _unique(kind: str, components: Sequence[Component]) -> None:
    names = [c.name for c in components]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigurationError(f"{kind} {', '.join(duplicates)} selected more than once")


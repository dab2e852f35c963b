"""Plugin answers are read, checked and copied on the component's worker, under
its deadline: lazy, endless, huge or booby-trapped answers cost that component
its answer, never the analysis, the caller's thread or its memory."""

from __future__ import annotations

import contextlib
import itertools
import threading
import tracemalloc
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from PIL import Image

from restyle import (
    Engine,
    Expert,
    Identification,
    Listing,
    Marketplace,
    Money,
    Observation,
    Opinion,
    PluginContractError,
    Query,
    RestyleError,
    Synthesizer,
)
from restyle._pipeline.budget import MAX_CALLS
from restyle._plugin.contracts import MAX_ITEMS, MAX_TEXT, plain
from tests.fakes.components import ColorEncoder, ListMarketplace, ScriptedExpert
from tests.test_faults import PHOTO, SLACK, engine, listing, release, timed

__all__ = ["release"]  # the fixture, shared with the fault tests


def stalling(first: object, release: threading.Event) -> Iterator[object]:
    yield first
    release.wait(30)  # a lazy answer that stops midway
    yield first


# -- lazy and endless answers ---------------------------------------------------------


def test_a_lazy_opinion_that_stalls_is_read_on_the_worker_under_its_deadline(
        release: threading.Event) -> None:
    observation = Observation(text="jacket", score=0.5, facet="category")
    lazy = ScriptedExpert("lazy", timeout=30.0, result=lambda photo: Opinion(
        expert="lazy", labels=stalling(observation, release)))  # type: ignore[arg-type]
    eng = engine(experts=[lazy, ScriptedExpert("eye", entities=[("Acme", 0.9, "brand")])])
    analysis, took = timed(lambda: eng.analyze(PHOTO, deadline=3))
    assert took < 3 + SLACK
    assert analysis.failed_experts["lazy"].startswith("no answer within")
    assert analysis.identification.brand == "Acme"


def test_a_lazy_search_answer_that_stalls_is_read_on_the_worker(
        release: threading.Event) -> None:
    class Lazy(Marketplace):
        name = "lazy"
        timeout = 30.0

        def search(self, query: Query) -> Sequence[Listing]:
            return stalling(listing(9), release)  # type: ignore[return-value]

    eng = engine(marketplaces=[Lazy(), ListMarketplace("m", [listing(i) for i in range(4)])])
    analysis, took = timed(lambda: eng.analyze(PHOTO, deadline=3))
    assert took < 3 + SLACK
    assert {c.listing.key for c in analysis.comps} == {f"m:{i}" for i in range(4)}
    assert any("lazy" in w for w in analysis.warnings)


def test_an_endless_group_of_observations_fails_that_expert_only() -> None:
    endless = ScriptedExpert("endless", result=lambda photo: Opinion(
        expert="endless",
        labels=itertools.repeat(Observation(text="x", score=0.1))))  # type: ignore[arg-type]
    eng = engine(experts=[endless, ScriptedExpert("eye", entities=[("Acme", 0.9, "brand")])])
    analysis = eng.analyze(PHOTO, deadline=10)
    assert f"more than {MAX_ITEMS:,} items" in analysis.failed_experts["endless"]
    assert analysis.identification.brand == "Acme"
    assert analysis.price is not None


# -- sizes and types of fields --------------------------------------------------------


def test_a_huge_product_name_is_refused_at_the_boundary_and_consensus_answers() -> None:
    class Huge(Synthesizer):
        name = "huge"

        def synthesize(self, opinions: Any, *, photo: Any) -> Identification:
            return Identification(product_name="x" * 100_000_000, brand="Acme")

    eng = engine(synthesizer=Huge())
    analysis, took = timed(lambda: eng.analyze(PHOTO, deadline=5))
    assert took < 5 + SLACK
    identification = analysis.identification
    assert identification.synthesizer == "consensus"
    assert f"longer than {MAX_TEXT:,} characters" in (identification.fallback_reason or "")
    assert analysis.query is not None  # the search went on


def test_an_observation_with_a_number_for_a_facet_fails_that_expert_only() -> None:
    odd = ScriptedExpert("odd", result=lambda photo: Opinion(
        expert="odd", labels=(Observation(text="x", score=0.5, facet=5),)))  # type: ignore[arg-type]
    eng = engine(experts=[odd, ScriptedExpert("eye", entities=[("Acme", 0.9, "brand")])])
    analysis = eng.analyze(PHOTO)
    assert "labels[0].facet is int, not a string" in analysis.failed_experts["odd"]
    assert analysis.identification.brand == "Acme"


class Trap(str):
    """A string whose methods raise: a plugin's own type must not reach the Analysis."""

    def __repr__(self) -> str:
        raise RuntimeError("trap: repr")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("trap: eq")

    def __hash__(self) -> int:
        raise RuntimeError("trap: hash")

    def __str__(self) -> str:
        raise RuntimeError("trap: str")


def test_plugin_subclasses_are_copied_into_restyles_own_types() -> None:
    class MyOpinion(Opinion):
        def __repr__(self) -> str:
            raise RuntimeError("trap: opinion repr")

    class TrapExpert(Expert):
        name = "trap"

        def examine(self, photo: Any) -> Opinion:
            return MyOpinion(expert="trap", entities=(
                Observation(text=Trap("Acme"), score=0.9, facet=Trap("brand")),))

    class TrapMarket(Marketplace):
        name = "m"

        def search(self, query: Query) -> Sequence[Listing]:
            return [Listing(marketplace="m", listing_id=Trap(str(i)), title=Trap("coat"),
                            price=Money(amount="10", currency="USD")) for i in range(3)]

    eng = engine(experts=[TrapExpert()], marketplaces=[TrapMarket()])
    analysis = eng.analyze(PHOTO)
    assert "Acme" in repr(analysis)  # no plugin code runs
    assert analysis.identification.brand == "Acme"
    opinion = analysis.opinions[0]
    assert type(opinion) is Opinion
    assert type(opinion.entities[0].text) is str
    assert all(type(c.listing.listing_id) is str and type(c.listing.title) is str
               for c in analysis.comps)
    assert analysis.to_json()


def test_plain_rebuilds_every_value_through_its_own_checks() -> None:
    observation = Observation(text="x", score=0.5)
    object.__setattr__(observation, "score", 7.0)  # past the constructor's check
    with pytest.raises(ValueError, match=r"score must be a number in \[0, 1\]"):
        plain(Opinion, Opinion(expert="e", labels=(observation,)))
    copied = plain(Opinion, Opinion(expert="e", labels=[Observation(text="y", score=0.2)]))
    assert copied.labels == (Observation(text="y", score=0.2),)  # a list became a tuple


# -- vectors -----------------------------------------------------------------------------


class NarrowEncoder(ColorEncoder):
    """Says its vectors are 64 wide, returns 7-wide ones."""

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        rows = np.ones((len(images), 7), np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_vectors_of_the_wrong_width_for_the_photo_are_refused() -> None:
    eng = engine(encoder=NarrowEncoder())
    with pytest.raises(PluginContractError, match="vectors of length 7, not its dim 64"):
        eng.analyze(PHOTO)


class BroadcastEncoder(ColorEncoder):
    """A zero-copy broadcast view 50 million wide: 200 MB once materialised."""

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.broadcast_to(np.float32(1.0), (len(images), 50_000_000))


def test_a_broadcast_view_is_refused_before_it_is_copied() -> None:
    eng = engine(encoder=BroadcastEncoder())
    tracemalloc.start()
    try:
        with pytest.raises(PluginContractError, match="length 50000000, not its dim 64"):
            eng.analyze(PHOTO)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 1024 * 1024


# -- threads -----------------------------------------------------------------------------


def test_reentrant_analyses_are_bounded_by_the_engines_call_limit() -> None:
    holder: dict[str, Engine] = {}
    peak = [0]

    class Recursive(Expert):
        name = "again"
        timeout = 30.0

        def examine(self, photo: Any) -> Opinion:
            peak[0] = max(peak[0], threading.active_count())
            with contextlib.suppress(RestyleError):
                holder["engine"].analyze(PHOTO, deadline=4)
            return Opinion(expert=self.name)

    before = threading.active_count()
    eng = engine(experts=[Recursive(), ScriptedExpert("eye", entities=[("Acme", 0.9, "brand")])])
    holder["engine"] = eng
    analysis, took = timed(lambda: eng.analyze(PHOTO, deadline=4))
    assert took < 4 + SLACK
    assert analysis.identification.brand == "Acme"
    assert peak[0] - before <= MAX_CALLS + 8

"""Fault injection with real threads: hung, raising and off-contract components.

Every analysis must end by its deadline (asserted with a generous second of
slack; bench/deadline.py measures the real figure), record what went wrong,
and leave no pile of threads behind.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from PIL import Image

from restyle import (
    CompFlag,
    ConfigurationError,
    EncoderError,
    Engine,
    Fetcher,
    Identification,
    Listing,
    Marketplace,
    Money,
    OpinionStatus,
    PluginContractError,
    Query,
    Reranker,
    RestyleError,
    Synthesizer,
)
from restyle.testing import FakeServer, Reply
from tests.conftest import ROOT
from tests.fakes.components import ColorEncoder, ListMarketplace, ScriptedExpert

PHOTO = Image.new("RGB", (64, 64), (200, 30, 30))
RED_VECTOR = ColorEncoder().encode_images([PHOTO])[0]
SLACK = 1.0


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """What hung components wait on; set at teardown so no thread outlives the test."""
    event = threading.Event()
    yield event
    event.set()


def listing(n: int, price: str = "10", marketplace: str = "m") -> Listing:
    return Listing(marketplace=marketplace, listing_id=str(n), title=f"item {n}",
                   price=Money(amount=price, currency="USD"))


def known(*ids: int) -> dict[str, np.ndarray]:
    return {f"m:{i}": RED_VECTOR for i in ids}


def engine(**options: Any) -> Engine:
    settings: dict[str, Any] = {
        "encoder": ColorEncoder(),
        "experts": [ScriptedExpert("eye", entities=[("Acme", 0.9, "brand"),
                                                    ("jacket", 0.8, "category")])],
        "marketplaces": [ListMarketplace("m", [listing(i) for i in range(4)],
                                         embeddings=known(*range(4)))],
        "load_entrypoints": False,
    }
    settings.update(options)
    return Engine(**settings)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.monotonic()
    return fn(), time.monotonic() - start


class HangingMarketplace(Marketplace):
    def __init__(self, name: str, hang: threading.Event, *, timeout: float = 30.0) -> None:
        self.name = name
        self.hang = hang
        self.timeout = timeout
        self.calls = 0

    def search(self, query: Query) -> Sequence[Listing]:
        self.calls += 1
        self.hang.wait()
        return []


class ReturningMarketplace(Marketplace):
    def __init__(self, name: str, answer: Callable[[Query], Any]) -> None:
        self.name = name
        self.answer = answer

    def search(self, query: Query) -> Sequence[Listing]:
        return self.answer(query)  # type: ignore[no-any-return]


class HangingSynthesizer(Synthesizer):
    name = "stuck"

    def __init__(self, hang: threading.Event) -> None:
        self.hang = hang

    def synthesize(self, opinions: Any, *, photo: Any) -> Identification:
        self.hang.wait()
        return Identification()


class ReturningSynthesizer(Synthesizer):
    name = "odd"

    def __init__(self, answer: object) -> None:
        self.answer = answer

    def synthesize(self, opinions: Any, *, photo: Any) -> Identification:
        return self.answer  # type: ignore[return-value]


class ScriptedEncoder(ColorEncoder):
    """A ColorEncoder whose image answers a test can replace, for comps only
    (the first call, the photo's own, is answered honestly) or for every call."""

    def __init__(self, images: Callable[[np.ndarray], Any], *, photo_too: bool = False,
                 hang: threading.Event | None = None) -> None:
        super().__init__()
        self.images = images
        self.photo_too = photo_too
        self.hang = hang
        self.calls = 0

    @property
    def model_id(self) -> str:
        return "scripted"

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        self.calls += 1
        honest = super().encode_images(images)
        if self.calls == 1 and not self.photo_too:
            return honest
        if self.hang is not None:
            self.hang.wait()
        return self.images(honest)  # type: ignore[no-any-return]


def png(colour: tuple[int, int, int]) -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def image_server() -> Iterator[FakeServer]:
    """Comp 0 is the photo's red; comps 1 and 2 are blue and green."""
    colours = [(200, 30, 30), (30, 30, 200), (30, 200, 30)]
    routes = {f"/{i}.png": Reply(body=png(c), content_type="image/png")
              for i, c in enumerate(colours)}
    with FakeServer(routes=routes) as server:
        yield server


def image_engine(server: FakeServer, encoder: ColorEncoder, **options: Any) -> Engine:
    listings = [Listing(marketplace="m", listing_id=str(i), title=f"item {i}",
                        price=Money(amount="10", currency="USD"), image_url=server.url(f"/{i}.png"))
                for i in range(3)]
    fetcher = Fetcher(trusted_networks=["127.0.0.0/8"])
    return engine(encoder=encoder, marketplaces=[ListMarketplace("m", listings)],
                  reranker=Reranker(fetcher=fetcher, cache=None), **options)


# -- experts --------------------------------------------------------------------


def test_a_hung_expert_costs_its_share_then_is_busy_not_a_new_thread(
    release: threading.Event,
) -> None:
    hung = ScriptedExpert("hung", hang=release, timeout=30)
    eng = engine(experts=[hung, ScriptedExpert("eye", entities=[("Acme", 0.9, "brand")])],
                 deadline=2.0)
    analysis, took = timed(lambda: eng.analyze(PHOTO))
    assert took < 2.0 + SLACK
    assert analysis.opinions[0].status is OpinionStatus.TIMEOUT
    assert analysis.identification.brand == "Acme"
    second, took = timed(lambda: eng.analyze(PHOTO))
    assert took < 1.0  # the stuck expert is not waited for again
    assert second.opinions[0].status is OpinionStatus.BUSY
    assert "busy" in second.failed_experts["hung"]
    assert hung.calls == 1
    release.set()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and second.opinions is not None:
        third = eng.analyze(PHOTO)
        if third.opinions[0].ok:
            break
        time.sleep(0.05)
    assert third.opinions[0].ok  # once the stuck call returned, it is asked again


def test_thread_count_stays_bounded_over_50_calls_with_hung_components(
    release: threading.Event,
) -> None:
    eng = engine(
        experts=[ScriptedExpert("hung", hang=release, timeout=30)],
        marketplaces=[HangingMarketplace("stuck", release),
                      ListMarketplace("m", [listing(1)], embeddings=known(1))],
        synthesizer=HangingSynthesizer(release),
        plugins=[], deadline=0.5,
    )
    def stuck() -> int:  # a worker inside a call carries the call's name
        return sum(1 for t in threading.enumerate()
                   if t.name.startswith("restyle ") and t.name != "restyle worker")

    before, stuck_before = threading.active_count(), stuck()
    counts = []
    for _ in range(50):
        analysis = eng.analyze(PHOTO)
        assert analysis.identification.fallback_reason is not None
        counts.append(threading.active_count())
    # One abandoned call per stuck component (expert, synthesizer, marketplace),
    # and a few idle reusable workers; nothing grows with the number of calls.
    assert stuck() - stuck_before == 3
    assert counts[-1] - before <= 6
    assert max(counts[10:]) <= max(counts[:10])


def test_a_process_with_hung_components_exits_promptly(tmp_path: Any) -> None:
    script = textwrap.dedent("""
        import threading, time
        from PIL import Image
        from restyle import Engine
        from restyle.testing import ColorEncoder, ScriptedExpert
        from tests.test_faults import HangingMarketplace
        never = threading.Event()
        engine = Engine(encoder=ColorEncoder(), load_entrypoints=False, deadline=1.0,
                        experts=[ScriptedExpert("hung", hang=never, timeout=30)],
                        marketplaces=[HangingMarketplace("stuck", never)])
        engine.analyze(Image.new("RGB", (32, 32), (1, 2, 3)))
        print("analysed")
    """)
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "analysed" in done.stdout
    assert time.monotonic() - start < 30  # the hung threads did not hold the exit


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda photo: {"labels": ["jacket"]}, "returned dict from examine(), not an Opinion"),
        (lambda photo: None, "returned NoneType from examine()"),
    ],
)
def test_an_expert_off_its_contract_is_a_failed_opinion(answer: Any, message: str) -> None:
    eng = engine(experts=[ScriptedExpert("odd", result=answer),
                          ScriptedExpert("eye", entities=[("Acme", 0.9, "brand")])])
    analysis = eng.analyze(PHOTO)
    assert analysis.opinions[0].status is OpinionStatus.ERROR
    assert "PluginContractError" in analysis.failed_experts["odd"]
    assert message in analysis.failed_experts["odd"]
    assert analysis.identification.brand == "Acme"


def test_an_opinion_holding_strings_instead_of_observations_is_refused() -> None:
    from restyle import Opinion

    bad = Opinion(expert="odd", labels=("jacket",))  # type: ignore[arg-type]
    eng = engine(experts=[ScriptedExpert("odd", result=lambda photo: bad)])
    analysis = eng.analyze(PHOTO)
    assert "labels[0] is str, not Observation" in analysis.failed_experts["odd"]


# -- synthesizers ---------------------------------------------------------------


def test_a_hung_synthesizer_falls_back_to_consensus_on_time(release: threading.Event) -> None:
    eng = engine(synthesizer=HangingSynthesizer(release), deadline=2.0)
    analysis, took = timed(lambda: eng.analyze(PHOTO))
    assert took < 2.0 + SLACK
    assert analysis.identification.synthesizer == "consensus"
    assert "stuck failed: Overdue" in (analysis.identification.fallback_reason or "")
    assert analysis.price.ok


@pytest.mark.parametrize("answer", [{"brand": "Acme"}, None, "Acme jacket"])
def test_a_synthesizer_off_its_contract_falls_back(answer: object) -> None:
    analysis = engine(synthesizer=ReturningSynthesizer(answer)).analyze(PHOTO)
    reason = analysis.identification.fallback_reason or ""
    assert "PluginContractError" in reason and "not an Identification" in reason
    assert analysis.identification.brand == "Acme"


# -- marketplaces ---------------------------------------------------------------


def test_a_hung_marketplace_is_cut_off_and_the_others_kept(release: threading.Event) -> None:
    stuck = HangingMarketplace("stuck", release)
    eng = engine(marketplaces=[stuck, ListMarketplace("m", [listing(i) for i in range(4)],
                                                      embeddings=known(*range(4)))],
                 deadline=2.0)
    analysis, took = timed(lambda: eng.analyze(PHOTO))
    assert took < 2.0 + SLACK
    assert len(analysis.comps) == 4 and analysis.price.ok
    assert any("marketplace stuck failed: Overdue" in w for w in analysis.warnings)
    again, took = timed(lambda: eng.analyze(PHOTO))
    assert took < 1.0
    assert any("still busy" in w for w in again.warnings)
    assert stuck.calls == 1


def test_a_marketplace_call_is_bounded_by_its_own_timeout(release: threading.Event) -> None:
    eng = engine(marketplaces=[HangingMarketplace("stuck", release, timeout=0.3)],
                 deadline=30.0)
    analysis, took = timed(lambda: eng.analyze(PHOTO))
    assert took < 0.3 + SLACK
    assert any("gave no answer" in w for w in analysis.warnings)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (lambda q: [{"title": "jacket", "price": 10}], "returned dict at position 0"),
        (lambda q: {"items": []}, "returned dict from a search"),
        (lambda q: None, "returned NoneType from a search"),
        (lambda q: "jacket", "returned str from a search"),
    ],
)
def test_a_marketplace_off_its_contract_is_a_warning(answer: Any, message: str) -> None:
    eng = engine(marketplaces=[ReturningMarketplace("odd", answer),
                               ListMarketplace("m", [listing(1)], embeddings=known(1))])
    analysis = eng.analyze(PHOTO)
    assert [c.listing.key for c in analysis.comps] == ["m:1"]
    warning = next(w for w in analysis.warnings if w.startswith("marketplace odd failed"))
    assert "PluginContractError" in warning and message in warning


def test_an_endless_generator_is_read_only_up_to_the_limit() -> None:
    produced = 0

    def endless(query: Query) -> Iterator[Listing]:
        nonlocal produced
        n = 0
        while True:
            produced += 1
            n += 1
            yield Listing(marketplace="odd", listing_id=str(n), title="x",
                          price=Money(amount="5", currency="USD"))

    analysis = engine(marketplaces=[ReturningMarketplace("odd", endless)],
                      max_comps=7).analyze(PHOTO)
    assert len(analysis.comps) == 7
    assert produced <= 8 * 5  # at most limit + 1 per relaxation step
    assert any("more than the 7 listings" in w for w in analysis.warnings)


def test_repeated_listings_are_kept_once() -> None:
    twice = [listing(1), listing(1), listing(2)]
    analysis = engine(marketplaces=[ListMarketplace("m", twice, embeddings=known(1, 2))],
                      comps_wanted=1).analyze(PHOTO)
    assert sorted(c.listing.key for c in analysis.comps) == ["m:1", "m:2"]
    assert any("returned 1 listing(s) twice" in w for w in analysis.warnings)


@pytest.mark.parametrize(
    "vector",
    [np.full(RED_VECTOR.shape, np.nan, np.float32), np.zeros(3, np.float32), "red"],
)
def test_unusable_known_vectors_are_fetched_instead(vector: Any) -> None:
    market = ListMarketplace("m", [listing(1)], embeddings={"m:1": vector})
    analysis = engine(marketplaces=[market]).analyze(PHOTO)
    comp = analysis.comps[0]
    assert comp.similarity is None and CompFlag.IMAGE_UNAVAILABLE in comp.flags
    assert any("1 unusable image vector(s)" in w for w in analysis.warnings)


# -- encoders -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (lambda rows: rows[:-1], "shape"),
        (lambda rows: rows * 7.0, None),  # not unit length: normalised, ranking kept
        (lambda rows: np.full_like(rows, np.nan), "not finite"),
        (lambda rows: np.zeros_like(rows), "all-zero"),
        (lambda rows: rows[:, :2], "length 2"),
        (lambda rows: [[1, 2]] * len(rows), "length 2"),
        (lambda rows: "vectors", "not an array of vectors"),
    ],
)
def test_comp_vectors_off_contract_flag_the_comps(
    answer: Callable[[np.ndarray], Any], expected: str | None, image_server: FakeServer
) -> None:
    eng = image_engine(image_server, ScriptedEncoder(answer))
    analysis = eng.analyze(PHOTO)
    sims = [c.similarity for c in analysis.comps]
    if expected is None:
        assert all(s is not None and s <= 1.0 + 1e-6 for s in sims)
        assert analysis.comps[0].listing.listing_id == "0"  # the red one
        assert analysis.comps[0].similarity == pytest.approx(1.0, abs=1e-5)
        return
    assert sims == [None, None, None]
    assert all(CompFlag.IMAGE_UNAVAILABLE in c.flags for c in analysis.comps)
    assert all(expected in (c.image_error or "") for c in analysis.comps)
    assert all("PluginContractError" in (c.image_error or "") for c in analysis.comps)


def test_a_hung_comp_encoder_flags_the_comps_on_time(
    release: threading.Event, image_server: FakeServer
) -> None:
    eng = image_engine(image_server, ScriptedEncoder(lambda rows: rows, hang=release),
                       deadline=2.0)
    analysis, took = timed(lambda: eng.analyze(PHOTO))
    assert took < 2.0 + SLACK
    assert all(CompFlag.IMAGE_UNAVAILABLE in c.flags for c in analysis.comps)
    # The first batch overran; batches after it found the encoder still busy.
    errors = [c.image_error or "" for c in analysis.comps]
    assert any("gave no answer" in e for e in errors)
    assert all("gave no answer" in e or "still busy" in e for e in errors)


def test_a_hung_photo_encoder_is_an_encoder_error_on_time(release: threading.Event) -> None:
    eng = engine(encoder=ScriptedEncoder(lambda rows: rows, photo_too=True, hang=release),
                 deadline=1.5)
    with pytest.raises(EncoderError, match="gave no answer") as info:
        started = time.monotonic()
        eng.analyze(PHOTO)
    assert time.monotonic() - started < 1.5 + SLACK
    assert info.value.__cause__ is None
    with pytest.raises(EncoderError, match="busy"):
        eng.analyze(PHOTO)


@pytest.mark.parametrize(
    ("answer", "error", "message"),
    [
        (lambda rows: np.full_like(rows, np.nan), PluginContractError, "not finite"),
        (lambda rows: rows[:0], PluginContractError, "shape"),
        (lambda rows: 1 / 0, EncoderError, "ZeroDivisionError"),
    ],
)
def test_a_photo_encoder_failure_is_a_restyle_error(
    answer: Callable[[np.ndarray], Any], error: type[RestyleError], message: str
) -> None:
    eng = engine(encoder=ScriptedEncoder(answer, photo_too=True))
    with pytest.raises(error, match=message):
        eng.analyze(PHOTO)
    results = eng.analyze_many([PHOTO, PHOTO], return_exceptions=True)
    assert all(isinstance(r, error) for r in results)


# -- Engine arguments ------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"experts": "clip"}, r"not the string 'clip'; did you mean experts=\['clip'\]"),
        ({"marketplaces": "catalog,ebay"}, r"did you mean marketplaces=\['catalog', 'ebay'\]"),
        ({"experts": 3}, "experts must be a list of names or instances, got int"),
        ({"max_comps": 0}, "max_comps must be a whole number from 1 to 1,000, got 0"),
        ({"max_comps": -1}, "max_comps must be a whole number from 1 to 1,000, got -1"),
        ({"max_comps": 10**30}, "max_comps must be a whole number from 1 to 1,000"),
        ({"max_comps": 1e30}, "max_comps must be a whole number"),
        ({"deadline": 1e15}, "deadline must be a positive number of seconds, at most 86,400"),
        ({"half_life_days": 1e300}, "half_life_days must be a positive"),
        ({"comps_wanted": 2.5}, "comps_wanted must be a whole number"),
        ({"minimum_comps": 0}, "minimum_comps must be from 1 to 10000"),
        ({"minimum_comps": True}, "minimum_comps must be a whole number"),
        ({"deadline": 0}, "deadline must be a positive number of seconds, at most 86,400, got 0"),
        ({"deadline": float("inf")}, "deadline must be a positive number"),
        ({"deadline": "10"}, "deadline must be a number of seconds, got '10'"),
        ({"identify_budget": -1}, "identify_budget must be a positive number"),
        ({"plugins": "restyle_acme"}, "plugins must be a list"),
    ],
)
def test_bad_engine_arguments_are_refused_clearly(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        engine(**options)


def test_a_component_instance_with_a_bad_name_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="lower-case identifier"):
        engine(experts=[ScriptedExpert("acme eye")])


def test_a_bad_per_call_deadline_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="deadline must be a positive number"):
        engine().analyze(PHOTO, deadline=-1)


# -- secrets in what components raise -----------------------------------------------

SENTINEL = "sk-FAULTS-SENTINEL-0123456789abcdef"


def test_a_plugin_exception_quoting_a_credential_is_redacted_everywhere() -> None:
    import traceback

    from restyle._secrets import Secret

    Secret(SENTINEL)  # a key some plugin holds, registered as every Secret is
    leaky = ScriptedExpert("leaky", error=RuntimeError(f"401 for Authorization: Bearer {SENTINEL}"))
    eng = engine(experts=[leaky, ScriptedExpert("eye", entities=[("Acme", 0.9, "brand")])])
    analysis = eng.analyze(PHOTO)
    assert "RuntimeError: 401 for Authorization" in analysis.failed_experts["leaky"]
    assert SENTINEL not in analysis.to_json()

    def failing(rows: np.ndarray) -> Any:
        try:
            raise ValueError(f"token={SENTINEL}")
        except ValueError as inner:
            raise RuntimeError("device lost") from inner

    photo_engine = engine(encoder=ScriptedEncoder(failing, photo_too=True))
    with pytest.raises(EncoderError) as info:
        photo_engine.analyze(PHOTO)
    shown = "".join(traceback.format_exception(info.value))
    assert "RuntimeError: device lost" in shown
    assert SENTINEL not in shown
    assert info.value.__cause__ is None


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda e: e.analyze(PHOTO, deadline=1e15), "deadline must be a positive number of"),
        (lambda e: e.analyze(PHOTO, exclude=5), "exclude must be a collection of listing keys"),
        (lambda e: e.analyze(PHOTO, exclude=[[1]]), "exclude must hold listing keys"),
        (lambda e: e.analyze(PHOTO, exclude=object()), "exclude must be a collection"),
        (lambda e: e.analyze(PHOTO, exclude="m:1"), "exclude must be a collection"),
        (lambda e: e.analyze(PHOTO, record=5), "record must be a directory path, got int"),
        (lambda e: e.analyze_many(5), "images must be a list"),
        (lambda e: e.analyze_many("a.jpg"), "for one photo use analyze()"),
        (lambda e: list(e.analyze_iter(PHOTO)), "images must be a list"),
        (lambda e: e.find_comps(PHOTO, None), "identification must be the restyle.Identification"),
    ],
)
def test_bad_call_arguments_are_configuration_errors_naming_the_argument(
        call: Callable[[Engine], Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        call(engine())


def test_exclude_none_excludes_nothing() -> None:
    assert len(engine().analyze(PHOTO, exclude=None).comps) == 4


def test_the_old_pricing_option_names_still_work_with_a_deprecation_warning() -> None:
    with pytest.warns(DeprecationWarning, match="minimum_price_comps is deprecated"):
        eng = engine(minimum_price_comps=5)
    assert eng.minimum_comps == 5
    with pytest.warns(DeprecationWarning, match="price_half_life_days is deprecated"):
        eng = engine(price_half_life_days=7.0)
    assert eng.half_life_days == 7.0
    with pytest.warns(DeprecationWarning, match="Engine.minimum_price_comps is deprecated"):
        assert eng.minimum_price_comps == 3
    with pytest.warns(DeprecationWarning), pytest.raises(
            ConfigurationError, match="minimum_price_comps must be from 1"):
        engine(minimum_price_comps=0)
    with pytest.raises(ConfigurationError, match="give minimum_comps only"):
        engine(minimum_comps=4, minimum_price_comps=5)

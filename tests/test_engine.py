"""The Engine's pipeline: concurrent experts under deadlines, degradation, comps, price."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator, Sequence

import numpy as np
import pytest
from PIL import Image

from restyle import (
    Analysis,
    ConfigurationError,
    Engine,
    Identification,
    ImageError,
    Listing,
    Money,
    Opinion,
    OpinionStatus,
    Synthesizer,
    load_photo,
)
from tests.conftest import SAMPLE_PHOTO
from tests.fakes.components import ColorEncoder, ListMarketplace, ScriptedExpert


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """An event hung experts wait on; set at teardown so no thread outlives the test."""
    event = threading.Event()
    yield event
    event.set()


def engine_with(experts: Sequence[ScriptedExpert], **kwargs: object) -> Engine:
    options: dict[str, object] = {"encoder": ColorEncoder(), "marketplaces": [],
                                  "load_entrypoints": False}
    options.update(kwargs)
    return Engine(experts=list(experts), **options)  # type: ignore[arg-type]


def test_hung_and_raising_experts_degrade_the_answer(release: threading.Event) -> None:
    good = ScriptedExpert("good", entities=[("Acme", 0.9, "brand"), ("jacket", 0.8, "category")])
    hung = ScriptedExpert("hung", hang=release, timeout=0.3)
    broken = ScriptedExpert("broken", error=RuntimeError("quota exceeded"))
    engine = engine_with([good, hung, broken])
    opinions = {o.expert: o for o in engine.examine(SAMPLE_PHOTO)}
    assert opinions["good"].ok
    assert opinions["hung"].status is OpinionStatus.TIMEOUT
    assert "0.3 s" in (opinions["hung"].error or "")
    assert opinions["broken"].status is OpinionStatus.ERROR
    assert opinions["broken"].error == "RuntimeError: quota exceeded"
    analysis = engine.analyze(SAMPLE_PHOTO)
    assert analysis.identification.brand == "Acme"
    assert set(analysis.failed_experts) == {"hung", "broken"}


def test_overall_budget_caps_every_expert(release: threading.Event) -> None:
    slow = ScriptedExpert("slow", hang=release, timeout=30)
    engine = engine_with([slow], identify_budget=0.2)
    [opinion] = engine.examine(SAMPLE_PHOTO)
    assert opinion.status is OpinionStatus.TIMEOUT
    assert "0.2 s" in (opinion.error or "")


def test_experts_run_concurrently(release: threading.Event) -> None:
    # Each expert waits until all three have started: only concurrent runs can finish.
    barrier = threading.Barrier(3, timeout=5)

    def meet(photo: object) -> Opinion:
        barrier.wait()
        return Opinion(expert="x")

    experts = [ScriptedExpert(f"e{i}", result=meet) for i in range(3)]
    opinions = engine_with(experts).examine(SAMPLE_PHOTO)
    assert [o.status for o in opinions] == [OpinionStatus.OK] * 3
    assert [o.expert for o in opinions] == ["e0", "e1", "e2"]


def test_expert_returning_the_wrong_type_is_a_failed_opinion() -> None:
    odd = ScriptedExpert("odd", result=lambda photo: {"brand": "x"})
    [opinion] = engine_with([odd]).examine(SAMPLE_PHOTO)
    assert opinion.status is OpinionStatus.ERROR
    assert "not an Opinion" in (opinion.error or "")


def test_expert_name_and_latency_are_set_by_the_engine() -> None:
    liar = ScriptedExpert("liar", result=lambda photo: Opinion(expert="someone-else"))
    [opinion] = engine_with([liar]).examine(SAMPLE_PHOTO)
    assert opinion.expert == "liar"
    assert opinion.latency >= 0


def test_photo_is_decoded_once_and_shared(release: threading.Event) -> None:
    seen: list[object] = []

    def record(photo: object) -> Opinion:
        seen.append(photo)
        return Opinion(expert="r")

    engine = engine_with([ScriptedExpert("a", result=record), ScriptedExpert("b", result=record)])
    engine.examine(SAMPLE_PHOTO)
    assert seen[0] is seen[1]


def test_bad_image_is_a_typed_error_before_any_expert_runs() -> None:
    expert = ScriptedExpert("a")
    with pytest.raises(ImageError):
        engine_with([expert]).analyze(b"not an image")
    assert expert.calls == 0


class ExplodingSynthesizer(Synthesizer):
    name = "exploding"

    def synthesize(self, opinions, *, photo):  # type: ignore[no-untyped-def]
        raise RuntimeError("model returned garbage")


def test_failing_synthesizer_falls_back_to_consensus_and_says_so() -> None:
    expert = ScriptedExpert("a", entities=[("Acme", 0.8, "brand")])
    engine = engine_with([expert], synthesizer=ExplodingSynthesizer())
    ident = engine.identify(SAMPLE_PHOTO)
    assert ident.synthesizer == "consensus"
    assert ident.brand == "Acme"
    assert ident.fallback_reason == "exploding failed: RuntimeError: model returned garbage"


def colored(color: tuple[int, int, int]) -> Image.Image:
    img = Image.new("RGB", (32, 32), color)
    img.paste((255, 255, 255), (0, 0, 8, 8))
    return img


def test_comps_are_ranked_by_visual_similarity_and_priced() -> None:
    encoder = ColorEncoder()
    photo_image = colored((200, 30, 30))
    listings = [
        Listing(marketplace="m", listing_id=str(i), title=f"item {i}",
                price=Money(amount=price, currency="USD"))
        for i, price in enumerate([10, 20, 30, 40])
    ]
    colors = [(30, 30, 200), (200, 30, 30), (210, 20, 20), (220, 40, 40)]
    vectors = encoder.encode_images([colored(c) for c in colors])
    embeddings = {item.key: vec for item, vec in zip(listings, vectors, strict=True)}
    market = ListMarketplace("m", listings, embeddings=embeddings)
    market.listings.append(Listing(marketplace="m", listing_id="no-image", title="no image",
                                   price=Money(amount=25, currency="USD")))
    engine = Engine(experts=[ScriptedExpert("a", entities=[("Acme", 0.9, "brand")])],
                    encoder=encoder, marketplaces=[market], load_entrypoints=False)
    analysis = engine.analyze(photo_image)
    ids = [c.listing.listing_id for c in analysis.comps]
    assert ids[0] == "1"  # the identical image
    assert analysis.comps[0].similarity == pytest.approx(1.0)
    assert ids[-1] == "no-image"
    last = analysis.comps[-1]
    assert last.similarity is None and last.image_error == "listing has no image"
    assert "image_unavailable" in last.flags
    blue = next(c for c in analysis.comps if c.listing.listing_id == "0")
    assert "below_cutoff" in blue.flags  # kept, but it does not look like the photo
    assert analysis.price.ok and analysis.price.currency == "USD"
    assert "m:0" not in {p.listing_key for p in analysis.price.counted}
    assert analysis.query is not None and "Acme" in analysis.query.text
    assert Analysis.from_json(analysis.to_json()) == analysis


def test_failing_marketplace_is_reported_and_others_still_answer() -> None:
    good = ListMarketplace("good", [Listing(marketplace="good", listing_id="1", title="x")])
    bad = ListMarketplace("bad", [], error=RuntimeError("HTTP 503"))
    engine = Engine(experts=[], encoder=ColorEncoder(), marketplaces=[good, bad],
                    load_entrypoints=False)
    analysis = engine.analyze(SAMPLE_PHOTO)
    assert [c.listing.key for c in analysis.comps] == ["good:1"]
    assert analysis.warnings == ("marketplace bad failed: RuntimeError: HTTP 503",)
    assert not analysis.price.ok


def test_analyze_many_collects_errors_when_asked() -> None:
    engine = engine_with([ScriptedExpert("a")])
    results = engine.analyze_many([SAMPLE_PHOTO, b"garbage", SAMPLE_PHOTO],
                                  return_exceptions=True, progress=False)
    assert isinstance(results[0], Analysis) and isinstance(results[2], Analysis)
    assert isinstance(results[1], ImageError)
    with pytest.raises(ImageError):
        engine.analyze_many([SAMPLE_PHOTO, b"garbage"], progress=False)


def test_analyze_iter_streams_results_in_order_a_batch_at_a_time() -> None:
    from restyle._engine import BATCH_PHOTOS

    engine = engine_with([ScriptedExpert("a")])
    taken: list[int] = []

    def photos() -> Iterator[object]:
        for i in range(3 * BATCH_PHOTOS + 3):
            taken.append(i)
            yield b"garbage" if i == 1 else SAMPLE_PHOTO

    results = engine.analyze_iter(photos())  # type: ignore[arg-type]
    first = next(results)
    assert isinstance(first, Analysis)
    # This batch and the next (prepared while this one is analysed); the rest not yet read.
    assert BATCH_PHOTOS <= len(taken) <= 2 * BATCH_PHOTOS
    rest = list(results)
    assert len(rest) == 3 * BATCH_PHOTOS + 2
    assert isinstance(rest[0], ImageError)
    assert all(isinstance(r, Analysis) for r in rest[1:])
    with pytest.raises(ConfigurationError, match="deadline"):
        engine.analyze_iter([SAMPLE_PHOTO], deadline=-1)  # said at once, not on first use


def test_photo_vector_is_computed_once_per_model_and_kept_on_the_photo() -> None:
    encoder = ColorEncoder()
    photo = load_photo(SAMPLE_PHOTO)
    assert photo.vector(encoder.model_id) is None
    first = encoder.photo_vector(photo)
    second = ColorEncoder().photo_vector(photo)  # another instance of the same model
    assert first is second and encoder.images_encoded == 1
    assert photo.vector(encoder.model_id) is first
    assert np.isclose(np.linalg.norm(first), 1.0)


def test_the_old_photo_embedding_calls_still_work_with_a_deprecation_warning() -> None:
    encoder = ColorEncoder()
    photo = load_photo(SAMPLE_PHOTO)
    with pytest.warns(DeprecationWarning, match="encoder.photo_vector"):
        first = photo.embedding(encoder)
    with pytest.warns(DeprecationWarning, match="photo.vector"):
        assert photo.known_embedding(encoder) is first


def test_invalid_engine_options() -> None:
    with pytest.raises(ConfigurationError):
        Engine(identify_budget=0, load_entrypoints=False)
    with pytest.raises(ConfigurationError, match="no synthesizer named"):
        Engine(synthesizer="oracle", load_entrypoints=False)


def test_environment_selects_components(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESTYLE_EXPERTS", "catalog")
    monkeypatch.setenv("RESTYLE_MARKETPLACES", "")
    engine = Engine(encoder=ColorEncoder(), load_entrypoints=False)
    assert [e.name for e in engine.experts] == ["catalog"]
    assert engine.marketplaces == ()


def test_identification_default_is_empty() -> None:
    engine = engine_with([])
    ident = engine.identify(SAMPLE_PHOTO)
    assert isinstance(ident, Identification)
    assert ident.brand is None and ident.confidence == 0.0


def test_fetcher_and_reranker_cannot_disagree() -> None:
    from restyle import Fetcher, Reranker

    fetcher = Fetcher()
    engine = Engine(fetcher=fetcher, load_entrypoints=False, encoder=ColorEncoder())
    assert engine.fetcher is fetcher and engine.reranker.fetcher is fetcher
    reranker = Reranker(fetcher=fetcher, cache=None)
    assert Engine(reranker=reranker, fetcher=fetcher, load_entrypoints=False,
                  encoder=ColorEncoder()).fetcher is fetcher
    with pytest.raises(ConfigurationError, match="pass the fetcher to the Reranker"):
        Engine(reranker=reranker, fetcher=Fetcher(), load_entrypoints=False,
               encoder=ColorEncoder())



def test_synthesize_merges_given_opinions_with_the_fallback_an_analysis_has() -> None:
    from restyle import Observation, Opinion

    engine = Engine(encoder=ColorEncoder(), experts=[], marketplaces=[], load_entrypoints=True)
    opinions = [Opinion(expert="eye", entities=(Observation(text="Acme", score=0.9,
                                                            facet="brand"),))]
    identification = engine.synthesize(opinions, SAMPLE_PHOTO)
    assert identification.brand == "Acme" and identification.synthesizer == "consensus"
    with pytest.raises(ConfigurationError, match=r"opinions must be a list of restyle\.Opinion"):
        engine.synthesize(["Acme"], SAMPLE_PHOTO)  # type: ignore[list-item]


def test_batches_need_no_engine_embed_a_batch_in_one_call_and_hand_each_photo_its_vector(
) -> None:
    from contextlib import nullcontext

    from restyle._pipeline.batching import Batches

    calls: list[int] = []

    class Counting(ColorEncoder):
        def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
            calls.append(len(images))
            return super().encode_images(images)

    encoder = Counting()
    engine = engine_with([ScriptedExpert("a")], encoder=encoder)
    vectors_known: list[bool] = []

    def analyze_one(photo: object, deadline: float | None) -> Analysis:
        vectors_known.append(photo.vector(encoder.model_id) is not None)  # type: ignore[attr-defined]
        return engine.analyze(photo, deadline=deadline)  # type: ignore[arg-type]

    batches = Batches(analyze_one=analyze_one, encoder=encoder, deadline=30.0,
                      running=nullcontext, size=3)
    images: list[object] = [SAMPLE_PHOTO] * 4 + [b"garbage", SAMPLE_PHOTO]
    results = list(batches.analyze(images, deadline=None))  # type: ignore[arg-type]
    assert calls == [3, 2]  # one encoder call a batch; the garbage is not sent
    assert vectors_known == [True] * 5  # no analysis encoded its photo again
    assert isinstance(results[4], ImageError)
    assert [isinstance(r, Analysis) for r in results] == [True] * 4 + [False, True]


def test_callers_at_once_share_one_computation_of_the_photo_vector() -> None:
    import threading
    import time as clock

    from restyle import EncoderError
    from restyle._pipeline import budget

    class Slow(ColorEncoder):
        def encode_images(self, images):  # type: ignore[no-untyped-def]
            clock.sleep(0.5)
            return super().encode_images(images)

    encoder = Slow()
    photo = load_photo(SAMPLE_PHOTO)
    results: list[object] = []
    threads = [threading.Thread(target=lambda: results.append(encoder.photo_vector(photo)))
               for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert encoder.image_calls == 1  # the clip and catalog experts no longer encode it twice
    assert all(r is results[0] for r in results)

    other = load_photo(SAMPLE_PHOTO)
    first = threading.Thread(target=encoder.photo_vector, args=(other,))
    first.start()
    clock.sleep(0.1)
    with pytest.raises(EncoderError, match="still being computed"):  # a waiter's own deadline
        budget.call(encoder, "encoder slow", encoder.photo_vector, other,
                    deadline=clock.monotonic() + 0.1)
    first.join()


def test_analyze_prices_as_of_a_given_moment() -> None:
    encoder = ColorEncoder()
    sold = [
        Listing(marketplace="m", listing_id=str(i), title=f"item {i}", sold=True,
                sold_at=dt.datetime(2024, 1, 1 + i, tzinfo=dt.timezone.utc),
                price=Money(amount=price, currency="USD"))
        for i, price in enumerate([10, 20, 30])
    ]
    vectors = encoder.encode_images([colored((200, 30, 30))] * 3)
    market = ListMarketplace("m", sold, embeddings={
        item.key: vec for item, vec in zip(sold, vectors, strict=True)})
    engine = Engine(experts=[ScriptedExpert("a", entities=[("Acme", 0.9, "brand")])],
                    encoder=encoder, marketplaces=[market], load_entrypoints=False)
    then = dt.datetime(2024, 1, 10)  # naive: taken as UTC
    analysis = engine.analyze(colored((200, 30, 30)), as_of=then)
    assert analysis.price.as_of == then.replace(tzinfo=dt.timezone.utc)
    assert engine.analyze(colored((200, 30, 30))).price.as_of != analysis.price.as_of
    with pytest.raises(ConfigurationError, match="as_of must be a datetime"):
        engine.analyze(colored((200, 30, 30)), as_of="2024-01-10")


def test_analyze_iter_yields_each_photo_as_soon_as_it_is_done() -> None:
    released = threading.Event()

    def look(photo: object) -> Opinion:
        if photo.image.getpixel((20, 20)) == (0, 0, 200):  # type: ignore[attr-defined]
            released.wait(5)  # the slow photo: done only once the fast one was handed out
        return Opinion(expert="waiter")

    engine = Engine(experts=[ScriptedExpert("waiter", result=look, timeout=4)],
                    encoder=ColorEncoder(), marketplaces=[], load_entrypoints=False)
    stream = engine.analyze_iter([colored((200, 0, 0)), colored((0, 0, 200))], deadline=10)
    first = next(stream)
    released.set()
    second = next(stream)
    assert isinstance(first, Analysis) and isinstance(second, Analysis)
    assert second.opinions[0].ok, second.opinions[0].error  # not timed out waiting for the first


def test_analyze_many_reads_a_batchs_photos_at_once() -> None:
    import io

    both = threading.Barrier(2, timeout=5)

    class Meeting(io.BytesIO):
        """A photo whose read goes on only once the other photo's read has begun."""

        def read(self, size: int | None = -1) -> bytes:
            if self.tell() == 0:
                both.wait()
            return super().read(size)

    def jpeg(color: tuple[int, int, int]) -> bytes:
        out = io.BytesIO()
        colored(color).save(out, format="JPEG")
        return out.getvalue()

    engine = Engine(experts=[], encoder=ColorEncoder(), marketplaces=[], load_entrypoints=False)
    results = engine.analyze_many([Meeting(jpeg((200, 0, 0))), Meeting(jpeg((0, 0, 200)))],
                                  return_exceptions=True, progress=False)
    assert all(isinstance(r, Analysis) for r in results), results

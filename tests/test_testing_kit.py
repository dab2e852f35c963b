"""restyle.testing: the fixtures and checks plugin authors get."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
from PIL import Image

from restyle import (
    Engine,
    Expert,
    Identification,
    Listing,
    Money,
    Opinion,
    Photo,
    Query,
    Synthesizer,
)
from restyle.synthesizers.consensus import ConsensusSynthesizer
from restyle.testing import (
    ColorEncoder,
    FakeServer,
    ListMarketplace,
    Reply,
    ScriptedExpert,
    check_encoder,
    check_expert,
    check_marketplace,
    check_synthesizer,
    image_bytes,
)
from tests.conftest import ROOT


def test_restyle_engine_fetches_comp_images_from_test_servers(
    restyle_engine: Callable[..., Engine], restyle_photo: Photo
) -> None:
    with FakeServer(routes={"/a.jpg": Reply(body=image_bytes()),
                            "/b.jpg": Reply(body=image_bytes((30, 30, 200)))}) as server:
        listings = [
            Listing(marketplace="m", listing_id=name, title=name, image_url=server.url(path),
                    price=Money(amount=10, currency="USD"))
            for name, path in (("a", "/a.jpg"), ("b", "/b.jpg"))
        ]
        engine = restyle_engine(marketplaces=[ListMarketplace("m", listings)])
        analysis = engine.analyze(restyle_photo)
    assert sorted(server.paths()) == ["/a.jpg", "/b.jpg"]
    assert all(comp.similarity is not None for comp in analysis.comps)
    assert engine.reranker.cache is None  # nothing written to the author's home


def test_the_guides_example_of_testing_a_marketplace_passes(
    restyle_server: FakeServer, restyle_engine: Callable[..., Engine]
) -> None:
    guide = (ROOT / "docs" / "plugins.md").read_text()
    before, example = guide.split("<!-- tested: tests/test_testing_kit.py -->\n```python\n", 1)
    # Padded so that a failure names the line of the guide.
    code = "\n" * (before.count("\n") + 2) + example.split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/plugins.md", "exec"), namespace)
    namespace["test_acme_market_finds_and_ranks_comps"](restyle_server, restyle_engine)


def test_check_expert_catches_broken_contracts() -> None:
    assert check_expert(ScriptedExpert("fine")).ok

    class WrongName(Expert):
        name = "wrong-name"

        def examine(self, photo: Photo) -> Opinion:
            return Opinion(expert="someone-else")

    with pytest.raises(AssertionError, match="someone-else"):
        check_expert(WrongName())

    class NotAnOpinion(Expert):
        name = "dict"

        def examine(self, photo: Photo) -> Opinion:
            return {"brand": "x"}  # type: ignore[return-value]

    with pytest.raises(AssertionError, match="not an Opinion"):
        check_expert(NotAnOpinion())


def test_check_marketplace_catches_broken_contracts() -> None:
    good = [Listing(marketplace="m", listing_id=str(i), title="t") for i in range(3)]
    assert len(check_marketplace(ListMarketplace("m", good))) == 3
    foreign = [Listing(marketplace="other", listing_id="1", title="t")]
    with pytest.raises(AssertionError, match="expected 'm'"):
        check_marketplace(ListMarketplace("m", foreign))

    class TooMany(ListMarketplace):
        def search(self, query: Query) -> list[Listing]:
            return list(self.listings)

    with pytest.raises(AssertionError) as info:
        check_marketplace(TooMany("m", good), Query(text="x", limit=1))
    assert str(info.value) == ("marketplace m returned more than the 1 listings asked for; "
                               "the rest were ignored")


def test_check_expert_refuses_what_the_registry_refuses() -> None:
    with pytest.raises(AssertionError) as info:
        check_expert(ScriptedExpert("acme eye"))
    assert str(info.value) == ("ScriptedExpert.name must be a lower-case identifier such as "
                               "'google-vision', got 'acme eye'")
    with pytest.raises(AssertionError, match=r"timeout must be a positive number of seconds, "
                                             r"got 0"):
        check_expert(ScriptedExpert("acme", timeout=0))
    with pytest.raises(AssertionError, match=r"is a class, not an expert: pass an instance"):
        check_expert(ScriptedExpert)  # type: ignore[arg-type]
    with pytest.raises(AssertionError, match="is a marketplace, not an expert"):
        check_expert(ListMarketplace("m", []))  # type: ignore[arg-type]


def test_check_expert_applies_the_engines_output_contract() -> None:
    class LabelsAsText(Expert):
        name = "labels-as-text"

        def examine(self, photo: Photo) -> Opinion:
            return Opinion(expert=self.name, labels="jacket")  # type: ignore[arg-type]

    with pytest.raises(AssertionError) as info:
        check_expert(LabelsAsText())
    assert str(info.value) == ("expert labels-as-text returned an Opinion whose labels is str, "
                               "not a tuple of Observations")
    release = threading.Event()
    try:
        with pytest.raises(AssertionError) as info:
            check_expert(ScriptedExpert("slow", hang=release, timeout=0.2))
    finally:
        release.set()
    assert str(info.value) == ("expert slow gave no answer from examine() within its timeout "
                               "of 0.2 s; the Engine abandons such calls")
    with pytest.raises(RuntimeError, match="quota"):  # an expert's own error is its own
        check_expert(ScriptedExpert("raises", error=RuntimeError("quota")))


def listings(*ids: str, marketplace: str = "m", image_url: object = None) -> list[Listing]:
    return [Listing(marketplace=marketplace, listing_id=i, title=f"item {i}",
                    image_url=image_url)  # type: ignore[arg-type]
            for i in ids]


class Answers(ListMarketplace):
    """A marketplace answering with whatever the test gives, as it is."""

    def __init__(self, answer: Callable[[], object]) -> None:
        super().__init__("m", [])
        self.answer = answer

    def search(self, query: Query) -> list[Listing]:
        return self.answer()  # type: ignore[return-value]


def test_check_marketplace_applies_the_engines_output_contract() -> None:
    # A generator is fine, as it is for the Engine.
    assert len(check_marketplace(Answers(lambda: iter(listings("1", "2"))))) == 2
    cases = {
        "marketplace m returned 1 listing(s) twice; each was kept once":
            lambda: listings("1", "1"),
        "marketplace m returned str at position 0 of a search, not a Listing":
            lambda: ["not a listing"],
        "marketplace m returned a Listing at position 0 whose image_url is int, not a string":
            lambda: listings("1", image_url=7),
        "marketplace m returned 1 listing(s) whose image_url is not an http(s) URL (such as "
        "'file:///tmp/a.jpg') and gave no vector for them: their images cannot be compared":
            lambda: listings("1", image_url="file:///tmp/a.jpg"),
        "marketplace m returned dict from a search, not a sequence of Listings":
            lambda: {"1": "x"},
    }
    for message, answer in cases.items():
        with pytest.raises(AssertionError) as info:
            check_marketplace(Answers(answer))
        assert str(info.value) == message
    assert check_marketplace(Answers(lambda: listings("1", image_url="https://img.example/a.jpg")))


def test_check_marketplace_accepts_local_images_it_gives_vectors_for(
    restyle_color_encoder: ColorEncoder,
) -> None:
    class KnowsVectors(Answers):
        def image_embeddings(self, listings: Sequence[Listing], *,
                             model_id: str) -> dict[str, np.ndarray]:
            return {item.key: self.vector for item in listings}

    local = KnowsVectors(lambda: listings("1", image_url="file:///tmp/a.jpg"))
    local.vector = restyle_color_encoder.encode_texts(["x"])[0]
    assert check_marketplace(local, encoder=restyle_color_encoder)
    local.vector = np.ones(3)
    with pytest.raises(AssertionError, match="1 unusable image vector"):
        check_marketplace(local, encoder=restyle_color_encoder)


def test_check_synthesizer() -> None:
    identification = check_synthesizer(ConsensusSynthesizer())
    assert identification.brand == "Acme"

    class NotMerged(Synthesizer):
        name = "not-merged"

        def synthesize(self, opinions: Sequence[Opinion], *, photo: Photo) -> Identification:
            return {"brand": "Acme"}  # type: ignore[return-value]

    with pytest.raises(AssertionError) as info:
        check_synthesizer(NotMerged())
    assert str(info.value) == ("synthesizer not-merged returned dict from synthesize(), "
                               "not an Identification")

    class OnlyGoodNews(Synthesizer):
        name = "only-good-news"

        def synthesize(self, opinions: Sequence[Opinion], *, photo: Photo) -> Identification:
            return Identification(brand=opinions[-1].entities[0].text)

    with pytest.raises(IndexError):  # the default opinions include a failed one
        check_synthesizer(OnlyGoodNews())


def test_check_encoder(restyle_color_encoder: ColorEncoder) -> None:
    images, texts = check_encoder(restyle_color_encoder)
    dim = restyle_color_encoder.dim
    assert images.shape == (2, dim) and texts.shape == (2, dim)

    class Unnormalised(ColorEncoder):
        def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
            return super().encode_images(images) * 3

    with pytest.raises(AssertionError, match=r"encoder color returned vectors that are not unit "
                                             r"length \(norms 3 to 3\); they were normalised"):
        check_encoder(Unnormalised())

    class WrongDim(ColorEncoder):
        @property
        def dim(self) -> int:
            return 10

    with pytest.raises(AssertionError) as info:
        check_encoder(WrongDim())
    assert str(info.value) == "encoder color returned vectors of length 64, not its dim 10"

    class NaNs(ColorEncoder):
        def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
            return np.full((len(texts), self.dim), np.nan, dtype=np.float32)

    with pytest.raises(AssertionError, match="not finite"):
        check_encoder(NaNs())

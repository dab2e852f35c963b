"""restyle.testing: the fixtures and checks plugin authors get."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from restyle import Engine, Expert, Listing, Money, Opinion, Photo, Query
from restyle.testing import ListMarketplace, ScriptedExpert, check_expert, check_marketplace
from tests.fakes.image_server import FakeImageServer, Route, jpeg_bytes


def test_restyle_engine_fetches_comp_images_from_test_servers(
    restyle_engine: Callable[..., Engine], restyle_photo: Photo
) -> None:
    with FakeImageServer({"/a.jpg": Route(body=jpeg_bytes()),
                          "/b.jpg": Route(body=jpeg_bytes((30, 30, 200)))}) as server:
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

    with pytest.raises(AssertionError, match="limit 1"):
        check_marketplace(TooMany("m", good), Query(text="x", limit=1))

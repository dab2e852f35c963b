"""Re-ranking: failed images kept, duplicates and the per-query cut-off flagged, the cache."""

from __future__ import annotations

import io
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from restyle import (
    CompFlag,
    EmbeddingCache,
    Engine,
    Fetcher,
    Identification,
    Listing,
    Money,
    Reranker,
)
from restyle._pipeline.rerank import similarity_cutoff
from restyle.testing import FakeServer, Reply
from tests.fakes.components import ColorEncoder, ListMarketplace

RED, BLUE, GREEN, WHITE = (200, 30, 30), (30, 30, 200), (30, 200, 30), (250, 250, 250)


def picture(*colours: tuple[int, int, int], weights: tuple[int, ...] = ()) -> bytes:
    """Vertical bands of colour; with the ColorEncoder, similarity follows the band widths."""
    weights = weights or (1,) * len(colours)
    width = 64 * sum(weights)
    img = Image.new("RGB", (width, 64))
    x = 0
    for colour, w in zip(colours, weights, strict=True):
        img.paste(colour, (x, 0, x + 64 * w, 64))
        x += 64 * w
    buf = io.BytesIO()
    img.save(buf, format="PNG")  # lossless: the histogram is exact
    return buf.getvalue()


PHOTO = Image.open(io.BytesIO(picture(RED))).convert("RGB")

ROUTES = {
    "/red.png": Reply(body=picture(RED), content_type="image/png"),
    "/stock.png": Reply(body=picture(RED), content_type="image/png"),  # same bytes
    "/mostly-red.png": Reply(body=picture(RED, BLUE, weights=(3, 1)), content_type="image/png"),
    "/half-red.png": Reply(body=picture(RED, WHITE), content_type="image/png"),
    "/blue.png": Reply(body=picture(BLUE), content_type="image/png"),
    "/green.png": Reply(body=picture(GREEN), content_type="image/png"),
    "/html.png": Reply(body=b"<html>", content_type="image/png"),
    "/torn.png": Reply(body=picture(RED)[:60], content_type="image/png"),
}


def listing(lid: str, url: str | None, title: str = "a jacket") -> Listing:
    return Listing(marketplace="m", listing_id=lid, title=title,
                   price=Money(amount=Decimal("10"), currency="USD"), image_url=url)


@pytest.fixture
def server():
    with FakeServer(routes=ROUTES) as srv:
        yield srv


@pytest.fixture
def cache(tmp_path: Path):
    cache = EmbeddingCache(tmp_path / "cache.sqlite")
    yield cache
    cache.close()


def comps_for(server: FakeServer) -> list[tuple[Listing, str]]:
    names = ["red", "stock", "mostly-red", "half-red", "blue", "green"]
    found = [(listing(n, server.url(f"/{n}.png")), "full") for n in names]
    found += [
        (listing("gone", server.url("/gone.png?token=s3cr3t")), "full"),
        (listing("html", server.url("/html.png")), "full"),
        (listing("torn", server.url("/torn.png")), "brand"),
        (listing("noimage", None), "full"),
    ]
    return found


def reranker(cache: EmbeddingCache | None, **kw: object) -> Reranker:
    return Reranker(fetcher=Fetcher(trusted_networks=["127.0.0.1/32"]), cache=cache, **kw)  # type: ignore[arg-type]


def test_every_comp_is_kept_ranked_and_flagged(
    server: FakeServer, cache: EmbeddingCache
) -> None:
    encoder = ColorEncoder()
    embedding = encoder.encode_images([PHOTO])[0]
    comps = reranker(cache).rerank(embedding, comps_for(server), encoder=encoder).comps
    by_id = {c.listing.listing_id: c for c in comps}
    assert len(comps) == 10
    assert [c.listing.listing_id for c in comps[:4]] == ["red", "stock", "mostly-red", "half-red"]
    assert by_id["red"].similarity == pytest.approx(1.0, abs=1e-6)
    assert by_id["mostly-red"].similarity == pytest.approx(3 / np.sqrt(10), abs=0.02)
    assert by_id["half-red"].similarity == pytest.approx(1 / np.sqrt(2), abs=0.02)
    # One stock photo on two listings: the second is flagged, the first is not.
    assert CompFlag.DUPLICATE_IMAGE not in by_id["red"].flags
    assert CompFlag.DUPLICATE_IMAGE in by_id["stock"].flags
    # The cut-off comes from this query's scores: blue and green are far below the rest.
    below = {c.listing.listing_id for c in comps if CompFlag.BELOW_CUTOFF in c.flags}
    assert below == {"blue", "green"}
    failed = {c.listing.listing_id: c for c in comps if CompFlag.IMAGE_UNAVAILABLE in c.flags}
    assert set(failed) == {"gone", "html", "torn", "noimage"}
    assert [c.listing.listing_id for c in comps[-4:]] == ["gone", "html", "torn", "noimage"]
    assert "HTTP 404" in failed["gone"].image_error  # type: ignore[operator]
    assert "s3cr3t" not in failed["gone"].image_error  # type: ignore[operator]
    assert "not a JPEG, PNG or WebP" in failed["html"].image_error  # type: ignore[operator]
    assert "unusable" in failed["torn"].image_error  # type: ignore[operator]
    assert failed["torn"].query_step == "brand"
    assert failed["noimage"].image_error == "listing has no image"
    assert all(c.score == 0.0 and c.similarity is None for c in failed.values())
    # Same bytes at two URLs are encoded once; failures are never encoded.
    assert encoder.images_encoded == 1 + 5


def test_the_cache_skips_download_and_encoding_the_second_time(
    server: FakeServer, cache: EmbeddingCache
) -> None:
    encoder = ColorEncoder()
    embedding = encoder.encode_images([PHOTO])[0]
    first = reranker(cache).rerank(embedding, comps_for(server), encoder=encoder).comps
    requests, encoded = len(server.requests), encoder.images_encoded
    second = reranker(cache).rerank(embedding, comps_for(server), encoder=encoder).comps
    assert [c.to_dict() for c in second] == [c.to_dict() for c in first]
    assert encoder.images_encoded == encoded
    fetched_again = {r.path for r in server.requests[requests:]}
    assert fetched_again == {"/gone.png?token=s3cr3t", "/html.png", "/torn.png"}


def test_a_new_url_with_known_content_is_fetched_but_not_encoded(
    server: FakeServer, cache: EmbeddingCache
) -> None:
    encoder = ColorEncoder()
    embedding = encoder.encode_images([PHOTO])[0]
    rr = reranker(cache)
    rr.rerank(embedding, [(listing("a", server.url("/red.png")), "full")], encoder=encoder)
    encoded = encoder.images_encoded
    server.routes["/mirror.png"] = ROUTES["/red.png"]
    comps = rr.rerank(embedding, [(listing("b", server.url("/mirror.png")), "full")],
                      encoder=encoder).comps
    assert comps[0].similarity == pytest.approx(1.0)
    assert encoder.images_encoded == encoded
    assert "/mirror.png" in server.paths()


def test_a_different_model_does_not_reuse_vectors(
    server: FakeServer, cache: EmbeddingCache
) -> None:
    found = [(listing("a", server.url("/red.png")), "full")]
    four, two = ColorEncoder(bins=4), ColorEncoder(bins=2)
    reranker(cache).rerank(four.encode_images([PHOTO])[0], found, encoder=four)
    comps = reranker(cache).rerank(two.encode_images([PHOTO])[0], found, encoder=two).comps
    assert two.images_encoded == 2 and comps[0].similarity == pytest.approx(1.0)


def test_known_vectors_are_used_without_fetching(server: FakeServer) -> None:
    encoder = ColorEncoder()
    embedding = encoder.encode_images([PHOTO])[0]
    known = listing("known", server.url("/blue.png"))
    comps = reranker(None).rerank(embedding, [(known, "full")], encoder=encoder,
                                  known_vectors={known.key: embedding}).comps
    assert comps[0].similarity == pytest.approx(1.0)
    assert server.requests == []


def test_the_engine_uses_marketplace_embeddings_without_fetching(
    server: FakeServer, tmp_path: Path
) -> None:
    encoder = ColorEncoder()
    embedding = encoder.encode_images([PHOTO])[0]
    known = listing("known", server.url("/blue.png"))
    market = ListMarketplace("m", [known], embeddings={known.key: embedding})
    engine = Engine(encoder=encoder, experts=[], marketplaces=[market], reranker=reranker(None),
                    catalog=tmp_path, load_entrypoints=False)
    comps = engine.find_comps(PHOTO, Identification(brand="Acme", category="jacket"))
    assert comps[0].similarity == pytest.approx(1.0)
    assert server.requests == []


def test_text_similarity_is_mixed_in_and_ranks_imageless_comps(server: FakeServer) -> None:
    encoder = ColorEncoder()
    embedding = encoder.encode_images([PHOTO])[0]
    ident = Identification(brand="Northwind", product_name="trucker jacket")
    found = [(listing("red", server.url("/red.png"), "Northwind trucker jacket"), "full"),
             (listing("x", None, "Northwind trucker jacket"), "full"),
             (listing("y", None, "something else entirely"), "full")]
    comps = reranker(None, text_weight=0.4).rerank(embedding, found, encoder=encoder,
                                                  identification=ident).comps
    texts = encoder.encode_texts(["Northwind trucker jacket", "something else entirely"])
    by_id = {c.listing.listing_id: c for c in comps}
    same = float(texts[0] @ texts[0])
    other = float(texts[1] @ texts[0])
    assert by_id["x"].text_similarity == pytest.approx(same, abs=1e-5)
    assert by_id["x"].score == pytest.approx(0.4 * same, abs=1e-5)
    assert by_id["y"].score == pytest.approx(0.4 * max(other, 0.0), abs=1e-5)
    assert by_id["red"].score == pytest.approx(0.6 * 1.0 + 0.4 * same, abs=1e-5)
    assert [c.listing.listing_id for c in comps] == ["red", "x", "y"]
    plain = reranker(None).rerank(embedding, found, encoder=encoder, identification=ident).comps
    assert all(c.text_similarity is None for c in plain)


def test_encoder_failure_keeps_every_comp(server: FakeServer) -> None:
    class Broken(ColorEncoder):
        def encode_images(self, images):  # type: ignore[no-untyped-def]
            raise RuntimeError("out of memory")

    embedding = ColorEncoder().encode_images([PHOTO])[0]
    result = reranker(None).rerank(embedding, comps_for(server)[:3], encoder=Broken())
    comps, warnings = result.comps, result.warnings
    assert len(comps) == 3
    assert all("out of memory" in (c.image_error or "") for c in comps)
    assert any("could not be encoded" in w for w in warnings)


def test_the_engine_reranks_through_the_reranker(server: FakeServer, tmp_path: Path) -> None:
    found = [listing(n, server.url(f"/{n}.png")) for n in ("blue", "red", "half-red")]
    found.append(listing("gone", server.url("/gone.png")))
    engine = Engine(encoder=ColorEncoder(), experts=[], marketplaces=[ListMarketplace("m", found)],
                    reranker=reranker(None), catalog=tmp_path, load_entrypoints=False)
    comps = engine.find_comps(PHOTO, Identification(brand="Acme", category="jacket"))
    assert [c.listing.listing_id for c in comps] == ["red", "half-red", "blue", "gone"]
    assert comps[-1].flags == (CompFlag.IMAGE_UNAVAILABLE,)
    assert engine.fetcher is engine.reranker.fetcher


# -- the cut-off ----------------------------------------------------------------


def test_cutoff_splits_two_clear_groups() -> None:
    cutoff = similarity_cutoff([0.91, 0.88, 0.86, 0.84, 0.31, 0.28, 0.25])
    assert cutoff is not None and 0.31 < cutoff < 0.84


def test_cutoff_follows_the_query_not_a_fixed_number() -> None:
    low = similarity_cutoff([0.41, 0.40, 0.38, 0.37, 0.12, 0.10])
    high = similarity_cutoff([0.95, 0.94, 0.93, 0.92, 0.70, 0.69])
    assert low is not None and high is not None
    assert 0.12 < low < 0.37 and 0.70 < high < 0.92


def test_no_cut_in_an_even_spread_or_a_tight_group() -> None:
    assert similarity_cutoff(list(np.linspace(0.2, 0.9, 15))) is None
    assert similarity_cutoff([0.8, 0.8, 0.8, 0.8, 0.8]) is None
    assert similarity_cutoff([0.9, 0.5, 0.1]) is None  # too few to judge


def test_a_lone_far_outlier_is_cut() -> None:
    values = [0.80, 0.82, 0.79, 0.81, 0.83, 0.78, 0.80, 0.81, 0.79, 0.82, 0.80, 0.45]
    cutoff = similarity_cutoff(values)
    assert cutoff is not None and 0.45 < cutoff < 0.78


# -- the cache ------------------------------------------------------------------


def test_cache_is_bounded_and_keeps_recent_entries(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "c.sqlite", max_entries=10)
    unit = np.eye(64, dtype=np.float32)
    for i in range(50):
        cache.put(f"sha{i}", "m", unit[i], url=f"http://x/{i}")
    assert len(cache) <= 10
    assert cache.get("sha49", "m") is not None and cache.get("sha0", "m") is None
    assert cache.sha_for_url("http://x/49") == "sha49"
    assert np.allclose(cache.get("sha49", "m"), unit[49])  # type: ignore[arg-type]
    assert cache.get("sha49", "other-model") is None
    cache.close()


def test_url_entries_expire_and_urls_are_not_stored(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path / "c.sqlite", url_ttl=0)
    cache.put("sha", "m", np.full(4, 0.5, np.float32), url="http://x/a.jpg?token=s3cr3t")
    assert cache.sha_for_url("http://x/a.jpg?token=s3cr3t") is None
    assert cache.get("sha", "m") is not None
    cache.close()
    assert b"s3cr3t" not in (tmp_path / "c.sqlite").read_bytes()


def test_a_damaged_cache_file_turns_the_cache_off(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    cache = EmbeddingCache(path)
    cache.put("sha", "m", np.ones(4, np.float32))
    assert cache.get("sha", "m") is None and len(cache) == 0
    cache.close()


def test_the_default_cache_lives_under_the_restyle_home(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RESTYLE_HOME", str(tmp_path / "home"))
    assert EmbeddingCache().path == tmp_path / "home" / "embeddings.sqlite"
    assert Reranker().cache is not None and Reranker(cache=None).cache is None


def test_a_comp_image_past_restyles_limits_is_unavailable_with_the_reason() -> None:
    strip = io.BytesIO()
    Image.new("RGB", (40000, 1), RED).save(strip, format="PNG")
    routes = {"/strip.png": Reply(body=strip.getvalue(), content_type="image/png"),
              "/red.png": ROUTES["/red.png"]}
    encoder = ColorEncoder()
    with FakeServer(routes=routes) as srv:
        found = [(listing("strip", srv.url("/strip.png")), "full"),
                 (listing("red", srv.url("/red.png")), "full")]
        comps = reranker(None).rerank(encoder.encode_images([PHOTO])[0], found,
                                      encoder=encoder).comps
    by_id = {c.listing.listing_id: c for c in comps}
    assert CompFlag.IMAGE_UNAVAILABLE in by_id["strip"].flags
    assert "more elongated than the limit of 20:1" in by_id["strip"].image_error  # type: ignore[operator]
    assert by_id["red"].similarity == pytest.approx(1.0, abs=1e-6)


class SizedEncoder(ColorEncoder):
    """A ColorEncoder whose model sees 100x100 and says so; it notes the sizes it is handed."""

    input_side = 100

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[tuple[int, int]] = []

    def encode_images(self, images):  # type: ignore[no-untyped-def]
        self.sizes += [img.size for img in images]
        return super().encode_images(images)


class BrokenSideEncoder(SizedEncoder):
    @property
    def input_side(self) -> int:  # type: ignore[override]
        raise RuntimeError("a plugin's property that fails")


def test_comp_jpegs_are_decoded_down_to_the_models_input_side(server: FakeServer) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (800, 600), RED).save(buf, format="JPEG")
    server.routes["/big.jpg"] = Reply(body=buf.getvalue(), content_type="image/jpeg")
    found = [(listing("big", server.url("/big.jpg")), "full")]
    sized, broken = SizedEncoder(), BrokenSideEncoder()
    for encoder in (sized, broken):
        comps = reranker(None).rerank(encoder.encode_images([PHOTO])[0], found,
                                      encoder=encoder).comps
        assert comps[0].similarity == pytest.approx(1.0, abs=0.01)
    # 1/4 scale keeps both sides at least 100 (1/8 would not); without a side, 448.
    assert sized.sizes[1:] == [(200, 150)]
    assert broken.sizes[1:] == [(800, 600)]

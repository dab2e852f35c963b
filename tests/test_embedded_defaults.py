"""The embedded default pipeline with a real (tiny) open_clip model, offline."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from restyle import (
    Analysis,
    Catalog,
    CatalogError,
    Comp,
    ConfigurationError,
    EncoderError,
    Engine,
    Identification,
    ImageError,
    Listing,
    Money,
    PriceStatus,
    estimate_price,
    load_photo,
)
from restyle.encoders.openclip import OpenClipEncoder, parse_model_spec
from tests.conftest import EXAMPLES, SAMPLE_LISTINGS, SAMPLE_PHOTO
from tests.fakes.components import ColorEncoder


def test_tiny_model_loads_from_a_local_directory(tiny_encoder: OpenClipEncoder) -> None:
    images = [Image.open(SAMPLE_PHOTO).convert("RGB"), Image.new("RGB", (50, 80), "red")]
    vectors = tiny_encoder.encode_images(images)
    texts = tiny_encoder.encode_texts(["a blue jacket", "a red mug", "x"])
    assert vectors.shape == (2, 64) and texts.shape == (3, 64)
    assert vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    assert tiny_encoder.model_id.startswith("local:")
    # Same image in a batch or alone: same vector.
    alone = tiny_encoder.encode_images(images[:1])
    assert np.allclose(alone[0], vectors[0], atol=1e-5)


def test_model_loads_once_per_process(tiny_model_spec: str) -> None:
    from restyle.encoders.openclip import encoder as module

    a = OpenClipEncoder(tiny_model_spec, device="cpu")
    b = OpenClipEncoder(tiny_model_spec, device="cpu")
    assert a._load() is b._load()
    model_name = f"local-dir:{Path(tiny_model_spec[len('local-dir:'):]).resolve()}"
    # One entry for this model at this precision (other tests may load it at another).
    assert sum(1 for key in module._CACHE
               if key[0] == model_name and key[3] == a.precision) == 1


def test_model_spec_parsing(tiny_model_dir: Path, tmp_path: Path) -> None:
    assert parse_model_spec("ViT-B-32/laion2b_s34b_b79k").model_id == "ViT-B-32/laion2b_s34b_b79k"
    assert parse_model_spec("ViT-B-32").pretrained == "laion2b_s34b_b79k"
    assert parse_model_spec("hf-hub:Marqo/marqo-fashionSigLIP").model_name == (
        "hf-hub:Marqo/marqo-fashionSigLIP"
    )
    assert parse_model_spec(str(tiny_model_dir)).model_name.startswith("local-dir:")
    weights = tiny_model_dir / "open_clip_pytorch_model.bin"
    spec = parse_model_spec("ViT-B-32", weights=weights)
    assert spec.pretrained == str(weights) and spec.model_id.startswith("ViT-B-32/file:")
    with pytest.raises(EncoderError, match="unknown model architecture"):
        parse_model_spec("ViT-Nope")
    with pytest.raises(EncoderError, match=r"no open_clip_config\.json"):
        parse_model_spec(f"local-dir:{tmp_path}")
    with pytest.raises(EncoderError, match="weights file not found"):
        parse_model_spec("ViT-B-32", weights=tmp_path / "missing.pt")


def test_missing_weights_offline_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RESTYLE_OFFLINE", "1")
    encoder = OpenClipEncoder("ViT-B-32/laion2b_s34b_b79k", cache_dir=tmp_path, device="cpu")
    with pytest.raises(EncoderError, match=r"not in the local cache and offline mode is on"):
        encoder.encode_texts(["x"])


def test_bad_precision_is_rejected() -> None:
    with pytest.raises(EncoderError, match="precision"):
        OpenClipEncoder("ViT-B-32", precision="int3")


def test_catalog_refuses_another_model(sample_catalog_dir: Path) -> None:
    with pytest.raises(CatalogError, match="was built with model local:"):
        Catalog.open(sample_catalog_dir, ColorEncoder())


def test_missing_catalog_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="no catalog at"):
        Catalog.open(tmp_path / "nothing", ColorEncoder())


def test_catalog_build_is_resumable(tmp_path: Path) -> None:
    encoder = ColorEncoder()
    catalog = Catalog.open(tmp_path / "cat", encoder, create=True)
    first = catalog.build(SAMPLE_LISTINGS, encoder, batch_size=5, progress=False)
    assert (first.added, first.skipped, first.rejected) == (12, 0, [])
    encoded = encoder.images_encoded
    second = catalog.build(SAMPLE_LISTINGS, encoder, progress=False)
    assert (second.added, second.updated, second.skipped) == (0, 0, 12)
    assert encoder.images_encoded == encoded
    catalog.close()
    reopened = Catalog.open(tmp_path / "cat", encoder)
    assert len(reopened) == 12 and len(reopened.index) == 12


def test_catalog_build_accepts_csv(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in SAMPLE_LISTINGS.read_text().splitlines()][:2]
    csv_path = EXAMPLES / "catalog" / "_tmp_listings.csv"
    try:
        csv_path.write_text(
            "id,title,brand,category,price,currency,image\n"
            + "".join(f"{r['id']},{r['title'].replace(',', ' ')},{r['brand']},{r['category']},"
                      f"{r['price']},EUR,{r['image']}\n" for r in rows)
            + "bad,no price,X,jacket,,EUR,images/nw-mug-green.jpg\n"
        )
        encoder = ColorEncoder()
        catalog = Catalog.open(tmp_path / "cat", encoder, create=True)
        report = catalog.build(csv_path, encoder, progress=False)
    finally:
        csv_path.unlink()
    assert report.added == 2
    assert [(r.row, r.reason) for r in report.rejected] == [(4, "missing price")]
    listing = catalog.listing(1)
    assert listing is not None and listing.price == Money(amount=rows[0]["price"], currency="EUR")


def test_default_engine_identifies_and_prices_offline(
    tiny_encoder: OpenClipEncoder, catalog_copy: Path
) -> None:
    engine = Engine(encoder=tiny_encoder, catalog=catalog_copy, load_entrypoints=False)
    photo = EXAMPLES / "catalog" / "images" / "ls-bag-pink.jpg"
    analysis = engine.analyze(photo)
    assert analysis.comps[0].listing.listing_id == "ls-bag-pink"
    assert analysis.identification.brand == "Larkspur"
    catalog_evidence = analysis.identification.evidence_for("brand")
    assert [e.expert for e in catalog_evidence] == ["catalog"]
    clip = next(o for o in analysis.opinions if o.expert == "clip")
    facets = {obs.facet for obs in clip.labels}
    assert facets == {"category", "color", "material", "pattern", "style"}
    assert all(0.0 <= obs.score <= 1.0 for obs in clip.labels)
    assert analysis.price.status is PriceStatus.OK
    assert analysis.model_id == tiny_encoder.model_id


def batch_sizes(encoder: OpenClipEncoder, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of each ``encode_images`` call the encoder gets from now on."""
    sizes: list[int] = []
    original = encoder.encode_images

    def counting(images):  # type: ignore[no-untyped-def]
        sizes.append(len(images))
        return original(images)

    monkeypatch.setattr(encoder, "encode_images", counting)
    return sizes


def test_analyze_many_matches_one_at_a_time_and_encodes_the_photos_together(
    tiny_encoder: OpenClipEncoder, catalog_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = Engine(encoder=tiny_encoder, catalog=catalog_copy, load_entrypoints=False)
    photos = sorted((EXAMPLES / "catalog" / "images").glob("*.jpg"))[:6]
    one_by_one = [engine.analyze(p) for p in photos]
    batches = batch_sizes(tiny_encoder, monkeypatch)
    together = engine.analyze_many([*photos[:3], b"not a photo", *photos[3:]],
                                   return_exceptions=True, progress=False)
    assert isinstance(together[3], ImageError)
    del together[3]
    assert batches[0] == len(photos)  # the photos' own embeddings in one call
    for alone, batched in zip(one_by_one, together, strict=True):
        assert isinstance(batched, Analysis)
        assert batched.photo.sha256 == alone.photo.sha256
        assert [c.listing.key for c in batched.comps] == [c.listing.key for c in alone.comps]
        assert batched.price.estimate == alone.price.estimate
        assert batched.identification.brand == alone.identification.brand


def test_analyze_many_in_several_batches_keeps_the_order_and_the_answers(
    tiny_encoder: OpenClipEncoder, catalog_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from restyle._engine import engine as engine_module

    engine = Engine(encoder=tiny_encoder, catalog=catalog_copy, load_entrypoints=False)
    photos = sorted((EXAMPLES / "catalog" / "images").glob("*.jpg"))[:9]
    one_by_one = [engine.analyze(p) for p in photos]
    monkeypatch.setattr(engine_module, "BATCH_PHOTOS", 4)
    batches = batch_sizes(tiny_encoder, monkeypatch)
    images: list[object] = [*photos[:5], b"not a photo", *photos[5:]]
    together = engine.analyze_many(images, return_exceptions=True,  # type: ignore[arg-type]
                                   progress=False)
    assert batches == [4, 3, 2]  # the bad photo is the second batch's fourth
    assert isinstance(together.pop(5), ImageError)
    for alone, batched in zip(one_by_one, together, strict=True):
        assert isinstance(batched, Analysis)
        assert batched.photo.sha256 == alone.photo.sha256
        assert [c.listing.key for c in batched.comps] == [c.listing.key for c in alone.comps]


def test_an_analysis_asks_the_vector_index_once_however_far_it_relaxes(
    tiny_encoder: OpenClipEncoder, catalog_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from restyle._indexes.flat import VectorIndex
    from restyle.marketplaces.catalog import CatalogMarketplace

    # Wanting more comps than the catalog holds walks every relaxation step.
    engine = Engine(encoder=tiny_encoder, catalog=catalog_copy, load_entrypoints=False,
                    comps_wanted=50)
    engine.analyze(Image.new("RGB", (64, 48), "red"))  # warm: the model, the prompts
    searches: list[int] = []
    steps: list[str] = []
    real_search = VectorIndex.search
    real_step = CatalogMarketplace.search_by_image

    def counting(self: VectorIndex, queries: np.ndarray, k: int):  # type: ignore[no-untyped-def]
        searches.append(k)
        return real_search(self, queries, k)

    def stepping(self, photo, query, **kwargs):  # type: ignore[no-untyped-def]
        steps.append(query.step)
        return real_step(self, photo, query, **kwargs)

    monkeypatch.setattr(VectorIndex, "search", counting)
    monkeypatch.setattr(CatalogMarketplace, "search_by_image", stepping)
    analysis = engine.analyze(SAMPLE_PHOTO)
    assert len(steps) >= 3 and steps[-1] == "any"  # the expert searched too, before them
    assert len(searches) == 1
    assert len(analysis.comps) == 12


def test_clip_expert_ranks_the_prompt_that_matches_the_image_best(
    tiny_encoder: OpenClipEncoder,
) -> None:
    # A real text tower is needed to check semantics; with random weights we can
    # still check that the expert reports the argmax of its own similarities.
    from restyle.experts.clip import ClipExpert

    expert = ClipExpert(encoder=tiny_encoder, top_k=1)
    photo = load_photo(SAMPLE_PHOTO)
    opinion = expert.examine(photo)
    [category] = [o for o in opinion.labels if o.facet == "category"]
    from restyle._taxonomy import CATEGORIES, PROMPTS

    texts = tiny_encoder.encode_texts([PROMPTS["category"].format(c) for c in CATEGORIES])
    best = CATEGORIES[int(np.argmax(texts @ tiny_encoder.photo_vector(photo)))]
    assert category.text == best


def comp(price: str, score: float, currency: str = "USD", key: str = "x") -> Comp:
    listing = Listing(marketplace="m", listing_id=f"{key}{price}{score}", title="t",
                      price=Money(amount=price, currency=currency))
    return Comp(listing=listing, score=score, similarity=score)


def test_price_estimate_basics() -> None:
    estimate = estimate_price([comp("10", 0.9), comp("20", 0.9), comp("30", 0.9)])
    assert estimate.ok and estimate.estimate == Decimal("20.00")
    assert estimate.comps_used == 3 and estimate.effective_weight == pytest.approx(3.0)
    too_few = estimate_price([comp("10", 0.9), comp("20", 0.9)])
    assert too_few.status is PriceStatus.NOT_ENOUGH_DATA and too_few.estimate is None
    outlier = estimate_price([comp("10", 0.9), comp("11", 0.9), comp("12", 0.9),
                              comp("13", 0.9), comp("900", 0.9)])
    assert outlier.high is not None and outlier.high < Decimal("20")
    assert any("outlier" in reason for reason in outlier.excluded)
    mixed = estimate_price([comp("10", 0.9), comp("12", 0.9), comp("14", 0.9),
                            comp("100", 0.5, "EUR")])
    assert mixed.currency == "USD" and any("EUR" in reason for reason in mixed.excluded)


def test_taxonomy_prompts_are_encoded_once_per_model_per_process() -> None:
    from restyle.experts.clip import ClipExpert

    class CountingEncoder(ColorEncoder):
        text_calls = 0

        @property
        def model_id(self) -> str:
            return "counting-prompts"

        def encode_texts(self, texts):  # type: ignore[no-untyped-def]
            CountingEncoder.text_calls += 1
            return super().encode_texts(texts)

    for _ in range(3):
        engine = Engine(experts=[ClipExpert()], encoder=CountingEncoder(), marketplaces=[],
                        load_entrypoints=False)
        [opinion] = engine.examine(SAMPLE_PHOTO)
        assert opinion.ok and {o.facet for o in opinion.labels} >= {"category", "color"}
    assert CountingEncoder.text_calls == 1


def test_engine_model_option_picks_the_openclip_model(
    tiny_model_spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESTYLE_MODEL", "ViT-B-32/laion2b_s34b_b79k")
    engine = Engine(model=tiny_model_spec, experts=[], marketplaces=[], catalog=tmp_path,
                    load_entrypoints=False)
    assert isinstance(engine.encoder, OpenClipEncoder)
    assert engine.encoder.model_id == parse_model_spec(tiny_model_spec).model_id
    assert engine.find_comps(SAMPLE_PHOTO, Identification()) == []
    assert Engine(model="ViT-L-14/datacomp_xl_s13b_b90k", load_entrypoints=False,
                  experts=[], marketplaces=[]).encoder.model_id == (
        "ViT-L-14/datacomp_xl_s13b_b90k")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"model": "local-dir:/no/such/model"}, "has no open_clip_config.json"),
        ({"model": ""}, "model must be a model name"),
        ({"model": 3}, "model must be a model name"),
        ({"model": "ViT-B-32/random", "encoder": ColorEncoder()},
         "model= chooses the openclip encoder's model, but the encoder is 'color'"),
    ],
)
def test_engine_model_option_mistakes(options: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Engine(experts=[], marketplaces=[], load_entrypoints=False, **options)  # type: ignore[arg-type]

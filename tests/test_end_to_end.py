"""The founding design end to end, offline: Google Vision and AWS Rekognition (and
CLIP) as experts, Gemini as synthesizer, eBay comps re-ranked by a CLIP encoder,
and a price, each through its real client library against the local fakes.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from restyle import Analysis, CompFlag, EmbeddingCache, Engine, Fetcher, Reranker
from restyle._input.fetching import USER_AGENT
from restyle.encoders.openclip import OpenClipEncoder
from restyle.experts.aws_rekognition import AwsRekognitionExpert
from restyle.experts.google_vision import GoogleVisionExpert
from restyle.marketplaces.ebay import EbayMarketplace
from restyle.synthesizers.gemini import GeminiSynthesizer
from restyle.testing import FakeServer, Reply, image_bytes
from tests.conftest import SAMPLE_PHOTO, wait_until
from tests.fakes.ebay import SEARCH_PATH, TOKEN_PATH, FakeEbay, item
from tests.fakes.llm import gemini_json, gemini_text
from tests.fakes.rekognition import REGION, FakeRekognition, fake_rekognition
from tests.fakes.vision import FakeVision, error

VISION_KEY = "AIzaSy-E2E-SENTINEL-vision-0123456789"
GEMINI_KEY = "AIzaSy-E2E-SENTINEL-gemini-9876543210"
EBAY_CLIENT_ID = "restyle-e2e-PRD-0123456789"
EBAY_SECRET = "PRD-E2E-SENTINEL-ebay-s3cr3t"
AWS_SECRET = "E2E/SENTINEL/aws+secret/key/0123456789abcd"
SECRETS = (VISION_KEY, GEMINI_KEY, EBAY_SECRET, AWS_SECRET)

#: What Gemini answers: the item the Vision and Rekognition fakes agree on.
GEMINI_ANSWER: dict[str, Any] = {
    "product_name": "Nike Air Max 90",
    "brand": "Nike",
    "category": "sneakers",
    "attributes": [{"name": "color", "value": "black", "confidence": 0.7},
                   {"name": "model_number", "value": "CW2288-111", "confidence": 0.8}],
    "confidence": 0.88,
    "summary": "A pair of black Nike Air Max 90 sneakers, style CW2288-111.",
    "suggested_photos": ["a photo of the size tag inside the tongue"],
}

# The eBay comps, in the order eBay lists them: title, image path, item options.
# The photo itself sits third so that ranking it first is the re-ranker's doing;
# the two auctions nobody bid on never count towards the price, whatever a
# random model makes of their pictures.
COMPS: dict[str, tuple[str, dict[str, Any]]] = {
    "Nike Air Max 90 black, worn twice": ("/auction-blue.jpg",
                                          {"auction": True, "bid": "9.99", "bids": 0}),
    "Nike Air Max 90 CW2288-111 size 10": ("/gone.jpg", {"price": "55.00"}),
    "Nike Air Max 90 black sneakers": ("/same.jpg", {"price": "60.00"}),
    "Air Max 90 trainers, great condition": ("/listing-page.jpg", {"price": "65.00"}),
    "Nike Air Max 90 lot": ("/auction-green.jpg", {"auction": True, "bid": "12.50", "bids": 0}),
}
SAME = "Nike Air Max 90 black sneakers"
UNSEEN = {"Nike Air Max 90 CW2288-111 size 10", "Air Max 90 trainers, great condition"}
AUCTIONS = {"Nike Air Max 90 black, worn twice", "Nike Air Max 90 lot"}

IMAGE_ROUTES = {
    "/same.jpg": Reply(body=SAMPLE_PHOTO.read_bytes()),  # an exact copy of the user's photo
    "/auction-blue.jpg": Reply(body=image_bytes((30, 40, 190))),
    "/auction-green.jpg": Reply(body=image_bytes((30, 180, 60))),
    # A listing page where an image should be; /gone.jpg has no route and answers 404.
    "/listing-page.jpg": Reply(body=b"<html><body>This listing has ended</body></html>",
                               content_type="text/html; charset=utf-8"),
}


@dataclass
class Pipeline:
    engine: Engine
    vision: FakeVision
    rekognition: FakeRekognition
    gemini: FakeServer
    ebay: FakeEbay
    images: FakeServer


def ebay_items(images: FakeServer) -> list[dict[str, Any]]:
    items = []
    for n, (title, (path, options)) in enumerate(COMPS.items(), start=1):
        data = item(n, **options)
        data["title"] = title
        data["image"] = {"imageUrl": images.url(path)}
        items.append(data)
    return items


@pytest.fixture
def no_leftover_threads() -> Iterator[None]:
    """Set up first and torn down last: every fake and worker must be gone by then
    (restyle's idle reusable workers excepted: a busy one carries its call's name;
    and its one model thread, which lives as long as the process)."""
    before = set(threading.enumerate())
    yield

    def leftover() -> list[threading.Thread]:
        return [t for t in threading.enumerate()
                if t not in before and t.is_alive()
                and t.name not in ("restyle worker", "restyle-model")]

    wait_until(lambda: not leftover())
    assert not leftover()


@pytest.fixture
def pipeline(
    no_leftover_threads: None, tiny_encoder: OpenClipEncoder, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Pipeline]:
    with ExitStack() as stack:
        vision = stack.enter_context(FakeVision())
        rekognition = stack.enter_context(fake_rekognition(monkeypatch))
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", AWS_SECRET)  # read when boto3 is first used
        gemini = stack.enter_context(FakeServer(gemini_json(GEMINI_ANSWER)))
        images = stack.enter_context(FakeServer(routes=IMAGE_ROUTES))
        ebay = stack.enter_context(FakeEbay(client_id=EBAY_CLIENT_ID, client_secret=EBAY_SECRET,
                                            items=ebay_items(images)))
        cache = EmbeddingCache(tmp_path / "embeddings.sqlite")
        stack.callback(cache.close)
        marketplace = EbayMarketplace(client_id=EBAY_CLIENT_ID, client_secret=EBAY_SECRET,
                                      base_url=ebay.base_url, timeout=(2.0, 5.0))
        stack.callback(marketplace.close)
        engine = Engine(
            experts=[
                GoogleVisionExpert(api_key=VISION_KEY, transport="rest",
                                   endpoint=vision.endpoint, timeout=10.0, max_attempts=2),
                AwsRekognitionExpert(region=REGION, endpoint_url=rekognition.endpoint,
                                     timeout=10.0, max_attempts=1),
                "clip",
            ],
            synthesizer=GeminiSynthesizer(api_key=GEMINI_KEY, base_url=gemini.base_url,
                                          timeout=5.0, retries=0, retry_delay=0.01),
            marketplaces=[marketplace],
            encoder=tiny_encoder,
            reranker=Reranker(fetcher=Fetcher(trusted_networks=["127.0.0.1/32"]), cache=cache),
            load_entrypoints=False,
        )
        yield Pipeline(engine, vision, rekognition, gemini, ebay, images)


def by_title(analysis: Analysis) -> dict[str, Any]:
    return {comp.listing.title: comp for comp in analysis.comps}


def check_comps_and_price(analysis: Analysis) -> None:
    comps = by_title(analysis)
    assert set(comps) == set(COMPS)  # every comp is kept, failed images included
    first = analysis.comps[0]
    assert first.listing.title == SAME
    assert first.similarity == pytest.approx(1.0, abs=1e-3)
    assert not first.flags
    for title in UNSEEN:
        assert comps[title].flags == (CompFlag.IMAGE_UNAVAILABLE,)
        assert comps[title].similarity is None and comps[title].score == 0.0
    assert "HTTP 404" in (comps["Nike Air Max 90 CW2288-111 size 10"].image_error or "")
    assert "not an image" in (comps["Air Max 90 trainers, great condition"].image_error or "")
    assert {c.listing.title for c in analysis.comps[-2:]} == UNSEEN

    key = {title: comp.listing.key for title, comp in comps.items()}
    price = analysis.price
    assert price.ok and price.currency == "USD"
    # The photo's twin at full weight and the two unseen comps at a quarter each.
    assert price.comps_used == 3
    counted = {p.listing_key: p for p in price.counted}
    assert set(counted) == {key[SAME]} | {key[t] for t in UNSEEN}
    assert counted[key[SAME]].weight == pytest.approx(1.0, abs=1e-3)
    assert {counted[key[t]].down_weighted for t in UNSEEN} == {CompFlag.IMAGE_UNAVAILABLE}
    assert {e.listing_key for e in price.exclusions} == {key[t] for t in AUCTIONS}
    assert price.estimate == Decimal("60.00")
    assert price.low is not None and price.high is not None
    assert price.low <= price.estimate <= price.high


def test_founding_design_end_to_end(
    pipeline: Pipeline, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="restyle")
    engine = pipeline.engine

    # -- every service answers --------------------------------------------------------
    analysis = engine.analyze(SAMPLE_PHOTO)

    assert [o.expert for o in analysis.opinions] == ["google-vision", "aws-rekognition", "clip"]
    assert all(o.ok for o in analysis.opinions), analysis.failed_experts
    assert not analysis.failed_experts
    # Each cloud expert really went over the wire, with its credentials.
    (vision_call,) = pipeline.vision.requests
    assert vision_call.headers["x-goog-api-key"] == VISION_KEY
    assert vision_call.image == SAMPLE_PHOTO.read_bytes()
    assert [op for op, _ in pipeline.rekognition.requests] == ["DetectLabels"]
    assert pipeline.rekognition.image() == SAMPLE_PHOTO.read_bytes()

    ident = analysis.identification
    assert ident.synthesizer == "gemini" and ident.fallback_reason is None
    assert (ident.brand, ident.category, ident.product_name) == ("Nike", "sneakers",
                                                                 "Nike Air Max 90")
    assert ident.attribute("model_number") == "CW2288-111"
    # Gemini's answer is backed by what the experts saw, so it keeps its confidence.
    assert {e.expert for e in ident.evidence_for("brand")} >= {"google-vision"}
    assert {e.expert for e in ident.evidence_for("category")} >= {"google-vision",
                                                                  "aws-rekognition"}
    assert ident.confidence == pytest.approx(0.88)
    (gemini_call,) = pipeline.gemini.requests
    assert gemini_call.headers["x-goog-api-key"] == GEMINI_KEY
    prompt = json.dumps(gemini_call.json()["contents"])
    for expert in ("google-vision", "aws-rekognition", "clip"):
        assert expert in prompt  # every expert's report reached the synthesizer

    # eBay was asked for what Gemini identified, with one application token.
    searches = pipeline.ebay.calls(SEARCH_PATH)
    assert searches and "Nike" in searches[0].query["q"]
    assert analysis.query is not None and analysis.query.brand == "Nike"
    assert searches[0].query["q"] == analysis.query.text
    assert len(pipeline.ebay.calls(TOKEN_PATH)) == 1
    # Every comp image was fetched by restyle's Fetcher from the image host.
    fetched = pipeline.images.requests
    assert {request.path for request in fetched} == {path for path, _ in COMPS.values()}
    assert all(request.headers.get("user-agent") == USER_AGENT for request in fetched)

    check_comps_and_price(analysis)
    assert not analysis.warnings
    assert Analysis.from_json(analysis.to_json()) == analysis

    # -- Gemini talks nonsense and Vision is down ----------------------------------------
    pipeline.gemini.script(gemini_text("{'brand': Nike, 'category': sneakers"))
    pipeline.vision.script(error(500, f"Internal error (request key {VISION_KEY})", "INTERNAL"))
    gemini_before = len(pipeline.gemini.requests)
    degraded = engine.analyze(SAMPLE_PHOTO)

    assert set(degraded.failed_experts) == {"google-vision"}
    assert "500" in degraded.failed_experts["google-vision"]
    assert len(pipeline.gemini.requests) - gemini_before == 2  # the answer, then one repair
    fallback = degraded.identification
    assert fallback.synthesizer == "consensus"
    assert fallback.fallback_reason is not None
    assert fallback.fallback_reason.startswith("gemini failed")
    assert "not valid JSON" in fallback.fallback_reason
    # With Vision gone no expert saw a brand: the consensus does not invent one.
    assert fallback.brand is None
    assert degraded.query is not None and "Nike" not in degraded.query.text
    check_comps_and_price(degraded)
    # Images seen in the first analysis came from the embedding cache.
    assert pipeline.images.paths().count("/same.jpg") == 1
    assert Analysis.from_json(degraded.to_json()) == degraded

    # -- no secret shows anywhere -------------------------------------------------------
    assert caplog.records  # the run did log (the failures, at least)
    components = [*engine.experts, engine.synthesizer, *engine.marketplaces, engine.encoder,
                  engine.reranker, engine.fetcher, engine.reranker.cache]
    shown = [
        caplog.text,
        *(record.getMessage() for record in caplog.records),
        *(repr(record.args) for record in caplog.records),
        repr(engine),
        *(repr(component) for component in components),
        # The attributes too, as a debugger or an error reporter would show them.
        *(repr(vars(component)) for component in components if hasattr(component, "__dict__")),
        analysis.to_json(),
        degraded.to_json(),
    ]
    for secret in SECRETS:
        for text in shown:
            assert secret not in text

"""Notebook rendering: everything shown, nothing from a listing executed, no file
read that restyle's catalog did not serve, and every output small."""

from __future__ import annotations

import base64
import builtins
import io
import os
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from restyle import (
    Analysis,
    Comp,
    Condition,
    Identification,
    Listing,
    Money,
    Opinion,
    PhotoInfo,
    PriceEstimate,
    PriceStatus,
)
from restyle._display import INLINE_BUDGET, THUMBNAIL_SIDE
from restyle._input.imaging import load_photo
from restyle._input.vouched import vouch
from tests.conftest import EXAMPLES, SAMPLE_PHOTO

HOSTILE = "<script>alert('x')</script>"


class Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.srcs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.srcs += [v or "" for k, v in attrs if k == "src"]
        if any(k.startswith("on") for k, _ in attrs):
            raise AssertionError(f"event handler attribute in <{tag}>")

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> Collector:
    collector = Collector()
    collector.feed(html)
    return collector


def analysis(title: str = HOSTILE, image_url: str | None = None, *, comps: int = 4,
             image_urls: list[str] | None = None) -> Analysis:
    urls = image_urls or [image_url] * comps  # type: ignore[list-item]
    listings = [
        Listing(marketplace="m", listing_id=str(i), title=title,
                price=Money(amount=Decimal(10 + 5 * i), currency="USD"),
                image_url=url, url="javascript:alert(1)", condition=Condition.USED)
        for i, url in enumerate(urls)
    ]
    return Analysis(
        photo=load_photo(SAMPLE_PHOTO).info(),
        opinions=(Opinion.failure("vision", f"bad answer {HOSTILE}"),),
        identification=Identification(brand=HOSTILE, summary=HOSTILE, confidence=0.4),
        query=None,
        comps=tuple(Comp(listing=item, score=0.9, similarity=0.9, flags=(HOSTILE,))
                    for item in listings),
        price=PriceEstimate(status=PriceStatus.OK, currency="USD", estimate=Decimal("17.50"),
                            low=Decimal("12.50"), high=Decimal("22.50"), comps_used=4),
        warnings=(HOSTILE,),
    )


def test_listing_and_expert_text_is_escaped() -> None:
    html = analysis()._repr_html_()
    parsed = parse(html)
    assert "script" not in parsed.tags
    assert HOSTILE in "".join(parsed.text)  # shown as text
    assert "javascript:" not in html


def test_analysis_shows_photo_comps_and_price_strip() -> None:
    local = (EXAMPLES / "catalog" / "images" / "nw-jacket-blue.jpg").resolve().as_uri()
    vouch([local])  # as the catalog marketplace does for the listings it serves
    parsed = parse(analysis(title="Blue jacket", image_url=local)._repr_html_())
    assert parsed.srcs[0].startswith("data:image/jpeg;base64,")  # the photo
    assert sum(1 for s in parsed.srcs if s.startswith("data:image/jpeg")) == 5  # + 4 comps
    assert "svg" in parsed.tags and parsed.tags.count("circle") == 4
    text = "".join(parsed.text)
    assert "17.50 USD" in text and "Comps (4)" in text and "vision" in text


def test_unsafe_image_urls_are_not_used() -> None:
    for url in ("javascript:alert(1)", "file:///etc/passwd", "data:text/html;base64,PHNjcmlwdD4="):
        parsed = parse(analysis(image_url=url)._repr_html_())
        assert len(parsed.srcs) == 1 and parsed.srcs[0].startswith("data:image/jpeg"), url
        assert "image not shown" in "".join(parsed.text)


def test_identification_and_comp_render_alone() -> None:
    ident = Identification(brand="Acme", confidence=0.5, suggested_photos=("the inside tag",))
    assert "the inside tag" in ident._repr_html_()
    comp = analysis(title="Plain").comps[0]
    html = comp._repr_html_()
    assert "Plain" in html and "10.00 USD" in html


def test_info_carries_a_small_thumbnail() -> None:
    info: PhotoInfo = load_photo(SAMPLE_PHOTO).info(thumbnail_side=64)
    assert info.thumbnail is not None and info.thumbnail.startswith("data:image/jpeg;base64,")
    assert len(info.thumbnail) < 10_000


def big_jpeg(path: Path, *, seed: int = 0) -> Path:
    """A camera-sized JPEG of about 1.4 MB."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(750, 1000, 3), dtype=np.uint8)
    Image.fromarray(pixels).resize((2000, 1500)).save(path, format="JPEG", quality=75)
    assert 1_000_000 < path.stat().st_size < 3_000_000
    return path


def inline_images(html: str) -> list[Image.Image]:
    srcs = [s for s in parse(html).srcs if s.startswith("data:image/jpeg;base64,")]
    return [Image.open(io.BytesIO(base64.b64decode(s.split(",", 1)[1]))) for s in srcs]


def test_catalog_images_become_small_thumbnails(tmp_path: Path) -> None:
    url = big_jpeg(tmp_path / "coat.jpg").resolve().as_uri()
    vouch([url])
    html = analysis(title="Coat", image_url=url, comps=24)._repr_html_()
    assert len(html) < 200_000  # the files themselves come to 24 x 1.4 MB
    images = inline_images(html)
    assert len(images) == 25  # the photo and every comp
    assert all(max(img.size) <= THUMBNAIL_SIDE for img in images[1:])


def test_one_output_has_a_cap_on_inline_images() -> None:
    rng = np.random.default_rng(1)
    noisy = []
    for _ in range(24):  # noise barely compresses: each thumbnail is large
        buf = io.BytesIO()
        pixels = rng.integers(0, 256, size=(400, 400, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
        noisy.append("data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode())
    html = analysis(title="Noise", image_urls=noisy)._repr_html_()
    inline = sum(len(s) for s in parse(html).srcs if s.startswith("data:"))
    assert inline <= INLINE_BUDGET
    assert len(html) < INLINE_BUDGET + 40_000
    assert "image not shown" in "".join(parse(html).text)
    assert all(max(img.size) <= THUMBNAIL_SIDE for img in inline_images(html)[1:])


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every path opened or stat-ed while a test renders."""
    seen: list[str] = []
    real_open, real_stat = builtins.open, os.stat

    def spy_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(str(file))
        return real_open(file, *args, **kwargs)

    def spy_stat(path: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(str(path))
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(os, "stat", spy_stat)
    return seen


def test_local_files_the_catalog_did_not_serve_are_never_read(
    tmp_path: Path, opened: list[str]
) -> None:
    elsewhere = big_jpeg(tmp_path / "not-in-a-catalog.jpg")
    urls = ["file:///etc/passwd", "file:///etc/hostname", "file://localhost/etc/shadow",
            elsewhere.as_uri(), f"file://{elsewhere}/../{elsewhere.name}"]
    opened.clear()
    html = analysis(title="Plain", image_urls=urls)._repr_html_()
    assert not [p for p in opened if p.startswith("/etc") or "not-in-a-catalog" in p]
    parsed = parse(html)
    assert len(parsed.srcs) == 1  # the photo only
    assert "".join(parsed.text).count("image not shown") == len(urls)
    assert "/etc/" not in html and str(tmp_path) not in html


def test_comps_from_the_catalog_marketplace_render_with_thumbnails(
    catalog_copy: Path, tiny_model_spec: str
) -> None:
    from restyle import Engine
    from restyle.encoders.openclip import OpenClipEncoder

    engine = Engine(encoder=OpenClipEncoder(tiny_model_spec, device="cpu"), catalog=catalog_copy,
                    experts=[], marketplaces=["catalog"], load_entrypoints=False)
    result = engine.analyze(SAMPLE_PHOTO)
    assert result.comps and all(
        c.listing.image_url and c.listing.image_url.startswith("file://") for c in result.comps)
    html = result._repr_html_()
    assert len(inline_images(html)) == 1 + len(result.comps)
    assert "image not shown" not in html
    assert len(html) < 200_000

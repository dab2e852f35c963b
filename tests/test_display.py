"""Notebook rendering: everything shown, nothing from a listing executed."""

from __future__ import annotations

from decimal import Decimal
from html.parser import HTMLParser

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
from restyle._imaging import load_photo
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


def analysis(title: str = HOSTILE, image_url: str | None = None) -> Analysis:
    listings = [
        Listing(marketplace="m", listing_id=str(i), title=title,
                price=Money(amount=Decimal(10 + 5 * i), currency="USD"),
                image_url=image_url, url="javascript:alert(1)", condition=Condition.USED)
        for i in range(4)
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
    parsed = parse(analysis(title="Blue jacket", image_url=local)._repr_html_())
    assert parsed.srcs[0].startswith("data:image/jpeg;base64,")  # the photo
    assert sum(1 for s in parsed.srcs if s.startswith("data:image/jpeg")) == 5  # + 4 comps
    assert "svg" in parsed.tags and parsed.tags.count("circle") == 4
    text = "".join(parsed.text)
    assert "17.50 USD" in text and "Comps (4)" in text and "vision" in text


def test_unsafe_image_urls_are_not_used() -> None:
    for url in ("javascript:alert(1)", "file:///etc/passwd", "data:text/html;base64,PHNjcmlwdD4="):
        parsed = parse(analysis(image_url=url)._repr_html_())
        assert all(src.startswith("data:image/jpeg") for src in parsed.srcs), url


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

"""Several photos of one item: the real Vision client on a fake server that
answers each photo on its own, fused into one identification, comps found
with the photos that show the item whole."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pytest
from google.auth.credentials import AnonymousCredentials
from PIL import Image

from restyle import (
    ITEM_MAX_PHOTOS,
    Analysis,
    ConfigurationError,
    Engine,
    ImageError,
    Item,
    Listing,
    Money,
    PhotoRole,
)
from restyle.experts.google_vision import GoogleVisionExpert
from restyle.testing import Reply, Request
from tests.fakes.components import ColorEncoder, ListMarketplace, ScriptedExpert
from tests.fakes.vision import ANNOTATE_PATH, Annotation, FakeVision, error, payload

FRONT = (200, 30, 30)   # a red jacket
TAG = (20, 20, 20)      # a black brand tag
LABEL = (240, 240, 240)  # a white care label


def picture(color: tuple[int, int, int], size: int = 64) -> bytes:
    image = Image.new("RGB", (size, size), color)
    image.paste((128, 128, 128), (0, 0, size // 8, size // 8))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


FRONT_ANSWER: dict[str, Any] = {  # a guess from the front: the wrong brand's logo
    "logoAnnotations": [{"description": "Adidas", "score": 0.8}],
    "labelAnnotations": [{"description": "Jacket", "score": 0.9}],
}
TAG_ANSWER: dict[str, Any] = {  # the brand read on the tag
    "logoAnnotations": [{"description": "Nike", "score": 0.7}],
    "textAnnotations": [{"description": "NIKE\n"}],
}
LABEL_ANSWER: dict[str, Any] = {  # size, composition and RN number on the care label
    "textAnnotations": [{"description": "SIZE M\n60% COTTON\n40% POLYESTER\nRN 12345\n"}],
}


class VisionByPhoto(FakeVision):
    """Answers each photo by its colour, whatever order the calls come in."""

    def __init__(self, answers: dict[tuple[int, int, int], Reply]) -> None:
        super().__init__()
        self.answers = answers

    def answer(self, request: Request) -> Reply:
        if request.route != ANNOTATE_PATH:
            return error(404, "no route", "NOT_FOUND")
        image = Image.open(io.BytesIO(Annotation(request).image)).convert("RGB")
        colour = image.getpixel((image.width - 1, image.height - 1))
        return self.answers[colour]  # type: ignore[index]


@pytest.fixture
def vision() -> Iterator[VisionByPhoto]:
    with VisionByPhoto({FRONT: payload(FRONT_ANSWER), TAG: payload(TAG_ANSWER),
                        LABEL: payload(LABEL_ANSWER)}) as server:
        yield server


def engine_for(server: FakeVision, marketplace: ListMarketplace | None = None,
               **options: Any) -> Engine:
    expert = GoogleVisionExpert(transport="rest", endpoint=server.endpoint,
                                credentials=AnonymousCredentials())
    return Engine(experts=[expert], synthesizer="consensus", encoder=ColorEncoder(),
                  marketplaces=[marketplace or ListMarketplace("m", [])], **options)


def item(**kwargs: Any) -> Item:
    return Item(picture(FRONT), picture(TAG), picture(LABEL), **kwargs)


def test_the_brand_on_the_tag_wins_over_a_guess_from_the_front(vision: VisionByPhoto) -> None:
    engine = engine_for(vision)
    alone = engine.analyze(picture(FRONT))
    assert alone.identification.brand == "Adidas"  # the front alone is misread

    analysis = engine.analyze(item(roles=["whole", "tag", "label"]))
    ident = analysis.identification
    assert ident.brand == "Nike"
    brand_evidence = ident.evidence_for("brand")
    assert brand_evidence and {e.photo for e in brand_evidence} == {1}  # the tag photo
    assert len(vision.requests) == 1 + 3  # every photo examined
    assert {o.photo for o in analysis.opinions} == {0, 1, 2}
    assert [(p.index, p.role) for p in analysis.photos] == [
        (0, PhotoRole.WHOLE), (1, PhotoRole.TAG), (2, PhotoRole.LABEL)]
    assert analysis.photo.role is PhotoRole.WHOLE
    assert Analysis.from_json(analysis.to_json()) == analysis


def test_size_material_and_rn_number_come_from_the_care_label(vision: VisionByPhoto) -> None:
    ident = engine_for(vision).analyze(item(roles=["whole", "tag", "label"])).identification
    assert ident.attribute("size") == "M"
    assert ident.attribute("material") == "cotton"
    assert ident.attribute("rn_number") == "12345"
    assert {e.photo for e in ident.evidence_for("size")} == {2}


def colored(color: tuple[int, int, int]) -> Image.Image:
    return Image.open(io.BytesIO(picture(color)))


def test_a_comp_that_matches_only_the_label_never_outranks_one_like_the_front(
        vision: VisionByPhoto) -> None:
    encoder = ColorEncoder()
    like_label = Listing(marketplace="m", listing_id="label", title="white thing",
                         price=Money(amount=10, currency="USD"))
    like_front = Listing(marketplace="m", listing_id="front", title="red jacket",
                         price=Money(amount=50, currency="USD"))
    vectors = encoder.encode_images([colored(LABEL), colored((190, 40, 40))])
    market = ListMarketplace("m", [like_label, like_front], embeddings={
        like_label.key: vectors[0], like_front.key: vectors[1]})
    analysis = engine_for(vision, market).analyze(item(roles=["whole", "tag", "label"]))
    ids = [c.listing.listing_id for c in analysis.comps]
    assert ids == ["front", "label"]
    label_comp = analysis.comps[1]
    front_vector = encoder.encode_images([colored(FRONT)])[0]
    assert label_comp.similarity == pytest.approx(float(vectors[0] @ front_vector), abs=1e-5)


class RoleEncoder(ColorEncoder):
    """A colour histogram whose text tower knows the role prompts: the tag
    prompts point at the tag's colour, the label prompts at the label's, the
    others at the front's."""

    def __init__(self) -> None:
        super().__init__()
        self.text_calls = 0

    @property
    def model_id(self) -> str:
        return "role-encoder"

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.text_calls += 1
        colours = {"brand": TAG, "care label": LABEL, "size label": LABEL}
        rows = []
        for text in texts:
            colour = next((c for word, c in colours.items() if word in text), None)
            rows.append(self.encode_images([colored(colour or FRONT)])[0] if colour
                        else np.full(self.dim, 1 / np.sqrt(self.dim), np.float32))
        out = np.stack(rows)
        whole = [i for i, t in enumerate(texts) if "whole" in t]
        out[whole] = self.encode_images([colored(FRONT)])[0]
        return out


def test_roles_are_found_when_not_given_and_given_roles_win(vision: VisionByPhoto) -> None:
    encoder = RoleEncoder()
    expert = GoogleVisionExpert(transport="rest", endpoint=vision.endpoint,
                                credentials=AnonymousCredentials())
    engine = Engine(experts=[expert], encoder=encoder, marketplaces=[])
    engine.warm_up()
    analysis = engine.analyze(Item(picture(LABEL), picture(TAG), picture(FRONT)))
    found = {p.index: p.role for p in analysis.photos}
    assert found == {0: PhotoRole.LABEL, 1: PhotoRole.TAG, 2: PhotoRole.WHOLE}
    assert all(p.role_score is not None and 0 < p.role_score <= 1 for p in analysis.photos)
    assert analysis.photo.index == 2  # the whole item is the analysis's photo
    assert analysis.identification.brand == "Nike"

    given = engine.analyze(Item(picture(LABEL), picture(TAG), picture(FRONT),
                                roles=[None, "detail", None]))
    assert {p.index: p.role for p in given.photos}[1] is PhotoRole.DETAIL
    assert {p.index: p.role_score for p in given.photos}[1] is None


def test_an_item_is_never_a_list_and_has_at_most_twelve_photos() -> None:
    engine = Engine(experts=[], encoder=ColorEncoder(), marketplaces=[])
    with pytest.raises(ConfigurationError, match="a list of photos is ambiguous"):
        engine.analyze([picture(FRONT), picture(TAG)])  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=f"at most {ITEM_MAX_PHOTOS} photos"):
        Item(*[picture(FRONT)] * (ITEM_MAX_PHOTOS + 1))
    with pytest.raises(ConfigurationError, match="one role per photo"):
        Item(picture(FRONT), roles=["whole", "tag"])
    with pytest.raises(ConfigurationError, match="must be one of whole, tag"):
        Item(picture(FRONT), roles=["sleeve"])
    results = engine.analyze_many([Item(picture(FRONT), picture(TAG)), picture(LABEL)])
    assert [len(r.photos) for r in results] == [2, 1]


def test_an_unreadable_photo_is_told_and_the_others_analysed() -> None:
    engine = Engine(experts=[ScriptedExpert("a", entities=[("Acme", 0.9, "brand")])],
                    encoder=ColorEncoder(), marketplaces=[])
    analysis = engine.analyze(Item(picture(FRONT), b"not a photo", picture(LABEL)))
    assert [p.index for p in analysis.photos] == [0, 2]
    assert any("photo 2 could not be read" in w for w in analysis.warnings)
    with pytest.raises(ImageError, match="none of the item's 2 photos"):
        engine.analyze(Item(b"junk", b"more junk"))


def test_six_photos_and_a_hung_expert_end_by_the_deadline() -> None:
    release = threading.Event()
    hung = ScriptedExpert("hung", hang=release, timeout=30)
    good = ScriptedExpert("good", entities=[("Acme", 0.9, "brand")])
    engine = Engine(experts=[hung, good], encoder=ColorEncoder(), marketplaces=[],
                    load_entrypoints=False)
    photos = [picture((40 * i, 30, 30)) for i in range(6)]
    try:
        started = time.monotonic()
        analysis = engine.analyze(Item(*photos, roles=["whole"] * 6), deadline=2.0)
        took = time.monotonic() - started
    finally:
        release.set()
    assert took < 2.0 + 0.5
    assert len(analysis.photos) == 6
    assert good.calls == 6 and analysis.identification.brand == "Acme"
    assert {o.photo for o in analysis.opinions if o.expert == "hung" and not o.ok} == set(
        range(6))
    assert set(analysis.failed_experts) == {f"hung (photo {i})" for i in range(1, 7)}


MEMORY_SCRIPT = r"""
import resource, sys, numpy as np
from PIL import Image
from restyle import Engine, Item
from restyle.testing import ColorEncoder
paths = sys.argv[1:]
engine = Engine(experts=[], encoder=ColorEncoder(), marketplaces=[], load_entrypoints=False)
engine.analyze(Image.new("RGB", (64, 64), (1, 2, 3)))  # everything imported and warm
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
analysis = engine.analyze(Item(*paths), deadline=120)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(len(analysis.photos), after - before)
"""


def test_twelve_large_photos_stay_within_the_item_bound(tmp_path: Any) -> None:
    import subprocess
    import sys

    from restyle._input.item import ITEM_MAX_PIXEL_BYTES

    rng = np.random.default_rng(7)
    noise = Image.fromarray(rng.integers(0, 255, (750, 1000, 3), dtype=np.uint8))
    paths = []
    for i in range(ITEM_MAX_PHOTOS):
        path = tmp_path / f"photo-{i:02}.jpg"
        noise.resize((4000, 3000)).save(path, quality=90)  # 12 MP each
        paths.append(str(path))
    files = sum((tmp_path / p).stat().st_size for p in paths)
    done = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, *paths], capture_output=True,
                          text=True, timeout=300, check=True)
    count, grown = (int(v) for v in done.stdout.split())
    assert count == ITEM_MAX_PHOTOS
    # The decoded pixels (each photo at most 2048 a side) and the files' bytes,
    # with room for the interpreter's own arenas.
    assert grown <= ITEM_MAX_PIXEL_BYTES + files + 64 * 2**20, (grown, files)


def test_the_notebook_view_shows_the_strip_and_which_photo_backs_each_field(
        vision: VisionByPhoto) -> None:
    analysis = engine_for(vision).analyze(item(roles=["whole", "tag", "label"]))
    html = analysis._repr_html_()
    for words in ("photo 1: whole", "photo 2: tag", "photo 3: label"):
        assert f"alt='{words}'" in html and f">{words}</figcaption>" in html
    assert "brand = Nike: google-vision" in html and "photo 2, tag)" in html
    alone = engine_for(vision).analyze(picture(FRONT))._repr_html_()
    assert "figcaption" not in alone and "photo 1" not in alone


def test_an_item_from_a_folder_takes_its_photos_by_name(tmp_path: Any) -> None:
    (tmp_path / "b-tag.png").write_bytes(picture(TAG))
    (tmp_path / "a-front.png").write_bytes(picture(FRONT))
    (tmp_path / "._a-front.png").write_bytes(b"macOS metadata")  # hidden: not a photo
    (tmp_path / "notes.txt").write_text("not a photo")
    (tmp_path / "inner").mkdir()
    (tmp_path / "inner" / "c.png").write_bytes(picture(LABEL))  # a sub-folder's: not taken
    item = Item.from_folder(tmp_path)
    assert [p.name for p in item.photos] == ["a-front.png", "b-tag.png"]  # type: ignore[union-attr]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigurationError, match="no JPEG, PNG"):
        Item.from_folder(tmp_path / "empty")
    with pytest.raises(ConfigurationError, match="is not a folder"):
        Item.from_folder(tmp_path / "a-front.png")

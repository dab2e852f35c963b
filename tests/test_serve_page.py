"""The page of restyle serve in a real browser: Debian's Chromium driven by
Playwright, at a phone's width, against the real server (uvicorn in a
subprocess): pick a photo, see the identification with its evidence, the
comps with their thumbnails and the price, edit the draft and export it; a
hostile listing title stays text; the token asked for when the service wants it.

``RESTYLE_SCREENSHOTS=DIR`` also saves the screenshot there (docs/images is
where docs/serving.md shows it)."""

from __future__ import annotations

import http.server
import json
import os
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from restyle.testing import sample_image
from tests.test_serve import TOKEN, jpeg, start, stop

CHROMIUM = Path("/usr/bin/chromium")
sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium")

HOSTILE = "<img src=x onerror=\"document.title='pwned'\"><b>Acme</b> jacket"
TITLES = ("Acme quilted jacket, navy, size M", HOSTILE, "Acme field jacket olive",
          "Acme waxed jacket")


@pytest.fixture
def images(tmp_path: Path) -> Iterator[str]:
    """An http server on 127.0.0.1 with the comps' photos; their URL, {i} the comp's."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(len(TITLES)):  # each a little different, all like the upload
        image = sample_image()
        image.paste((40 * i, 90, 160), (0, 0, 6 + i, 6 + i))
        image.save(folder / f"comp{i}.jpg", format="JPEG")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/comp{{i}}.jpg"
    server.shutdown()


def see_the_result(page: Any, images: str) -> None:
    """The identification with its evidence, the price, the comps with their
    thumbnails, and the hostile title as text."""
    assert page.text_content("#ident-name") == "Acme"
    assert page.locator("#evidence tbody tr").first.text_content() == \
        "brandAcmeacme90%#1"
    assert "USD" in (page.text_content("#price-estimate") or "")
    assert "sold prices" in (page.text_content("#price-basis") or "")
    comps = page.locator("#comps li")
    assert comps.count() == 4
    # The hostile title is text: shown as written, no element made of it.
    hostile = page.locator("#comps .title", has_text="onerror")
    assert hostile.count() == 1 and hostile.text_content() == HOSTILE
    assert page.locator("#comps img[src='x'], #comps b").count() == 0
    assert page.title() == "restyle"
    thumb = comps.nth(0).locator("img.thumb")
    assert thumb.get_attribute("src") in {images.format(i=i) for i in range(4)}
    # Loaded, not only named (the page's policy forbids eval: no wait_for_function).
    sync_api.expect(thumb).to_have_js_property("complete", True)
    assert thumb.evaluate("img => img.naturalWidth") > 0


def test_the_page_analyses_a_photo_and_exports_the_edited_draft(
        tmp_path: Path, images: str) -> None:
    served = start(tmp_path, titles=TITLES, image_url=images, token=TOKEN)
    photo = tmp_path / "jacket.jpg"
    photo.write_bytes(jpeg())
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                 args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 390, "height": 844},
                                    device_scale_factor=1, accept_downloads=True)
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(served.url + "/")
            picker = page.locator("#photos")
            assert picker.get_attribute("accept") == "image/*"
            assert picker.get_attribute("capture") == "environment"
            assert picker.get_attribute("multiple") is not None
            assert page.locator("#token-label").is_hidden()  # asked for only after a 401
            picker.set_input_files(str(photo))
            page.click("#go")
            # The service wants its token: the page says so and asks for it.
            sync_api.expect(page.locator("#status")).to_have_text(
                "This service wants its bearer token: 'Authorization: Bearer TOKEN'.")
            page.fill("#token", TOKEN)
            page.click("#go")
            page.wait_for_selector("#result:not([hidden])", timeout=30_000)
            assert page.locator("#token-label").is_hidden()  # kept for the tab

            see_the_result(page, images)

            title = page.locator("#d-title")
            assert "Acme" in title.input_value()
            title.fill("Acme quilted jacket, navy, M — edited")
            page.fill("#d-price", "42.50")
            with page.expect_download() as download:
                page.click("#export")
            exported = json.loads(Path(download.value.path()).read_text())
            assert exported["title"] == "Acme quilted jacket, navy, M — edited"
            assert exported["price"] == {"amount": "42.50", "currency": "USD"}
            assert exported["description"] and exported["item_specifics"]
            page.click("#copy")
            sync_api.expect(page.locator("#status")).to_have_text("Copied.")
            assert not errors
            shot = tmp_path / "serve-phone.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("RESTYLE_SCREENSHOTS"):
                page.screenshot(path=str(Path(os.environ["RESTYLE_SCREENSHOTS"]) /
                                         "serve-phone.png"), full_page=True)
            browser.close()
    finally:
        stop(served)

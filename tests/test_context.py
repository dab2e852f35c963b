"""Components read the context of the Engine calling them, never another's."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from restyle import ConfigurationError, Context, Engine, Expert, Opinion, load_photo
from restyle.encoders.openclip import OpenClipEncoder
from restyle.experts.catalog import CatalogExpert
from restyle.marketplaces.catalog import CatalogMarketplace
from tests.conftest import EXAMPLES, SAMPLE_LISTINGS
from tests.fakes.components import ColorEncoder

PINK_BAG = EXAMPLES / "catalog" / "images" / "ls-bag-pink.jpg"


def one_listing_catalog(tmp_path: Path, encoder: OpenClipEncoder, brand: str) -> Path:
    """A catalog whose only listing is the pink bag, sold under ``brand``."""
    rows = [json.loads(line) for line in SAMPLE_LISTINGS.read_text().splitlines() if line]
    row = next(r for r in rows if r["id"] == "ls-bag-pink")
    row["brand"] = brand
    row["image"] = str(Path("images") / "ls-bag-pink.jpg")
    source = tmp_path / brand
    (source / "images").mkdir(parents=True)
    (source / "images" / "ls-bag-pink.jpg").write_bytes(PINK_BAG.read_bytes())
    (source / "listings.jsonl").write_text(json.dumps(row) + "\n")
    directory = tmp_path / f"{brand}-catalog"
    builder = Engine(encoder=encoder, catalog=directory, experts=[], marketplaces=[],
                     load_entrypoints=False)
    builder.build_catalog(source / "listings.jsonl", progress=False)
    return directory


def test_one_catalog_component_serves_two_engines_each_with_its_own_catalog(
    tiny_encoder: OpenClipEncoder, tmp_path: Path
) -> None:
    expert, market = CatalogExpert(), CatalogMarketplace()
    engines = {
        brand: Engine(encoder=tiny_encoder, experts=[expert], marketplaces=[market],
                      catalog=one_listing_catalog(tmp_path, tiny_encoder, brand),
                      load_entrypoints=False)
        for brand in ("Acme", "Globex")
    }
    results: dict[str, Any] = {}

    def run(brand: str) -> None:
        results[brand] = engines[brand].analyze(PINK_BAG)

    # Concurrently: each thread's calls must see its own Engine's catalog.
    threads = [threading.Thread(target=run, args=(b,)) for b in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for brand in engines:
        analysis = results[brand]
        assert analysis.identification.brand == brand
        assert [c.listing.brand for c in analysis.comps] == [brand]


def test_a_component_called_outside_an_engine_says_what_to_do(
    tiny_encoder: OpenClipEncoder,
) -> None:
    with pytest.raises(ConfigurationError, match="needs an Engine"):
        CatalogExpert().examine(load_photo(PINK_BAG))


def test_components_are_attached_with_the_context_not_the_engine() -> None:
    seen: list[object] = []

    class Recording(Expert):
        name = "recording"

        def attach(self, context: Context) -> None:
            seen.append(context)

        def examine(self, photo: Any) -> Opinion:
            left = self.context.time_left()
            assert left is not None and 0 < left <= 5.0
            seen.append(self.context)
            return Opinion(expert=self.name)

    expert = Recording()
    expert.timeout = 5.0
    engine = Engine(experts=[expert], encoder=ColorEncoder(), marketplaces=[],
                    load_entrypoints=False)
    assert seen == [engine.context] and not isinstance(seen[0], Engine)
    [opinion] = engine.examine(PINK_BAG)
    assert opinion.ok, opinion.error
    assert seen[1] is engine.context
    assert engine.context.encoder is engine.encoder
    assert engine.context.fetcher is engine.fetcher
    assert Context.time_left() is None  # not inside a component call


def test_components_get_a_read_only_view_of_the_catalog_not_the_catalog(
        tmp_path: Path) -> None:
    from restyle import Catalog, Query

    engine = Engine(encoder=ColorEncoder(), experts=[], marketplaces=[],
                    load_entrypoints=False, catalog=tmp_path / "catalog")
    engine.build_catalog(SAMPLE_LISTINGS, progress=False)
    view = engine.context.catalog
    assert not isinstance(view, Catalog)
    assert not hasattr(view, "build") and not hasattr(view, "remove")
    assert view.model_id == engine.encoder.model_id
    assert view.search_text(Query(text="jacket", limit=5))

"""The Engine's catalog: given as a folder or as an open Catalog, built from a file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from restyle import Catalog, ConfigurationError, Engine, RestyleError
from tests.conftest import SAMPLE_LISTINGS, SAMPLE_PHOTO
from tests.fakes.components import ColorEncoder


def test_an_engine_takes_the_open_catalog_that_engine_catalog_gives(
        catalog_copy: Path, tiny_encoder: object) -> None:
    folder_engine = Engine(encoder=tiny_encoder, catalog=catalog_copy, experts=["catalog"],
                           marketplaces=["catalog"], load_entrypoints=True)
    opened = folder_engine.catalog
    assert isinstance(opened, Catalog)
    shared = Engine(encoder=tiny_encoder, catalog=opened, experts=["catalog"],
                    marketplaces=["catalog"], load_entrypoints=True)
    assert shared.catalog is opened and shared.catalog_dir == catalog_copy
    assert shared.analyze(SAMPLE_PHOTO).comps
    opened.close()


def test_a_catalog_of_another_model_is_refused(catalog_copy: Path, tiny_encoder: object) -> None:
    opened = Engine(encoder=tiny_encoder, catalog=catalog_copy, experts=[], marketplaces=[],
                    load_entrypoints=False).catalog
    with pytest.raises(ConfigurationError, match="holds vectors of model"):
        Engine(encoder=ColorEncoder(), catalog=opened, experts=[], marketplaces=[],
               load_entrypoints=False)
    with pytest.raises(ConfigurationError, match=r"restyle\.Catalog or its directory"):
        Engine(catalog=42, load_entrypoints=False)  # type: ignore[arg-type]
    opened.close()


def test_build_catalog_takes_a_source_as_catalog_build_does(tmp_path: Path) -> None:
    engine = Engine(encoder=ColorEncoder(), catalog=tmp_path / "c", experts=[],
                    marketplaces=[], load_entrypoints=False)
    assert engine.build_catalog(source=SAMPLE_LISTINGS, progress=False).added == 12
    with pytest.warns(DeprecationWarning, match="listings is deprecated; use source"):
        report = engine.build_catalog(listings=SAMPLE_LISTINGS, progress=False)
    assert report.added == 0
    with pytest.raises(ConfigurationError, match="needs the listings file"):
        engine.build_catalog()
    engine.catalog.close()


def test_stats_count_sold_and_asking_listings(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in SAMPLE_LISTINGS.read_text().splitlines()]
    for row in rows[:3]:
        row["sold"] = True
    rows[3]["sold"] = False
    source = tmp_path / "listings.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    for image in (SAMPLE_LISTINGS.parent / "images").iterdir():
        (tmp_path / "images").mkdir(exist_ok=True)
        (tmp_path / "images" / image.name).write_bytes(image.read_bytes())
    engine = Engine(encoder=ColorEncoder(), catalog=tmp_path / "c", experts=[],
                    marketplaces=[], load_entrypoints=False)
    assert engine.build_catalog(source, progress=False).added == 12
    engine.catalog.close()
    stats = Catalog.stats(tmp_path / "c")
    assert (stats.rows, stats.sold, stats.asking) == (12, 3, 9)
    assert stats.to_dict()["sold"] == 3


def test_a_build_shows_its_total_and_a_ray_cluster_out_of_reach_leaves_no_catalog(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from restyle import RayExecutor

    engine = Engine(encoder=ColorEncoder(), catalog=tmp_path / "c", experts=[],
                    marketplaces=[], load_entrypoints=False)
    assert engine.build_catalog(SAMPLE_LISTINGS, progress=True, checkpoint_every=5).added == 12
    assert "/12 " in capsys.readouterr().err  # the bar knew the file's rows
    engine.catalog.close()
    with pytest.raises(ConfigurationError, match="checkpoint_every"):
        engine.build_catalog(SAMPLE_LISTINGS, checkpoint_every=0)

    elsewhere = Engine(encoder=ColorEncoder(), catalog=tmp_path / "none", experts=[],
                       marketplaces=[], load_entrypoints=False)
    with pytest.raises(RestyleError):
        elsewhere.build_catalog(SAMPLE_LISTINGS, executor=RayExecutor(address="127.0.0.1:1"))
    assert not (tmp_path / "none").exists()


def test_an_engine_chooses_its_models_precision(tiny_model_spec: str) -> None:
    engine = Engine(model=tiny_model_spec, precision="int8", experts=[], marketplaces=[],
                    load_entrypoints=False)
    assert engine.encoder.precision == "int8"  # type: ignore[attr-defined]
    assert engine.encoder.model_id.startswith("int8:")
    with pytest.raises(ConfigurationError, match="precision"):
        Engine(precision="int4", experts=[], marketplaces=[], load_entrypoints=False)
    with pytest.raises(ConfigurationError, match="precision= chooses"):
        Engine(encoder=ColorEncoder(), precision="int8", load_entrypoints=False)


def test_a_build_without_a_bar_does_not_count_the_files_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from restyle._store import catalog as catalog_module

    counted: list[object] = []
    monkeypatch.setattr(catalog_module, "count_rows", lambda source: counted.append(source))
    engine = Engine(encoder=ColorEncoder(), catalog=tmp_path / "c", experts=[],
                    marketplaces=[], load_entrypoints=False)
    assert engine.build_catalog(SAMPLE_LISTINGS, progress=False).added == 12
    assert counted == []
    engine.build_catalog(SAMPLE_LISTINGS, progress=True)
    assert len(counted) == 1
    engine.catalog.close()

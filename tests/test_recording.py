"""Recorded analyses: written by analyze(record=), read back as fixtures, replayed offline."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from restyle import (
    ConfigurationError,
    Engine,
    Identification,
    Listing,
    Money,
    Opinion,
    Photo,
    Reranker,
    RestyleError,
    Synthesizer,
    load_photo,
)
from restyle._secrets import Secret
from restyle.cli import main
from restyle.testing import ColorEncoder, ListMarketplace, ScriptedExpert, load_recording
from tests.conftest import EXAMPLES

SNEAKER = EXAMPLES / "catalog" / "images" / "ks-sneaker-green.jpg"


def catalog_engine(encoder: object, catalog: Path, **options: object) -> Engine:
    return Engine(encoder=encoder, catalog=catalog, load_entrypoints=False,  # type: ignore[arg-type]
                  reranker=Reranker(cache=None), **options)  # type: ignore[arg-type]


@pytest.fixture
def recorded(tiny_encoder: object, catalog_copy: Path, tmp_path: Path) -> Path:
    directory = tmp_path / "run"
    catalog_engine(tiny_encoder, catalog_copy).analyze(SNEAKER, record=directory)
    return directory


def test_a_recording_holds_what_each_stage_returned(recorded: Path) -> None:
    names = sorted(p.name for p in recorded.iterdir())
    assert names == ["analysis.json", "photo.jpg", "recording.json", "vectors.npy"]
    assert (recorded / "photo.jpg").read_bytes() == SNEAKER.read_bytes()
    manifest = json.loads((recorded / "recording.json").read_text())
    assert manifest["format"] == 1
    assert manifest["engine"]["experts"] == ["clip", "catalog"]
    assert manifest["engine"]["minimum_price_comps"] == 3
    assert manifest["engine"]["price_half_life_days"] == 30.0
    assert {f["step"] for f in manifest["found"]} <= {"full", "no-attributes", "brand-category",
                                                       "category", "any"}
    vectors = np.load(recorded / "vectors.npy")
    recording = load_recording(recorded)
    analysis = recording.analysis
    assert vectors.shape == (1 + len(recording.vectors), recording.encoder.dim)
    assert [o.expert for o in analysis.opinions] == ["clip", "catalog"]
    assert analysis.comps[0].listing.listing_id == "ks-sneaker-green"
    for comp in analysis.comps:
        vector = recording.vectors[comp.listing.key]
        assert float(vector @ recording.photo_vector) == pytest.approx(comp.similarity, abs=1e-6)
    assert len(recording.found) == len(analysis.comps)
    assert repr(recording).startswith("<Recording")


def test_a_replay_without_changes_reproduces_the_recording(recorded: Path) -> None:
    replay = load_recording(recorded).replay()
    assert replay.same and replay.differences == ()
    assert replay.after.price == replay.before.price
    assert replay.after.comps == replay.before.comps
    assert replay.after == replay.before


def test_a_replay_with_another_rule_reports_the_difference(recorded: Path) -> None:
    recording = load_recording(recorded)
    assert recording.analysis.price.ok
    replay = recording.replay(minimum_comps=50)
    assert not replay.same and replay.changes == {"minimum_comps": 50}
    changed = {d.what: (d.before, d.after) for d in replay.differences}
    assert changed["price.status"] == ("ok", "not_enough_data")
    assert changed["price.minimum_comps"] == ("3", "50")
    assert changed["price.estimate"][1] == ""
    assert not [d for d in replay.differences if not d.what.startswith("price.")]
    assert replay.after.price.estimate is None
    assert json.loads(json.dumps(replay.to_dict()))["changes"] == {"minimum_comps": 50}


def test_a_replay_with_another_synthesizer_changes_the_identification(recorded: Path) -> None:
    class Contrarian(Synthesizer):
        name = "contrarian"

        def synthesize(self, opinions: Sequence[Opinion], *, photo: Photo) -> Identification:
            assert [o.expert for o in opinions] == ["clip", "catalog"]
            return Identification(brand="Northwind", category="mug", confidence=0.3,
                                  synthesizer=self.name)

    replay = load_recording(recorded).replay(synthesizer=Contrarian())
    changed = {d.what: (d.before, d.after) for d in replay.differences}
    assert changed["identification.brand"] == ("Kestrel", "Northwind")
    assert changed["identification.synthesizer"] == ("consensus", "contrarian")
    assert "query.text" in changed and "Northwind" in changed["query.text"][1]
    # Nothing is searched again offline: the comps are the recorded ones.
    assert {c.listing.key for c in replay.after.comps} == {
        c.listing.key for c in replay.before.comps}
    by_name = load_recording(recorded).replay(synthesizer="consensus", load_entrypoints=False)
    assert by_name.same


def test_no_cutoff_is_a_replayable_rule(recorded: Path) -> None:
    replay = load_recording(recorded).replay(cutoff=False)
    assert replay.changes == {"cutoff": False}
    assert all("below_cutoff" not in c.flags for c in replay.after.comps)
    flagged = [c for c in replay.before.comps if "below_cutoff" in c.flags]
    assert bool(flagged) == any(d.what.endswith(" flags") for d in replay.differences)


def test_the_recordings_components_build_an_offline_engine(recorded: Path) -> None:
    recording = load_recording(recorded)
    engine = recording.engine()
    assert [e.name for e in engine.experts] == ["clip", "catalog"]
    again = engine.analyze(recording.photo)
    before = recording.analysis
    assert again.identification == before.identification
    assert [o.labels + o.entities for o in again.opinions] == [
        o.labels + o.entities for o in before.opinions]
    assert [(c.listing, c.score, c.flags, c.query_step) for c in again.comps] == [
        (c.listing, c.score, c.flags, c.query_step) for c in before.comps]
    assert again.price == before.price
    with pytest.raises(RestyleError, match="only its own photo"):
        recording.encoder.encode_images([Image.new("RGB", (8, 8))])


def test_recordings_hold_no_secret(tmp_path: Path) -> None:
    secret = Secret("sentinel-recorded-s3cret-value")
    listings = [Listing(marketplace="shop", listing_id=f"s{i}",
                        title=f"jacket {secret.reveal()} no. {i}",
                        price=Money(amount=Decimal("20") + i, currency="USD")) for i in range(4)]
    vectors = {x.key: ColorEncoder().encode_images([Image.new("RGB", (8, 8), (200, 30, 30))])[0]
               for x in listings}
    failing = ScriptedExpert("leaky", error=RuntimeError(f"denied for {secret.reveal()}"))
    engine = Engine(experts=[failing], marketplaces=[ListMarketplace("shop", listings,
                                                                     embeddings=vectors)],
                    encoder=ColorEncoder(), load_entrypoints=False, reranker=Reranker(cache=None))
    photo = load_photo(Image.new("RGB", (32, 32), (200, 30, 30)))  # a PIL image: kept as PNG
    analysis = engine.analyze(photo, record=tmp_path / "run")
    assert secret.reveal() in analysis.comps[0].listing.title  # the Analysis itself is the caller's
    files = sorted((tmp_path / "run").iterdir())
    assert [f.name for f in files] == ["analysis.json", "photo.png", "recording.json",
                                       "vectors.npy"]
    for path in files:
        assert secret.reveal().encode() not in path.read_bytes(), path.name
    recording = load_recording(tmp_path / "run")
    assert "<redacted>" in recording.analysis.comps[0].listing.title
    assert recording.replay().after.price == recording.analysis.price


def test_unreadable_recordings_are_clear_errors(recorded: Path, tmp_path: Path) -> None:
    with pytest.raises(RestyleError, match="no recording"):
        load_recording(tmp_path / "nothing")
    (recorded / "vectors.npy").write_bytes(b"not numpy")
    with pytest.raises(RestyleError, match=r"'vectors\.npy' of the recording in .* is not a "
                       r"\.npy file"):
        load_recording(recorded)
    file = tmp_path / "a-file"
    file.write_text("x")
    engine = Engine(experts=[], marketplaces=[], encoder=ColorEncoder(), load_entrypoints=False)
    with pytest.raises(RestyleError, match="it is a file"):
        engine.analyze(Image.new("RGB", (8, 8)), record=file)
    with pytest.raises(RestyleError, match="cannot record into"):
        engine.analyze(Image.new("RGB", (8, 8)), record=file / "below-a-file")


# -- the command line ------------------------------------------------------------------


@pytest.fixture
def tiny_env(monkeypatch: pytest.MonkeyPatch, tiny_model_spec: str) -> None:
    monkeypatch.setenv("RESTYLE_MODEL", tiny_model_spec)


def test_analyze_record_then_replay_on_the_command_line(
    tiny_env: None, catalog_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main(["analyze", str(SNEAKER), "--catalog", str(catalog_copy), "--no-plugins",
                 "--record", str(run)]) == 0
    out = capsys.readouterr().out
    assert f"recorded in {run}" in out
    assert main(["replay", str(run), "--no-plugins"]) == 0
    out = capsys.readouterr().out
    assert "no differences" in out
    assert main(["replay", str(run), "--minimum-comps", "50", "--no-plugins"]) == 0
    out = capsys.readouterr().out
    assert "minimum_comps=50" in out
    assert "price.status" in out and "not_enough_data" in out
    assert main(["replay", str(run), "--half-life", "7", "--no-cutoff", "--json",
                 "--no-plugins"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["changes"] == {"cutoff": False, "half_life_days": 7.0}
    assert data["after"]["price"]["half_life_days"] == 7.0
    assert main(["replay", str(tmp_path / "none"), "--no-plugins"]) == 1
    assert "no recording" in capsys.readouterr().err


def test_replayed_price_keeps_the_recorded_moment(recorded: Path) -> None:
    recording = load_recording(recorded)
    replay = recording.replay(half_life_days=1.0)
    # No comp of the sample catalog has a sale date: the half-life changes nothing but itself.
    assert [d.what for d in replay.differences] == ["price.half_life_days"]
    assert replace(replay.after.price, half_life_days=30.0) == recording.analysis.price


def test_bad_replay_rules_are_configuration_errors(recorded: Path) -> None:
    recording = load_recording(recorded)
    with pytest.raises(ConfigurationError, match="minimum_comps"):
        recording.replay(minimum_comps=0)
    with pytest.raises(ConfigurationError, match="half_life_days"):
        recording.replay(half_life_days=-1.0)

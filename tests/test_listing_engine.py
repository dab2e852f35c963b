"""Engine.draft: eBay's taxonomy when the keys are set (kept across drafts),
offline otherwise, the marketplace's currency, and a description written by
the Engine's synthesizer when it can write one."""

from __future__ import annotations

from typing import Any

import pytest

from restyle import ConfigurationError, Engine
from restyle.synthesizers.consensus import ConsensusSynthesizer
from tests.fakes.components import ColorEncoder
from tests.fakes.ebay_taxonomy import TREE_PATH, FakeEbaySeller
from tests.listing_samples import analysis


class WritingSynthesizer(ConsensusSynthesizer):
    name = "writing"

    def write_description(self, facts: Any) -> dict[str, Any]:
        return {"paragraphs": [f"A {facts['title']}. Genuine piece."]}


def engine(**kwargs: Any) -> Engine:
    return Engine(experts=[], encoder=ColorEncoder(), marketplaces=[], load_entrypoints=False,
                  **kwargs)


@pytest.fixture
def no_ebay(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("EBAY_CLIENT_ID", "EBAY_CLIENT_SECRET", "EBAY_BASE_URL", "EBAY_MARKETPLACE_ID"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_ebay")
def test_without_ebay_keys_the_draft_is_made_offline_for_the_marketplace_s_currency():
    draft = engine().draft(analysis(), price="quick")
    assert draft.category.category_id is None and draft.price.amount is not None
    assert any("offline" in p for p in draft.problems)
    british = engine().draft(analysis(), marketplace_id="EBAY_GB")
    assert british.price.amount is None and british.marketplace_id == "EBAY_GB"
    with pytest.raises(ConfigurationError, match="unknown eBay marketplace id"):
        engine().draft(analysis(), marketplace_id="EBAY_XX")


def test_with_ebay_keys_the_engine_asks_ebay_and_keeps_its_answers(
        monkeypatch: pytest.MonkeyPatch, no_ebay: None) -> None:
    with FakeEbaySeller() as fake:
        monkeypatch.setenv("EBAY_CLIENT_ID", fake.client_id)
        monkeypatch.setenv("EBAY_CLIENT_SECRET", fake.client_secret)
        monkeypatch.setenv("EBAY_BASE_URL", fake.base_url)
        one = engine()
        first, second = one.draft(analysis()), one.draft(analysis(), price="patient")
        offline = one.draft(analysis(), offline=True)
        assert len(fake.calls(TREE_PATH)) == 1
    assert first.category.category_id == second.category.category_id == "57988"
    assert offline.category.category_id is None
    assert fake.client_secret not in repr(first) and fake.client_secret not in first.to_json()


@pytest.mark.usefixtures("no_ebay")
def test_write_uses_the_synthesizer_s_writer_and_checks_it():
    written = engine(synthesizer=WritingSynthesizer()).draft(analysis(), write=True)
    assert written.description_source == "written"
    assert "Trucker Jacket" in written.description and "Genuine" not in written.description
    assert any("claim 'genuine'" in r for r in written.removed)
    plain = engine().draft(analysis(), write=True)
    assert plain.description_source == "template"
    assert any("consensus synthesizer writes no descriptions" in p for p in plain.problems)

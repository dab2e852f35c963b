"""Plugin discovery and registration: entry points, in-process plugins and failures."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

import restyle
from restyle import (
    ConfigurationError,
    DuplicateComponentError,
    Engine,
    PluginError,
    PluginLoadWarning,
)
from restyle._plugins import DEFAULT_PLUGINS
from tests.conftest import SAMPLE_PHOTO
from tests.fakes.components import ColorEncoder, ListMarketplace, ScriptedExpert


def fake_engine(**kwargs: object) -> Engine:
    defaults: dict[str, object] = {"encoder": ColorEncoder(), "marketplaces": [], "experts": []}
    defaults.update(kwargs)
    return Engine(**defaults)  # type: ignore[arg-type]


def test_third_party_distribution_is_discovered_and_used(
    install_plugin: Callable[[str], None],
) -> None:
    install_plugin("restyle-hello")
    engine = fake_engine(experts=["hello"], marketplaces=["hello-market"])
    registration = engine.registry.get("expert", "hello")
    assert registration is not None
    assert registration.distribution == "restyle-hello"
    analysis = engine.analyze(SAMPLE_PHOTO)
    assert analysis.identification.brand == "Hello Brand"
    assert {c.listing.marketplace for c in analysis.comps} == {"hello-market"}
    assert analysis.comps[0].listing.title.startswith("Hello Brand")


def test_failing_plugin_warns_by_name_and_the_others_load(
    install_plugin: Callable[[str], None],
) -> None:
    install_plugin("restyle-broken")
    install_plugin("restyle-hello")
    with pytest.warns(PluginLoadWarning, match="restyle-broken") as record:
        engine = fake_engine(experts=["hello"])
    assert "restyle_missing_dependency" in str(record[0].message)
    assert engine.registry.get("expert", "hello") is not None
    [error] = engine.plugin_errors
    assert error.distribution == "restyle-broken"
    assert isinstance(error.__cause__, ModuleNotFoundError)


def test_failing_plugin_is_an_error_when_asked_for(
    install_plugin: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin("restyle-broken")
    with pytest.raises(PluginError, match="restyle-broken"):
        fake_engine(strict_plugins=True)
    monkeypatch.setenv("RESTYLE_LOAD_PLUGINS", "restyle-broken")
    with pytest.raises(PluginError, match="restyle_missing_dependency"):
        fake_engine()


def test_missing_component_names_the_plugins_that_failed(
    install_plugin: Callable[[str], None],
) -> None:
    install_plugin("restyle-broken")
    with pytest.warns(PluginLoadWarning), pytest.raises(ConfigurationError) as info:
        fake_engine(experts=["acme"])
    assert "no expert named 'acme'" in str(info.value)
    assert "restyle-broken" in str(info.value)


def test_load_plugins_env_selects_distributions(
    install_plugin: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin("restyle-broken")
    install_plugin("restyle-hello")
    monkeypatch.setenv("RESTYLE_LOAD_PLUGINS", "restyle-hello")
    engine = fake_engine()
    assert engine.registry.get("expert", "hello") is not None
    assert engine.plugin_errors == []
    monkeypatch.setenv("RESTYLE_LOAD_PLUGINS", "")
    engine = fake_engine()
    assert engine.registry.get("expert", "hello") is None
    assert engine.registry.get("expert", "clip") is not None  # built-ins always load


def test_load_entrypoints_false_ignores_installed_plugins(
    install_plugin: Callable[[str], None],
) -> None:
    install_plugin("restyle-broken")
    install_plugin("restyle-hello")
    engine = fake_engine(load_entrypoints=False)
    assert engine.registry.get("expert", "hello") is None
    assert engine.plugin_errors == []


class TwoExperts:
    """An in-process plugin object providing two experts."""

    def __init__(self, *names: str) -> None:
        self.names = names

    @restyle.hookimpl
    def register_experts(self, register: Callable[[object], None]) -> None:
        for name in self.names:
            register(ScriptedExpert(name, entities=[("Acme", 0.9, "brand")]))


def test_in_process_plugins_register_many_components() -> None:
    engine = fake_engine(plugins=[TwoExperts("a", "b")], experts=["a", "b"],
                         load_entrypoints=False)
    assert [e.name for e in engine.experts] == ["a", "b"]
    assert engine.registry.get("expert", "a").distribution == "<in-process>"  # type: ignore[union-attr]


def test_duplicate_names_name_both_providers() -> None:
    with pytest.raises(DuplicateComponentError) as info:
        fake_engine(plugins=[TwoExperts("clip")], load_entrypoints=False)
    message = str(info.value)
    assert "'clip'" in message
    assert "restyle.experts.clip" in message and "<in-process>" in message


def test_registering_the_wrong_kind_is_a_plugin_error() -> None:
    class Wrong:
        @restyle.hookimpl
        def register_experts(self, register: Callable[[object], None]) -> None:
            register(ListMarketplace("m", []))

    with pytest.raises(PluginError, match=r"not a restyle\.Expert"):
        fake_engine(plugins=[Wrong()], load_entrypoints=False)


def test_bad_component_name_is_a_plugin_error() -> None:
    with pytest.raises(PluginError, match="lower-case identifier"):
        fake_engine(plugins=[TwoExperts("Bad Name")], load_entrypoints=False)


def test_misspelled_hook_is_caught() -> None:
    class Typo:
        @restyle.hookimpl
        def register_expert(self, register: Callable[[object], None]) -> None:
            raise AssertionError("never called")

    with pytest.raises(PluginError, match="register_expert"):
        fake_engine(plugins=[Typo()], load_entrypoints=False)


def test_plugin_raising_in_its_hook_is_reported() -> None:
    class Raises:
        @restyle.hookimpl
        def register_experts(self, register: Callable[[object], None]) -> None:
            raise RuntimeError("no licence")

    with pytest.raises(PluginError, match="no licence"):
        fake_engine(plugins=[Raises()], load_entrypoints=False, strict_plugins=True)
    with pytest.warns(PluginLoadWarning, match="no licence"):
        engine = fake_engine(plugins=[Raises()], load_entrypoints=False)
    assert len(engine.plugin_errors) == 1


def test_engines_do_not_share_plugins_or_components() -> None:
    first = fake_engine(plugins=[TwoExperts("only-here")], load_entrypoints=False)
    second = fake_engine(load_entrypoints=False)
    assert first.registry.get("expert", "only-here") is not None
    assert second.registry.get("expert", "only-here") is None
    assert first.registry.pm is not second.registry.pm
    clip_a = first.registry.get("expert", "clip")
    clip_b = second.registry.get("expert", "clip")
    assert clip_a is not None and clip_b is not None
    assert clip_a.component is not clip_b.component


def test_builtins_are_ordinary_plugins() -> None:
    engine = fake_engine(load_entrypoints=False)
    for module in DEFAULT_PLUGINS:
        assert engine.registry.pm.has_plugin(module)
    names: Sequence[tuple[str, str]] = [(r.kind, r.name) for r in engine.registry]
    assert ("encoder", "openclip") in names and ("synthesizer", "consensus") in names


def test_instances_and_names_can_be_mixed() -> None:
    expert = ScriptedExpert("mine")
    engine = fake_engine(experts=[expert, "clip"], load_entrypoints=False)
    assert engine.experts[0] is expert
    with pytest.raises(ConfigurationError, match="selected more than once"):
        fake_engine(experts=["clip", "clip"], load_entrypoints=False)
    with pytest.raises(ConfigurationError, match="is not an expert"):
        fake_engine(experts=[ListMarketplace("m", [])], load_entrypoints=False)


class HookPlugin:
    """One in-process plugin implementing every hook."""

    @restyle.hookimpl
    def register_experts(self, register: Callable[[object], None]) -> None:
        register(ScriptedExpert("hooked-expert", entities=[("Hooked", 0.9, "brand")]))

    @restyle.hookimpl
    def register_synthesizers(self, register: Callable[[object], None]) -> None:
        class Upper(restyle.Synthesizer):
            name = "upper"

            def synthesize(self, opinions, *, photo):  # type: ignore[no-untyped-def]
                brands = [o.text for op in opinions for o in op.entities if o.facet == "brand"]
                return restyle.Identification(brand=brands[0].upper(), synthesizer=self.name)

        register(Upper())

    @restyle.hookimpl
    def register_marketplaces(self, register: Callable[[object], None]) -> None:
        register(ListMarketplace("hooked-market", [
            restyle.Listing(marketplace="hooked-market", listing_id="1", title="hooked")
        ]))

    @restyle.hookimpl
    def register_encoders(self, register: Callable[[object], None]) -> None:
        encoder = ColorEncoder()
        encoder.name = "hooked-encoder"
        register(encoder)


def hooked_engine(**kwargs: object) -> Engine:
    options: dict[str, object] = {"plugins": [HookPlugin()], "load_entrypoints": False,
                                  "experts": [], "marketplaces": [],
                                  "encoder": "hooked-encoder"}
    options.update(kwargs)
    return Engine(**options)  # type: ignore[arg-type]


def test_hook_register_experts() -> None:
    engine = hooked_engine(experts=["hooked-expert"])
    [opinion] = engine.examine(SAMPLE_PHOTO)
    assert opinion.expert == "hooked-expert" and opinion.entities[0].text == "Hooked"


def test_hook_register_synthesizers() -> None:
    engine = hooked_engine(experts=["hooked-expert"], synthesizer="upper")
    assert engine.identify(SAMPLE_PHOTO).brand == "HOOKED"


def test_hook_register_marketplaces() -> None:
    engine = hooked_engine(marketplaces=["hooked-market"])
    analysis = engine.analyze(SAMPLE_PHOTO)
    assert [c.listing.key for c in analysis.comps] == ["hooked-market:1"]


def test_hook_register_encoders() -> None:
    engine = hooked_engine()
    assert isinstance(engine.encoder, ColorEncoder) and engine.encoder.name == "hooked-encoder"
    assert engine.analyze(SAMPLE_PHOTO).model_id == "color-histogram-4"

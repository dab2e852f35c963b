"""Plugin discovery and registration: entry points, in-process plugins and failures."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import pytest

import restyle
from restyle import (
    ConfigurationError,
    DuplicateComponentError,
    Engine,
    PluginError,
    PluginLoadWarning,
)
from restyle._plugin.registry import DEFAULT_PLUGINS
from restyle.cli import main
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
    expected = ("2 plugins register an expert named 'clip': built-in plugin "
                "'restyle.experts.clip' and in-process plugin 'tests.test_plugins.TwoExperts'; "
                "expert 'clip' cannot be selected until only one remains: uninstall the other, "
                "or leave it out of RESTYLE_LOAD_PLUGINS")
    with pytest.warns(PluginLoadWarning) as record:
        engine = fake_engine(plugins=[TwoExperts("clip", "other")], load_entrypoints=False)
    assert [str(w.message) for w in record] == [expected]
    assert engine.registry.get("expert", "clip") is None
    assert engine.registry.get("expert", "other") is not None  # the rest is unaffected
    assert isinstance(engine.plugin_errors[0], DuplicateComponentError)
    with pytest.warns(PluginLoadWarning), pytest.raises(DuplicateComponentError) as info:
        fake_engine(plugins=[TwoExperts("clip")], experts=["clip"], load_entrypoints=False)
    assert str(info.value) == expected
    with pytest.raises(DuplicateComponentError, match="'clip'"):
        fake_engine(plugins=[TwoExperts("clip")], load_entrypoints=False, strict_plugins=True)


def test_registering_the_wrong_kind_is_refused() -> None:
    class Wrong:
        @restyle.hookimpl
        def register_experts(self, register: Callable[[object], None]) -> None:
            register(ListMarketplace("m", []))
            register(ScriptedExpert("right"))

    with pytest.warns(PluginLoadWarning) as record:
        engine = fake_engine(plugins=[Wrong()], load_entrypoints=False)
    assert str(record[0].message) == (
        "in-process plugin 'tests.test_plugins.test_registering_the_wrong_kind_is_refused."
        "<locals>.Wrong': register_experts registered something that is not a usable expert: "
        "<ListMarketplace marketplace 'm'> is a marketplace, not an expert"
    )
    assert engine.registry.get("expert", "right") is not None
    assert engine.registry.get("marketplace", "m") is None
    with pytest.raises(PluginError, match="is a marketplace, not an expert"):
        fake_engine(plugins=[Wrong()], load_entrypoints=False, strict_plugins=True)


def test_bad_component_name_is_refused() -> None:
    with pytest.warns(PluginLoadWarning, match="lower-case identifier"):
        engine = fake_engine(plugins=[TwoExperts("Bad Name", "good")], load_entrypoints=False)
    assert engine.registry.names("expert") == ["aws-rekognition", "catalog", "clip", "good",
                                               "google-vision"]
    with pytest.raises(PluginError, match="lower-case identifier"):
        fake_engine(plugins=[TwoExperts("Bad Name")], load_entrypoints=False,
                    strict_plugins=True)


def test_misspelled_hook_is_caught() -> None:
    class Typo:
        @restyle.hookimpl
        def register_expert(self, register: Callable[[object], None]) -> None:
            raise AssertionError("never called")

        @restyle.hookimpl
        def register_marketplaces(self, register: Callable[[object], None]) -> None:
            register(ListMarketplace("typo-market", []))

    with pytest.warns(PluginLoadWarning) as record:
        engine = fake_engine(plugins=[Typo()], load_entrypoints=False)
    assert str(record[0].message) == (
        "in-process plugin 'tests.test_plugins.test_misspelled_hook_is_caught.<locals>.Typo': "
        "register_expert is marked @restyle.hookimpl but restyle has no hook named "
        "'register_expert'; did you mean register_experts?"
    )
    assert engine.registry.get("marketplace", "typo-market") is not None
    with pytest.raises(PluginError, match="register_expert"):
        fake_engine(plugins=[Typo()], load_entrypoints=False, strict_plugins=True)


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


# -- registration a plugin author can trust ------------------------------------------------


@contextmanager
def no_warnings() -> Iterator[None]:
    """A block in which any warning (pluggy's included) fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def test_plugin_passed_in_code_and_installed_is_one_plugin(
    install_plugin: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin("restyle-hello")
    import restyle_hello.plugin as hello_plugin

    for env in (None, "", "restyle-hello"):
        if env is None:
            monkeypatch.delenv("RESTYLE_LOAD_PLUGINS", raising=False)
        else:
            monkeypatch.setenv("RESTYLE_LOAD_PLUGINS", env)
        with no_warnings():
            engine = fake_engine(plugins=[hello_plugin, hello_plugin], experts=["hello"])
        assert [r.name for r in engine.registry if r.kind == "expert"].count("hello") == 1
        registration = engine.registry.get("expert", "hello")
        assert registration is not None
        assert (registration.plugin, registration.distribution) == ("hello", "restyle-hello")
        assert engine.plugin_errors == []
    with no_warnings():
        engine = fake_engine(plugins=[hello_plugin], load_entrypoints=False)
    registration = engine.registry.get("expert", "hello")
    assert registration is not None and registration.distribution == "restyle-hello"
    # A built-in module passed again is the built-in plugin, registered once.
    import restyle.experts.clip

    fake_engine(plugins=[restyle.experts.clip], experts=["clip"], load_entrypoints=False)


BAD_NAME = (
    "plugin 'bad-name' from restyle-bad-name 0.1.0: register_experts registered something "
    "that is not a usable expert: BadNameExpert.name must be a lower-case identifier such as "
    "'google-vision', got 'Bad Name'"
)
CLASS_NOT_INSTANCE = (
    "plugin 'class-not-instance' from restyle-class-not-instance 0.1.0: register_marketplaces "
    "registered something that is not a usable marketplace: ClassMarket is a class, not a "
    "marketplace: pass an instance, ClassMarket()"
)


def test_installed_plugin_with_a_bad_name_warns_and_its_good_components_load(
    install_plugin: Callable[[str], None],
) -> None:
    install_plugin("restyle-bad-name")
    install_plugin("restyle-hello")
    with pytest.warns(PluginLoadWarning) as record:
        engine = fake_engine(experts=["fine-eye", "hello"])
    assert [str(w.message) for w in record] == [BAD_NAME]
    assert record[0].filename == __file__  # points at the code that built the Engine
    assert [opinion.expert for opinion in engine.examine(SAMPLE_PHOTO)] == ["fine-eye", "hello"]
    [error] = engine.plugin_errors
    assert (error.plugin, error.distribution) == ("bad-name", "restyle-bad-name")


def test_installed_plugin_registering_a_class_warns_and_its_good_components_load(
    install_plugin: Callable[[str], None],
) -> None:
    install_plugin("restyle-class-not-instance")
    with pytest.warns(PluginLoadWarning) as record:
        engine = fake_engine(marketplaces=["instance-market"])
    assert [str(w.message) for w in record] == [CLASS_NOT_INSTANCE]
    assert engine.registry.get("marketplace", "class-market") is None
    assert [m.name for m in engine.marketplaces] == ["instance-market"]


@pytest.mark.parametrize(("project", "message"), [("restyle-bad-name", BAD_NAME),
                                                  ("restyle-class-not-instance",
                                                   CLASS_NOT_INSTANCE)])
def test_a_plugin_problem_is_an_error_when_strict_or_named(
    install_plugin: Callable[[str], None], monkeypatch: pytest.MonkeyPatch, project: str,
    message: str,
) -> None:
    install_plugin(project)
    install_plugin("restyle-hello")
    with pytest.raises(PluginError) as info:
        fake_engine(strict_plugins=True)
    assert str(info.value) == message
    monkeypatch.setenv("RESTYLE_LOAD_PLUGINS", f"{project},restyle-hello")
    with pytest.raises(PluginError) as info:
        fake_engine()
    assert str(info.value) == message
    monkeypatch.setenv("RESTYLE_LOAD_PLUGINS", "restyle-hello")  # not named: not loaded
    with no_warnings():
        assert fake_engine(experts=["hello"]).plugin_errors == []


def test_unmarked_hook_functions_are_reported(install_plugin: Callable[[str], None]) -> None:
    install_plugin("restyle-unmarked")
    with pytest.warns(PluginLoadWarning) as record:
        engine = fake_engine(marketplaces=["marked-market"])
    assert sorted(str(w.message) for w in record) == [
        "plugin 'unmarked' from restyle-unmarked 0.1.0: register_experts looks like a restyle "
        "hook but is not marked with @restyle.hookimpl, so restyle never calls it; decorate it "
        "with @restyle.hookimpl",
        "plugin 'unmarked' from restyle-unmarked 0.1.0: register_synthesizer looks like the "
        "restyle hook register_synthesizers but is not marked with @restyle.hookimpl, so "
        "restyle never calls it; decorate it with @restyle.hookimpl",
    ]
    assert engine.registry.get("expert", "unmarked-eye") is None
    assert engine.registry.plugin("unmarked").hooks == ["register_marketplaces"]  # type: ignore[union-attr]


def test_entry_point_name_clash_names_both_distributions(
    install_plugin: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin("restyle-hello")
    install_plugin("restyle-hello-again")
    with pytest.warns(PluginLoadWarning) as record:
        engine = fake_engine(experts=["hello", "hello-again"])
    assert [str(w.message) for w in record] == [
        "2 distributions declare the restyle entry point 'hello': restyle-hello 0.1.0 "
        "(restyle_hello.plugin) and restyle-hello-again 0.2.0 (restyle_hello_again.plugin); "
        "all of them are loaded. Uninstall the one you do not want, or choose by distribution "
        "name in RESTYLE_LOAD_PLUGINS"
    ]
    again = engine.registry.get("expert", "hello-again")
    assert again is not None and again.distribution == "restyle-hello-again"
    monkeypatch.setenv("RESTYLE_LOAD_PLUGINS", "restyle-hello-again")
    with no_warnings():
        engine = fake_engine(experts=["hello-again"])
    assert engine.registry.get("expert", "hello") is None


def test_load_plugins_env_typo_says_did_you_mean(
    install_plugin: Callable[[str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    install_plugin("restyle-hello")
    monkeypatch.setenv("RESTYLE_LOAD_PLUGINS", "restyle-helo")
    warning = ("RESTYLE_LOAD_PLUGINS names 'restyle-helo', which is not an installed restyle "
               "plugin; did you mean 'restyle-hello'? (installed plugins: hello (restyle-hello))")
    with pytest.warns(PluginLoadWarning) as record:
        engine = fake_engine()
    assert [str(w.message) for w in record] == [warning]
    assert engine.registry.get("expert", "hello") is None
    with pytest.warns(PluginLoadWarning), pytest.raises(ConfigurationError) as info:
        fake_engine(experts=["hello"])
    assert str(info.value) == (
        "no expert named 'hello' is registered (available: aws-rekognition, catalog, clip, "
        "google-vision); RESTYLE_LOAD_PLUGINS='restyle-helo' is set, so only the installed "
        f"plugins it names are loaded. Plugin problems: {warning}"
    )
    with pytest.raises(PluginError, match="did you mean 'restyle-hello'"):
        fake_engine(strict_plugins=True)


def test_register_called_with_wrong_arguments_is_reported() -> None:
    class Sloppy:
        @restyle.hookimpl
        def register_experts(self, register: Callable[..., None]) -> None:
            register()
            register(ScriptedExpert("one"), ScriptedExpert("two"))
            register(expert=ScriptedExpert("three"))
            register(ScriptedExpert("kept"))

    with pytest.warns(PluginLoadWarning) as record:
        engine = fake_engine(plugins=[Sloppy()], load_entrypoints=False)
    label = ("in-process plugin 'tests.test_plugins."
             "test_register_called_with_wrong_arguments_is_reported.<locals>.Sloppy'")
    assert [str(w.message) for w in record] == [
        f"{label}: register_experts called register(); call it with one restyle.Expert "
        "instance, register(expert)",
        f"{label}: register_experts called register(<ScriptedExpert expert 'one'>, "
        "<ScriptedExpert expert 'two'>); call it with one restyle.Expert instance, "
        "register(expert)",
        f"{label}: register_experts called register(expert=<ScriptedExpert expert 'three'>); "
        "call it with one restyle.Expert instance, register(expert)",
    ]
    assert engine.registry.names("expert").count("kept") == 1


def test_hook_mistakes_in_its_definition_are_reported() -> None:
    class Returns:
        @restyle.hookimpl
        def register_experts(self, register: Callable[[object], None]) -> object:
            return [ScriptedExpert("lost")]

        @restyle.hookimpl
        def register_marketplaces(self) -> None:
            raise AssertionError("never called")

        @restyle.hookimpl
        def register_encoders(self, register: Callable[[object], None], config: object) -> None:
            raise AssertionError("never called")

    with pytest.warns(PluginLoadWarning) as record:
        fake_engine(plugins=[Returns()], load_entrypoints=False)
    messages = sorted(str(w.message).split(": ", 1)[1] for w in record)
    assert messages == [
        "register_encoders takes 'config', which restyle does not pass; define it as "
        "register_encoders(register)",
        "register_experts returned [<ScriptedExpert expert 'lost'>], which restyle ignores: "
        "call register(expert) once for each expert instead",
        "register_marketplaces takes no register argument, so it cannot register anything; "
        "define it as register_marketplaces(register) and call register(...) once per "
        "component",
    ]


def test_plugins_are_named_by_module_or_class_never_by_id() -> None:
    class Raises:
        @restyle.hookimpl
        def register_experts(self, register: Callable[[object], None]) -> None:
            raise RuntimeError("no licence")

    with pytest.warns(PluginLoadWarning) as record:
        engine = fake_engine(plugins=[Raises(), Raises()], load_entrypoints=False)
    name = ("tests.test_plugins.test_plugins_are_named_by_module_or_class_never_by_id."
            "<locals>.Raises")
    assert [str(w.message) for w in record] == [
        f"in-process plugin '{name}': register_experts raised RuntimeError: no licence",
        f"in-process plugin '{name}#2': register_experts raised RuntimeError: no licence",
    ]
    assert [e.plugin for e in engine.plugin_errors] == [name, f"{name}#2"]
    assert isinstance(engine.plugin_errors[0].__cause__, RuntimeError)


def test_plugins_must_be_objects_or_modules() -> None:
    with pytest.raises(ConfigurationError, match=r"import 'restyle_hello\.plugin' and pass"):
        fake_engine(plugins=["restyle_hello.plugin"], load_entrypoints=False)
    with pytest.warns(PluginLoadWarning) as record:
        fake_engine(plugins=[TwoExperts, object()], load_entrypoints=False)
    assert [str(w.message) for w in record] == [
        "in-process plugin 'tests.test_plugins.TwoExperts': it is the class TwoExperts, not a "
        "plugin object: pass an instance, TwoExperts(), or a module",
        "in-process plugin 'builtins.object': it implements none of restyle's hooks "
        "(register_experts, register_synthesizers, register_marketplaces, register_encoders), "
        "so it provides nothing",
    ]


def test_timeouts_must_be_positive_numbers() -> None:
    with pytest.warns(PluginLoadWarning) as record:
        engine = fake_engine(plugins=[TimedExperts(0, float("inf"), 2.5)],
                             load_entrypoints=False)
    assert [str(w.message).split(": ", 1)[1] for w in record] == [
        f"register_experts registered something that is not a usable expert: "
        f"ScriptedExpert.timeout must be a positive number of seconds, got {bad}"
        for bad in ("0", "inf")
    ]
    assert engine.registry.names("expert").count("t-2.5") == 1
    assert engine.registry.get("expert", "t-0") is None
    with pytest.raises(ConfigurationError, match=r"timeout must be a positive number of seconds"):
        fake_engine(experts=[ScriptedExpert("direct", timeout=-1)], load_entrypoints=False)


class TimedExperts:
    def __init__(self, *timeouts: float) -> None:
        self.timeouts = timeouts

    @restyle.hookimpl
    def register_experts(self, register: restyle.RegisterExpert) -> None:
        for timeout in self.timeouts:
            register(ScriptedExpert(f"t-{timeout}", timeout=timeout))


def test_plugins_command_shows_every_plugin_and_problem_as_json(
    install_plugin: Callable[[str], None], capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for project in ("restyle-hello", "restyle-bad-name", "restyle-broken"):
        install_plugin(project)
    monkeypatch.setenv("RESTYLE_LOAD_PLUGINS", "hello,bad-name,broken,restyle-helo")
    assert main(["plugins", "--json"]) == 0  # named plugins that fail still only get listed
    captured = capsys.readouterr()
    plugins = {p["name"]: p for p in json.loads(captured.out)["plugins"]}
    assert set(plugins) == {"bad-name", "broken", "hello"}
    assert plugins["hello"] == {
        "name": "hello", "distribution": "restyle-hello", "version": "0.1.0",
        "entry_point": "hello", "module": "restyle_hello.plugin", "builtin": False,
        "hooks": ["register_experts", "register_marketplaces"],
        "components": [{"kind": "expert", "name": "hello"},
                       {"kind": "marketplace", "name": "hello-market"}],
        "errors": [],
    }
    assert plugins["bad-name"]["components"] == [{"kind": "expert", "name": "fine-eye"}]
    assert plugins["bad-name"]["errors"] == [BAD_NAME]
    [broken] = plugins["broken"]["errors"]
    assert broken.startswith("plugin 'broken' from restyle-broken 0.1.0: could not be imported "
                             "(ModuleNotFoundError:")
    assert plugins["broken"]["hooks"] == [] and plugins["broken"]["components"] == []
    assert captured.err == ("restyle: warning: RESTYLE_LOAD_PLUGINS names 'restyle-helo', which "
                            "is not an installed restyle plugin; did you mean 'restyle-hello'? "
                            "(installed plugins: bad-name (restyle-bad-name), broken "
                            "(restyle-broken), hello (restyle-hello))\n")

    assert main(["plugins", "--json", "--all"]) == 0
    everything = json.loads(capsys.readouterr().out)["plugins"]
    clip = next(p for p in everything if p["name"] == "restyle.experts.clip")
    assert clip["builtin"] and clip["components"] == [{"kind": "expert", "name": "clip"}]


def test_plugins_command_lists_components_then_plugins(
    install_plugin: Callable[[str], None], capsys: pytest.CaptureFixture[str],
) -> None:
    install_plugin("restyle-bad-name")
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert any(line.split()[:3] == ["expert", "fine-eye", "restyle-bad-name"] for line in lines)
    assert ("restyle-bad-name 0.1.0  entry point bad-name = restyle_bad_name.plugin\n"
            "  hooks:      register_experts\n"
            "  components: expert fine-eye\n"
            f"  error:      {BAD_NAME}\n") in out

"""Finding plugins and collecting the components they register.

Each Engine builds its own :class:`PluginRegistry` (its own pluggy
PluginManager): nothing here is module-level state.

Loading rule for third-party plugins (entry point group ``restyle``): a plugin
that fails to import or to register is reported as a :class:`PluginLoadWarning`
and recorded in :attr:`PluginRegistry.errors`, and the other plugins still load.
It is an error instead (:class:`~restyle.PluginError`) when the plugin was named
in ``RESTYLE_LOAD_PLUGINS`` or when ``strict=True``: a plugin you asked for must
not fail silently.
"""

from __future__ import annotations

import importlib
import logging
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from restyle import _hookspecs
from restyle._components import (
    Component,
    Encoder,
    Expert,
    Marketplace,
    Synthesizer,
    check_component_name,
)
from restyle._errors import DuplicateComponentError, PluginError

__all__ = ["DEFAULT_PLUGINS", "KINDS", "PluginLoadWarning", "PluginRegistry", "Registration"]

logger = logging.getLogger("restyle.plugins")

#: Built-in plugin modules, registered exactly like third-party ones.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "restyle.encoders.openclip",
    "restyle.experts.clip",
    "restyle.experts.catalog",
    "restyle.experts.google_vision",
    "restyle.experts.aws_rekognition",
    "restyle.synthesizers.consensus",
    "restyle.synthesizers.gemini",
    "restyle.synthesizers.openai_compat",
    "restyle.marketplaces.catalog",
    "restyle.marketplaces.ebay",
)

BUILTIN_DISTRIBUTION = "restyle"
ENTRY_POINT_GROUP = "restyle"
LOAD_PLUGINS_ENV = "RESTYLE_LOAD_PLUGINS"

#: kind -> (hook name, base class)
KINDS: dict[str, tuple[str, type[Component]]] = {
    "expert": ("register_experts", Expert),
    "synthesizer": ("register_synthesizers", Synthesizer),
    "marketplace": ("register_marketplaces", Marketplace),
    "encoder": ("register_encoders", Encoder),
}


class PluginLoadWarning(UserWarning):
    """An installed plugin failed to load; the others were loaded."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Registration:
    """A component and who provided it."""

    component: Component
    kind: str
    name: str
    plugin: str
    distribution: str


class PluginRegistry:
    """One Engine's plugins and the components they registered."""

    def __init__(
        self,
        *,
        plugins: Sequence[object] = (),
        load_builtins: bool = True,
        load_entrypoints: bool = True,
        strict: bool = False,
    ) -> None:
        self.pm = pluggy.PluginManager(_hookspecs.PROJECT)
        self.pm.add_hookspecs(_hookspecs)
        self.errors: list[PluginError] = []
        self._distributions: dict[str, str] = {}
        self._strict = strict
        if load_builtins:
            for module_name in DEFAULT_PLUGINS:
                self._register(importlib.import_module(module_name), BUILTIN_DISTRIBUTION)
        for plugin in plugins:
            self._register(plugin, _distribution_of(plugin))
        if load_entrypoints:
            self._load_entrypoints()
        self.registrations: dict[tuple[str, str], Registration] = {}
        self._collect()

    # -- loading -------------------------------------------------------------

    def _register(self, plugin: object, distribution: str, name: str | None = None) -> None:
        try:
            plugin_name = self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except (ValueError, pluggy.PluginValidationError) as exc:
            self.pm.unregister(plugin) if self.pm.is_registered(plugin) else None
            raise PluginError(
                f"plugin {name or _plugin_label(plugin)!r} from {distribution!r} is invalid: {exc}",
                distribution=distribution,
            ) from exc
        if plugin_name is not None:
            self._distributions[plugin_name] = distribution

    def _load_entrypoints(self) -> None:
        wanted = _wanted_from_env()
        for ep in _entry_points():
            dist = ep.dist.name if ep.dist is not None else ep.name
            if wanted is not None and ep.name not in wanted and _normalise(dist) not in wanted:
                continue
            if self.pm.has_plugin(ep.name) or self.pm.is_blocked(ep.name):
                continue
            try:
                module = ep.load()
                self._register(module, dist, name=ep.name)
            except Exception as exc:  # a broken plugin must not take the others down
                error = exc if isinstance(exc, PluginError) else PluginError(
                    f"plugin {ep.name!r} from distribution {dist!r} failed to load: "
                    f"{type(exc).__name__}: {exc}",
                    distribution=dist,
                )
                if error is not exc:
                    error.__cause__ = exc
                explicitly_wanted = wanted is not None
                if self._strict or explicitly_wanted:
                    raise error from exc
                self.errors.append(error)
                warnings.warn(str(error), PluginLoadWarning, stacklevel=4)
                logger.warning("%s", error)

    # -- collecting ----------------------------------------------------------

    def _collect(self) -> None:
        for kind, (hook_name, base) in KINDS.items():
            hook = getattr(self.pm.hook, hook_name)
            for impl in hook.get_hookimpls():
                distribution = self._distributions.get(impl.plugin_name, impl.plugin_name)

                def register(
                    component: Any,
                    _kind: str = kind,
                    _base: type[Component] = base,
                    _plugin: str = impl.plugin_name,
                    _dist: str = distribution,
                ) -> None:
                    self._add(component, _kind, _base, _plugin, _dist)

                try:
                    impl.function(**{arg: register for arg in impl.argnames if arg == "register"})
                except PluginError:
                    raise
                except Exception as exc:
                    error = PluginError(
                        f"plugin {impl.plugin_name!r} from {distribution!r} failed in "
                        f"{hook_name}: {type(exc).__name__}: {exc}",
                        distribution=distribution,
                    )
                    if self._strict or distribution == BUILTIN_DISTRIBUTION:
                        raise error from exc
                    error.__cause__ = exc
                    self.errors.append(error)
                    warnings.warn(str(error), PluginLoadWarning, stacklevel=4)

    def _add(
        self, component: Any, kind: str, base: type[Component], plugin: str, distribution: str
    ) -> None:
        if not isinstance(component, base):
            raise PluginError(
                f"plugin {plugin!r} from {distribution!r} registered {component!r} as "
                f"{'an' if kind[0] in 'aeiou' else 'a'} {kind}, but it is not a "
                f"restyle.{base.__name__} instance",
                distribution=distribution,
            )
        try:
            name = check_component_name(component)
        except ValueError as exc:
            raise PluginError(
                f"plugin {plugin!r} from {distribution!r}: {exc}", distribution=distribution
            ) from exc
        key = (kind, name)
        existing = self.registrations.get(key)
        if existing is not None:
            raise DuplicateComponentError(
                f"two plugins register {'an' if kind[0] in 'aeiou' else 'a'} {kind} named "
                f"{name!r}: plugin {existing.plugin!r} from {existing.distribution!r} and "
                f"plugin {plugin!r} from {distribution!r}; uninstall one or block it with "
                f"{LOAD_PLUGINS_ENV}",
                distribution=distribution,
            )
        self.registrations[key] = Registration(
            component=component, kind=kind, name=name, plugin=plugin, distribution=distribution
        )

    # -- queries -------------------------------------------------------------

    def get(self, kind: str, name: str) -> Registration | None:
        return self.registrations.get((kind, name))

    def names(self, kind: str) -> list[str]:
        return sorted(n for k, n in self.registrations if k == kind)

    def __iter__(self) -> Iterator[Registration]:
        return iter(sorted(self.registrations.values(), key=lambda r: (r.kind, r.name)))


def _entry_points() -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _wanted_from_env() -> set[str] | None:
    raw = os.environ.get(LOAD_PLUGINS_ENV)
    if raw is None:
        return None
    return {_normalise(part) for part in raw.split(",") if part.strip()} | {
        part.strip() for part in raw.split(",") if part.strip()
    }


def _plugin_label(plugin: object) -> str:
    if isinstance(plugin, ModuleType):
        return plugin.__name__
    return getattr(plugin, "__name__", type(plugin).__name__)


def _distribution_of(plugin: object) -> str:
    module = plugin.__name__ if isinstance(plugin, ModuleType) else type(plugin).__module__
    if module.startswith("restyle.") or module == "restyle":
        return BUILTIN_DISTRIBUTION
    return "<in-process>"

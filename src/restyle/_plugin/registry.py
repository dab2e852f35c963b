"""Finding plugins and collecting the components they register.

Each Engine builds its own :class:`PluginRegistry` (its own pluggy
PluginManager): nothing here is module-level state.

Rules, so that no plugin is lost silently and no plugin breaks the others:

- A plugin is registered once. A plugin object passed in code that is also an
  installed entry point (the same module) is that entry point's plugin, named
  after its distribution.
- Every problem with a plugin is a :class:`PluginLoadWarning` naming the
  plugin and its distribution, recorded in :attr:`PluginRegistry.errors`: an
  import that fails, a hook that raises or returns a value, a component
  refused (a bad name or timeout, a class instead of an instance, the wrong
  kind), a ``register()`` call with the wrong arguments, a function marked
  ``@restyle.hookimpl`` under a name that is no hook, a function named like a
  hook but not marked. The plugin's good components are registered all the
  same, and the other plugins are untouched.
- The same problem is a :class:`~restyle.PluginError` instead under
  ``strict=True``, for a plugin named in ``RESTYLE_LOAD_PLUGINS`` (a plugin you
  asked for must not fail quietly) and for a built-in plugin.
- Two components of one kind under one name are a
  :class:`~restyle.DuplicateComponentError`: neither is selectable by that
  name, and selecting it raises that error.
- Two distributions declaring the same entry point name, and names in
  ``RESTYLE_LOAD_PLUGINS`` that match no installed plugin, are warnings too.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from types import FrameType, ModuleType
from typing import Any

import pluggy

from restyle._errors import (
    ConfigurationError,
    DuplicateComponentError,
    PluginError,
    RestyleError,
)
from restyle._plugin import hookspecs as _hookspecs
from restyle._plugin.components import (
    Component,
    check_component,
)
from restyle._plugin.hookcheck import HOOKS, KINDS, hook_problems
from restyle._version import __version__

__all__ = [
    "DEFAULT_PLUGINS",
    "KINDS",
    "PluginInfo",
    "PluginLoadWarning",
    "PluginRegistry",
    "Registration",
]

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
IN_PROCESS = "<in-process>"
ENTRY_POINT_GROUP = "restyle"
LOAD_PLUGINS_ENV = "RESTYLE_LOAD_PLUGINS"


class PluginLoadWarning(UserWarning):
    """A plugin failed to load, or some of what it registered was refused; the
    other plugins, and that plugin's good components, were loaded."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Registration:
    """A component and who provided it."""

    component: Component
    kind: str
    name: str
    plugin: str
    distribution: str


@dataclass(slots=True, kw_only=True)
class PluginInfo:
    """One plugin: where it comes from, the hooks it implements, what it registered
    and what went wrong.

    ``name`` is unique in its registry: the entry point's name for an installed
    plugin, the module's name for a built-in one, and the module (or
    ``module.Class``) name for a plugin object passed in code.
    """

    name: str
    distribution: str
    version: str | None = None
    entry_point: str | None = None
    target: str | None = None
    module: str | None = None
    builtin: bool = False
    named: bool = False
    hooks: list[str] = field(default_factory=list)
    components: list[Registration] = field(default_factory=list)
    errors: list[PluginError] = field(default_factory=list)

    @property
    def label(self) -> str:
        """How messages name this plugin."""
        if self.entry_point is not None:
            version = f" {self.version}" if self.version else ""
            return f"plugin {self.entry_point!r} from {self.distribution}{version}"
        if self.builtin:
            return f"built-in plugin {self.name!r}"
        return f"in-process plugin {self.name!r}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.entry_point or self.name,
            "distribution": self.distribution,
            "version": self.version,
            "entry_point": self.entry_point,
            "module": self.module,
            "builtin": self.builtin,
            "hooks": list(self.hooks),
            "components": [{"kind": r.kind, "name": r.name} for r in self.components],
            "errors": [str(e) for e in self.errors],
        }


class _PluginManager(pluggy.PluginManager):
    """pluggy's manager, told which marked functions of the plugin being
    registered to leave out: they were reported, and must not stop the rest."""

    def __init__(self) -> None:
        super().__init__(_hookspecs.PROJECT)
        self.leave_out: frozenset[str] = frozenset()

    def parse_hookimpl_opts(self, plugin: object, name: str) -> pluggy.HookimplOpts | None:
        if name in self.leave_out:
            return None
        return super().parse_hookimpl_opts(plugin, name)


class PluginRegistry:
    """One Engine's plugins and the components they registered.

    ``raise_errors=False`` records every problem (as a warning) and raises
    none, whatever ``strict`` and ``RESTYLE_LOAD_PLUGINS`` say: for listing
    plugins, where seeing every problem matters more than stopping at one.
    """

    def __init__(
        self,
        *,
        plugins: Sequence[object] = (),
        load_builtins: bool = True,
        load_entrypoints: bool = True,
        strict: bool = False,
        raise_errors: bool = True,
    ) -> None:
        self.pm = _PluginManager()
        self.pm.add_hookspecs(_hookspecs)
        self.errors: list[PluginError] = []
        self.plugins: list[PluginInfo] = []
        self.registrations: dict[tuple[str, str], Registration] = {}
        #: The value of RESTYLE_LOAD_PLUGINS when it chose the installed plugins.
        self.load_plugins_env: str | None = (
            os.environ.get(LOAD_PLUGINS_ENV) if load_entrypoints else None
        )
        self._strict = strict
        self._raise = raise_errors
        self._fatal: list[PluginError] = []
        self._infos: dict[str, PluginInfo] = {}
        self._all: list[Registration] = []
        self._clashes: dict[tuple[str, str], DuplicateComponentError] = {}

        if load_builtins:
            version = _restyle_version()
            for module_name in DEFAULT_PLUGINS:
                self._add_plugin(
                    importlib.import_module(module_name),
                    PluginInfo(name=module_name, distribution=BUILTIN_DISTRIBUTION,
                               version=version, module=module_name, builtin=True),
                )
        plugins = list(plugins)
        for plugin in plugins:
            if isinstance(plugin, (str, bytes)):
                raise ConfigurationError(
                    f"plugins takes plugin modules or objects, not names: import {plugin!r} "
                    "and pass the module"
                )
        entry_points = _entry_points() if load_entrypoints or plugins else []
        claimed: set[int] = set()
        for plugin in plugins:
            self._add_explicit(plugin, entry_points, claimed)
        if load_entrypoints:
            self._load_entrypoints(entry_points, claimed)
        self._collect()
        if self._fatal:
            raise _combined(self._fatal)

    # -- loading -------------------------------------------------------------

    def _add_explicit(
        self, plugin: object, entry_points: Sequence[metadata.EntryPoint], claimed: set[int]
    ) -> None:
        if self.pm.is_registered(plugin):
            return  # given twice, or a built-in: the same plugin, registered once
        for index, ep in enumerate(entry_points):
            if _is_target_of(plugin, ep):
                claimed.add(index)
                info = self._entry_point_info(ep)
                info.named = self._is_named(ep)
                self._add_plugin(plugin, info)
                return
        module = plugin.__name__ if isinstance(plugin, ModuleType) else _object_module(plugin)
        builtin = module == "restyle" or module.startswith("restyle.")
        self._add_plugin(plugin, PluginInfo(
            name=self._unique_name(_object_name(plugin)),
            distribution=BUILTIN_DISTRIBUTION if builtin else IN_PROCESS,
            version=_restyle_version() if builtin else None,
            module=module,
            builtin=builtin,
        ))

    def _load_entrypoints(
        self, entry_points: Sequence[metadata.EntryPoint], claimed: set[int]
    ) -> None:
        wanted = _wanted(self.load_plugins_env)
        if wanted is not None:
            self._report_unknown_names(wanted, entry_points)
        for index, ep in enumerate(entry_points):
            if index in claimed:
                continue
            named = self._is_named(ep)
            if wanted is not None and not named:
                continue
            info = self._entry_point_info(ep)
            info.named = named
            try:
                plugin = ep.load()
            except Exception as exc:  # a broken plugin must not take the others down
                self._remember(info)
                self._problem(info, f"could not be imported ({type(exc).__name__}: {exc})",
                              cause=exc)
                continue
            if self.pm.is_registered(plugin):
                logger.debug("%s is already registered", info.label)
                continue
            self._add_plugin(plugin, info)
        self._report_entry_point_clashes()

    def _entry_point_info(self, ep: metadata.EntryPoint) -> PluginInfo:
        dist = ep.dist.name if ep.dist is not None else ep.name
        version = ep.dist.version if ep.dist is not None else None
        free = ep.name not in self._infos and not self.pm.has_plugin(ep.name)
        name = ep.name if free else self._unique_name(f"{dist}:{ep.name}")
        return PluginInfo(name=name, distribution=dist, version=version, entry_point=ep.name,
                          target=ep.value, module=ep.module)

    def _is_named(self, ep: metadata.EntryPoint) -> bool:
        wanted = _wanted(self.load_plugins_env)
        if wanted is None:
            return False
        dist = ep.dist.name if ep.dist is not None else ep.name
        return bool({_normalise(ep.name), _normalise(dist)} & {_normalise(w) for w in wanted})

    def _unique_name(self, base: str) -> str:
        name, count = base, 1
        while name in self._infos or self.pm.has_plugin(name):
            count += 1
            name = f"{base}#{count}"
        return name

    def _remember(self, info: PluginInfo) -> None:
        self.plugins.append(info)
        self._infos[info.name] = info

    def _add_plugin(self, plugin: object, info: PluginInfo) -> None:
        self._remember(info)
        if isinstance(plugin, type):
            self._problem(info, f"it is the class {plugin.__name__}, not a plugin object: "
                                f"pass an instance, {plugin.__name__}(), or a module")
            return
        problems, leave_out = hook_problems(self.pm, plugin)
        for problem in problems:
            self._problem(info, problem)
        self.pm.leave_out = frozenset(leave_out)
        try:
            self.pm.register(plugin, name=info.name)
        except (ValueError, pluggy.PluginValidationError) as exc:
            self._problem(info, f"it cannot be registered: {exc}", cause=exc)
            return
        finally:
            self.pm.leave_out = frozenset()
        info.hooks = sorted(caller.name for caller in self.pm.get_hookcallers(plugin) or ())
        if not info.hooks and not problems:
            self._problem(info, f"it implements none of restyle's hooks ({', '.join(HOOKS)}), "
                                "so it provides nothing")

    # -- collecting ----------------------------------------------------------

    def _collect(self) -> None:
        for kind, (hook_name, base) in KINDS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                info = self._infos[impl.plugin_name]
                register = self._register_callback(info, kind, base, hook_name)
                takes = "register" in impl.argnames or "register" in impl.kwargnames
                try:
                    returned = impl.function(**({"register": register} if takes else {}))
                except Exception as exc:
                    # What it registered before raising is kept: those components are fine.
                    self._problem(info, f"{hook_name} raised {type(exc).__name__}: {exc}",
                                  cause=exc)
                    continue
                if returned is not None:
                    self._problem(
                        info, f"{hook_name} returned {_describe(returned)}, which restyle "
                              f"ignores: call register({kind}) once for each {kind} instead"
                    )

    def _register_callback(
        self, info: PluginInfo, kind: str, base: type[Component], hook_name: str
    ) -> Callable[..., None]:
        def register(*args: Any, **kwargs: Any) -> None:
            if len(args) != 1 or kwargs:
                given = ", ".join([_describe(a) for a in args]
                                  + [f"{k}={_describe(v)}" for k, v in kwargs.items()])
                self._problem(
                    info, f"{hook_name} called register({given}); call it with one "
                          f"restyle.{base.__name__} instance, register({kind})"
                )
                return
            self._add(args[0], info, kind, base, hook_name)

        return register

    def _add(
        self, component: object, info: PluginInfo, kind: str, base: type[Component],
        hook_name: str,
    ) -> None:
        try:
            checked = check_component(component, base)
        except (TypeError, ValueError) as exc:
            self._problem(info, f"{hook_name} registered something that is not a usable "
                                f"{kind}: {exc}")
            return
        name = checked.name
        registration = Registration(component=checked, kind=kind, name=name, plugin=info.name,
                                    distribution=info.distribution)
        self._all.append(registration)
        info.components.append(registration)
        key = (kind, name)
        earlier = [r for r in self._all[:-1] if (r.kind, r.name) == key]
        if not earlier:
            self.registrations[key] = registration
            return
        self.registrations.pop(key, None)
        providers = [self._infos[r.plugin].label for r in [*earlier, registration]]
        if len(set(providers)) == 1:
            who = f"{providers[0]} registers {len(providers)} {kind}s named {name!r}"
        else:
            who = (f"{len(providers)} plugins register {_a(kind)} {kind} named {name!r}: "
                   + " and ".join(dict.fromkeys(providers)))
        error = DuplicateComponentError(
            f"{who}; {kind} {name!r} cannot be selected until only one remains: uninstall "
            f"the other, or leave it out of {LOAD_PLUGINS_ENV}",
            distribution=info.distribution, plugin=info.name,
        )
        self._clashes[key] = error
        self._problem(info, error=error)

    # -- problems ------------------------------------------------------------

    def _problem(
        self, info: PluginInfo | None, message: str = "", *, error: PluginError | None = None,
        cause: BaseException | None = None, also: Sequence[PluginInfo] = (),
    ) -> None:
        """Record a problem; warn about it, or keep it to raise at the end."""
        if error is None:
            text = f"{info.label}: {message}" if info is not None else message
            error = PluginError(text, distribution=info.distribution if info else None,
                                plugin=info.name if info else None)
        if cause is not None:
            error.__cause__ = cause
        self.errors.append(error)
        involved = [i for i in (info, *also) if i is not None]
        for each in involved:
            each.errors.append(error)
        fatal = self._strict or any(i.named or i.builtin for i in involved)
        if fatal and self._raise:
            self._fatal.append(error)
        else:
            _warn(str(error))
            logger.info("%s", error)

    def _report_unknown_names(
        self, wanted: list[str], entry_points: Sequence[metadata.EntryPoint]
    ) -> None:
        known: dict[str, str] = {}  # normalised name -> how to write it
        installed: list[str] = []
        for ep in entry_points:
            dist = ep.dist.name if ep.dist is not None else ep.name
            known.setdefault(_normalise(ep.name), ep.name)
            known.setdefault(_normalise(dist), dist)
            installed.append(f"{ep.name} ({dist})")
        for name in wanted:
            if _normalise(name) in known or _normalise(name) == BUILTIN_DISTRIBUTION:
                continue
            guess = difflib.get_close_matches(_normalise(name), list(known), n=1, cutoff=0.6)
            hint = f"; did you mean {known[guess[0]]!r}?" if guess else ""
            listing = (f"installed plugins: {', '.join(sorted(set(installed)))}" if installed
                       else "no restyle plugins are installed")
            self._problem(None, f"{LOAD_PLUGINS_ENV} names {name!r}, which is not an installed "
                                f"restyle plugin{hint} ({listing})")

    def _report_entry_point_clashes(self) -> None:
        groups: dict[str, list[PluginInfo]] = {}
        for info in self.plugins:
            if info.entry_point is not None:
                groups.setdefault(_normalise(info.entry_point), []).append(info)
        for infos in groups.values():
            if len({i.distribution for i in infos}) < 2:
                continue
            sources = " and ".join(
                f"{i.distribution}{f' {i.version}' if i.version else ''} ({i.target})"
                for i in infos
            )
            error = PluginError(
                f"{len(infos)} distributions declare the restyle entry point "
                f"{infos[0].entry_point!r}: {sources}; all of them are loaded. Uninstall the "
                f"one you do not want, or choose by distribution name in {LOAD_PLUGINS_ENV}",
                distribution=infos[-1].distribution, plugin=infos[-1].name,
            )
            self._problem(infos[-1], error=error, also=infos[:-1])

    # -- queries -------------------------------------------------------------

    def get(self, kind: str, name: str) -> Registration | None:
        """The component of ``kind`` registered as ``name``; None when there is
        none, or when several plugins register that name."""
        return self.registrations.get((kind, name))

    def missing(self, kind: str, name: str) -> RestyleError:
        """The error to raise when no component of ``kind`` can be selected as
        ``name``: what is available, and why the one wanted may be missing."""
        clash = self._clashes.get((kind, name))
        if clash is not None:
            return DuplicateComponentError(str(clash), distribution=clash.distribution,
                                           plugin=clash.plugin)
        known = ", ".join(self.names(kind)) or "none"
        message = f"no {kind} named {name!r} is registered (available: {known})"
        if self.load_plugins_env is not None:
            message += (f"; {LOAD_PLUGINS_ENV}={self.load_plugins_env!r} is set, so only the "
                        "installed plugins it names are loaded")
        if self.errors:
            message += ". Plugin problems: " + "; ".join(str(e) for e in self.errors)
        return ConfigurationError(message)

    def names(self, kind: str) -> list[str]:
        """The names a component of ``kind`` can be selected by."""
        return sorted(n for k, n in self.registrations if k == kind)

    def plugin(self, name: str) -> PluginInfo | None:
        return self._infos.get(name)

    def __iter__(self) -> Iterator[Registration]:
        """Every registered component, ambiguous names included."""
        return iter(sorted(self._all, key=lambda r: (r.kind, r.name, r.plugin)))


def _entry_points() -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=ENTRY_POINT_GROUP),
                  key=lambda ep: (ep.name, ep.dist.name if ep.dist is not None else ""))


def _normalise(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def _wanted(raw: str | None) -> list[str] | None:
    if raw is None:
        return None
    return [part.strip() for part in raw.split(",") if part.strip()]


def _is_target_of(plugin: object, ep: metadata.EntryPoint) -> bool:
    """Whether ``plugin`` is what ``ep`` loads, without importing anything."""
    if not ep.attr:
        return isinstance(plugin, ModuleType) and plugin.__name__ == ep.module
    module = sys.modules.get(ep.module)
    return module is not None and getattr(module, ep.attr, None) is plugin


def _object_module(plugin: object) -> str:
    return str(getattr(plugin, "__module__", None) or type(plugin).__module__)


def _object_name(plugin: object) -> str:
    """A plugin object's name in messages: its module, or its module and class."""
    if isinstance(plugin, ModuleType):
        return plugin.__name__
    if isinstance(plugin, type):
        return f"{plugin.__module__}.{plugin.__qualname__}"
    cls = type(plugin)
    return f"{cls.__module__}.{cls.__qualname__}"


def _describe(value: object) -> str:
    if isinstance(value, type):
        return f"the class {value.__name__}"
    text = repr(value)
    return text if len(text) <= 60 else f"{type(value).__name__}(...)"


def _a(word: str) -> str:
    return "an" if word[:1] in ("a", "e", "i", "o", "u") else "a"


def _combined(errors: list[PluginError]) -> PluginError:
    if len(errors) == 1:
        return errors[0]
    first = errors[0]
    combined = PluginError(
        f"{len(errors)} plugin problems: " + "; ".join(str(e) for e in errors),
        distribution=first.distribution, plugin=first.plugin,
    )
    combined.__cause__ = first
    return combined


def _warn(message: str) -> None:
    """Warn at the caller of the outermost restyle frame: the code that built the
    Engine, not a plugin's hook that restyle happened to be calling."""
    frame: FrameType | None = sys._getframe(1)
    depth, level = 1, 2
    while frame is not None:
        if frame.f_globals.get("__name__", "").split(".")[0] == "restyle":
            level = depth + 2
        frame = frame.f_back
        depth += 1
    warnings.warn(message, PluginLoadWarning, stacklevel=level)


def _restyle_version() -> str | None:
    return __version__

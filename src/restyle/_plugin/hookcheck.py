"""restyle's hooks, and what is wrong with a plugin's hook functions.

A plugin's functions are read before pluggy registers them: a function marked
``@restyle.hookimpl`` under a name that is no hook, a hook wrapper, or a hook
that takes arguments restyle does not pass is a problem (and left out), and so
is a function named like a hook (or nearly) but not marked.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable

import pluggy

from restyle._plugin.components import (
    Component,
    Encoder,
    Expert,
    Marketplace,
    Synthesizer,
)

__all__ = ["HOOKS", "HOOK_ARGUMENTS", "KINDS", "hook_problems"]

#: kind -> (hook name, base class)
KINDS: dict[str, tuple[str, type[Component]]] = {
    "expert": ("register_experts", Expert),
    "synthesizer": ("register_synthesizers", Synthesizer),
    "marketplace": ("register_marketplaces", Marketplace),
    "encoder": ("register_encoders", Encoder),
}
HOOKS: tuple[str, ...] = tuple(hook for hook, _ in KINDS.values())
#: The arguments restyle passes to every hook.
HOOK_ARGUMENTS = ("register",)


def hook_problems(pm: pluggy.PluginManager, plugin: object) -> tuple[list[str], set[str]]:
    """What is wrong with the plugin's hook functions, and the marked ones
    pluggy must leave out because of it."""
    problems: list[str] = []
    leave_out: set[str] = set()
    for attr in dir(plugin):
        if attr.startswith("__"):
            continue
        opts = pluggy.PluginManager.parse_hookimpl_opts(pm, plugin, attr)
        if opts is None:
            hook = _looks_like_hook(attr)
            if hook is not None and _is_routine(plugin, attr):
                like = "" if hook == attr else f"the restyle hook {hook} "
                problems.append(
                    f"{attr} looks like {like or 'a restyle hook '}but is not marked with "
                    "@restyle.hookimpl, so restyle never calls it; decorate it with "
                    "@restyle.hookimpl"
                )
            continue
        hook = opts.get("specname") or attr
        problem = None
        if hook not in HOOKS:
            guess = difflib.get_close_matches(hook, HOOKS, n=1)
            problem = (
                f"{attr} is marked @restyle.hookimpl but restyle has no hook named {hook!r}"
                + (f"; did you mean {guess[0]}?" if guess else
                   f"; restyle's hooks are {', '.join(HOOKS)}")
            )
        elif opts.get("wrapper") or opts.get("hookwrapper"):
            problem = f"{attr} is marked as a hook wrapper, which restyle's hooks do not take"
        else:
            problem = _signature_problem(hook, getattr(plugin, attr))
        if problem is not None:
            problems.append(problem)
            leave_out.add(attr)
    return problems, leave_out


def _looks_like_hook(attr: str) -> str | None:
    """The hook ``attr`` is named after or a close misspelling of, if any."""
    if attr in HOOKS:
        return attr
    close = difflib.get_close_matches(attr.lower(), HOOKS, n=1, cutoff=0.88)
    return close[0] if close else None


def _is_routine(plugin: object, attr: str) -> bool:
    try:
        value = inspect.getattr_static(plugin, attr)
    except AttributeError:
        return False
    if isinstance(value, (staticmethod, classmethod)):
        value = value.__func__
    return inspect.isroutine(value)


def _signature_problem(hook: str, function: Callable[..., object]) -> str | None:
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return None
    required = [
        p.name for p in parameters
        if p.default is p.empty and p.kind is not p.VAR_POSITIONAL and p.kind is not p.VAR_KEYWORD
    ]
    extra = [name for name in required if name not in HOOK_ARGUMENTS]
    if extra:
        return (f"{hook} takes {', '.join(repr(n) for n in extra)}, which restyle does not "
                f"pass; define it as {hook}(register)")
    if not any(p.name == "register" or p.kind is p.VAR_KEYWORD for p in parameters):
        return (f"{hook} takes no register argument, so it cannot register anything; "
                f"define it as {hook}(register) and call register(...) once per component")
    return None

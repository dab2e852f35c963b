"""``restyle plugins``: the components registered, which are ready and which
lack credentials or a package (never showing a secret), then the plugins with
their hooks, components and problems; the same as JSON with ``--json``."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import warnings
from pathlib import Path
from typing import Any

from restyle import _settings
from restyle._plugin.registry import PluginLoadWarning, PluginRegistry, Registration

__all__ = ["NEEDS", "plugins_command", "readiness"]

#: What a built-in component needs before it can answer: a module its extra
#: installs, and the environment variables of which one set must all be set
#: (each set an alternative). Only whether a variable is set is looked at.
NEEDS: dict[tuple[str, str], tuple[str, str, tuple[tuple[str, ...], ...]]] = {
    ("expert", "google-vision"): (
        "google.cloud.vision", "google",
        (("RESTYLE_GOOGLE_API_KEY",), ("GOOGLE_APPLICATION_CREDENTIALS",))),
    ("expert", "aws-rekognition"): (
        "boto3", "aws",
        (("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"), ("AWS_PROFILE",))),
    ("synthesizer", "gemini"): (
        "google.genai", "gemini", (("GEMINI_API_KEY",), ("GOOGLE_API_KEY",))),
    ("synthesizer", "openai-compatible"): (
        "openai", "openai", (("OPENAI_API_KEY",), ("OPENAI_BASE_URL",))),
    ("marketplace", "ebay"): ("", "", (("EBAY_CLIENT_ID", "EBAY_CLIENT_SECRET"),)),
    ("marketplace", "ebay-sold"): ("", "", (("EBAY_CLIENT_ID", "EBAY_CLIENT_SECRET"),)),
}
# AWS reads its profile files too, where a default profile may hold the keys.
_AWS_FILES = ("~/.aws/credentials", "~/.aws/config")


def readiness(registration: Registration) -> tuple[str, str]:
    """``("ready" | "needs credentials" | "needs a package" | "unknown", what to do)``."""
    need = NEEDS.get((registration.kind, registration.name))
    if need is None:
        builtin = registration.distribution == "restyle"
        return ("ready", "") if builtin else ("unknown", "a third-party component")
    module, extra, alternatives = need
    if module and not _installed(module):
        return "needs a package", f"pip install 'restyle[{extra}]'"
    if any(all(_settings.env_str(name) for name in names) for names in alternatives):
        return "ready", ""
    if registration.name == "aws-rekognition" and any(
            Path(p).expanduser().is_file() for p in _AWS_FILES):
        return "ready", "credentials from the AWS profile files"
    return "needs credentials", "set " + " or ".join(" and ".join(n) for n in alternatives)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def plugins_command(args: argparse.Namespace) -> int:
    """List components, then plugins with their hooks, components and problems.

    Nothing a plugin does wrong stops the listing: every problem is shown."""
    with warnings.catch_warnings():
        # Each problem is printed below, once, where it belongs.
        warnings.simplefilter("ignore", PluginLoadWarning)
        registry = PluginRegistry(load_entrypoints=not args.no_plugins, raise_errors=False)
    plugins = [p for p in registry.plugins if args.all or not p.builtin]
    for error in (e for e in registry.errors if e.plugin is None):
        sys.stderr.write(f"restyle: warning: {error}\n")
    rows = list(registry)
    usable = {(r.kind, r.name): r for r in rows if registry.get(r.kind, r.name) is r}
    components = [_component(r, (r.kind, r.name) in usable) for r in rows]
    if args.json:
        data = {"components": components, "plugins": [p.to_dict() for p in plugins]}
        sys.stdout.write(json.dumps(data, indent=2) + "\n")
        return 0
    out = sys.stdout.write
    width = max(len(r.name) for r in rows)
    source_width = max(len(f"{r.distribution} ({r.plugin})") for r in rows)
    for c in components:
        source = f"{c['distribution']} ({c['plugin']})"
        detail = f" ({c['detail']})" if c["detail"] else ""
        out(f"{c['kind']:<12} {c['name']:<{width}}  {source:<{source_width}}  "
            f"{c['status']}{detail}\n")
    if plugins:
        out("\n")
    for plugin in plugins:
        version = f" {plugin.version}" if plugin.version else ""
        origin = (f"entry point {plugin.entry_point} = {plugin.target}"
                  if plugin.entry_point is not None else f"module {plugin.module}")
        out(f"{plugin.distribution}{version}  {origin}\n")
        out(f"  hooks:      {', '.join(plugin.hooks) or '-'}\n")
        provides = ", ".join(f"{r.kind} {r.name}" for r in plugin.components)
        out(f"  components: {provides or '-'}\n")
        for error in plugin.errors:
            out(f"  error:      {error}\n")
    if not plugins and not args.all:
        out("\nno third-party plugins loaded\n")
    return 0


def _component(r: Registration, usable: bool) -> dict[str, Any]:
    status, detail = readiness(r) if usable else ("ambiguous", "registered twice")
    return {"kind": r.kind, "name": r.name, "status": status, "detail": detail,
            "plugin": r.plugin, "distribution": r.distribution}

"""The hooks a restyle plugin implements. Each is called with keyword arguments."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

PROJECT = "restyle"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

Register = Callable[[Any], None]


@hookspec
def register_experts(register: Register) -> None:
    """Call ``register(expert)`` once for each Expert this plugin provides."""


@hookspec
def register_synthesizers(register: Register) -> None:
    """Call ``register(synthesizer)`` once for each Synthesizer this plugin provides."""


@hookspec
def register_marketplaces(register: Register) -> None:
    """Call ``register(marketplace)`` once for each Marketplace this plugin provides."""


@hookspec
def register_encoders(register: Register) -> None:
    """Call ``register(encoder)`` once for each Encoder this plugin provides."""

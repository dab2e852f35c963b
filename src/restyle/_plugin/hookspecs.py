"""The hooks a restyle plugin implements. Each is called with keyword arguments.

Each hook's ``register`` argument has a public type (``restyle.RegisterExpert``
and so on), so an implementation type-checks under ``mypy --strict``.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from restyle._plugin.components import Encoder, Expert, Marketplace, Synthesizer

__all__ = [
    "PROJECT",
    "RegisterEncoder",
    "RegisterExpert",
    "RegisterMarketplace",
    "RegisterSynthesizer",
    "hookimpl",
    "hookspec",
]

PROJECT = "restyle"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)

#: The ``register`` callback of :func:`register_experts`.
RegisterExpert = Callable[[Expert], None]
#: The ``register`` callback of :func:`register_synthesizers`.
RegisterSynthesizer = Callable[[Synthesizer], None]
#: The ``register`` callback of :func:`register_marketplaces`.
RegisterMarketplace = Callable[[Marketplace], None]
#: The ``register`` callback of :func:`register_encoders`.
RegisterEncoder = Callable[[Encoder], None]


@hookspec
def register_experts(register: RegisterExpert) -> None:
    """Call ``register(expert)`` once for each Expert this plugin provides."""


@hookspec
def register_synthesizers(register: RegisterSynthesizer) -> None:
    """Call ``register(synthesizer)`` once for each Synthesizer this plugin provides."""


@hookspec
def register_marketplaces(register: RegisterMarketplace) -> None:
    """Call ``register(marketplace)`` once for each Marketplace this plugin provides."""


@hookspec
def register_encoders(register: RegisterEncoder) -> None:
    """Call ``register(encoder)`` once for each Encoder this plugin provides."""

"""Helpers for testing restyle plugins: fake components and pytest fixtures.

The fixtures (``restyle_engine``, ``restyle_photo``, ``color_encoder``) are
available in any project that has restyle installed, through the ``pytest11``
entry point; the fakes are imported from here::

    from restyle.testing import ColorEncoder, ListMarketplace, ScriptedExpert, check_expert
"""

from __future__ import annotations

from restyle.testing._checks import (
    check_encoder,
    check_expert,
    check_marketplace,
    check_synthesizer,
    sample_image,
)
from restyle.testing._fakes import ColorEncoder, ListMarketplace, ScriptedExpert

__all__ = [
    "ColorEncoder",
    "ListMarketplace",
    "ScriptedExpert",
    "check_encoder",
    "check_expert",
    "check_marketplace",
    "check_synthesizer",
    "sample_image",
]

"""Helpers for testing restyle plugins: fake components and pytest fixtures.

The fixtures (``restyle_engine``, ``restyle_photo``, ``color_encoder``) are
available in any project that has restyle installed, through the ``pytest11``
entry point; the fakes are imported from here::

    from restyle.testing import ColorEncoder, ListMarketplace, ScriptedExpert, check_expert

A recorded analysis (``restyle analyze --record DIR``) is a fixture too:
``load_recording(DIR)`` gives its Analysis, fake components that answer what
was recorded, an offline Engine made of them, and replays with other rules.
"""

from __future__ import annotations

from restyle._recording import Recording, Replay, load_recording
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
    "Recording",
    "Replay",
    "ScriptedExpert",
    "check_encoder",
    "check_expert",
    "check_marketplace",
    "check_synthesizer",
    "load_recording",
    "sample_image",
]

"""Helpers for testing restyle plugins: fake components, a fake web service,
contract checks and pytest fixtures.

The fixtures (``restyle_engine``, ``restyle_photo``, ``restyle_color_encoder``,
``restyle_server``) are available in any project that has restyle installed,
through the ``pytest11`` entry point; the rest is imported from here::

    from restyle.testing import FakeServer, Reply, check_marketplace, image_bytes

A recorded analysis (``restyle analyze --record DIR``) is a fixture too:
``load_recording(DIR)`` gives its Analysis, fake components that answer what
was recorded, an offline Engine made of them, and replays with other rules.
"""

from __future__ import annotations

from restyle._evaluation.recording import Recording, Replay, load_recording
from restyle.testing._checks import (
    check_encoder,
    check_expert,
    check_marketplace,
    check_synthesizer,
    sample_image,
)
from restyle.testing._fakes import ColorEncoder, ListMarketplace, ScriptedExpert
from restyle.testing._server import FakeServer, Raw, Reply, Request, Responder, image_bytes

__all__ = [
    "ColorEncoder",
    "FakeServer",
    "ListMarketplace",
    "Raw",
    "Recording",
    "Replay",
    "Reply",
    "Request",
    "Responder",
    "ScriptedExpert",
    "check_encoder",
    "check_expert",
    "check_marketplace",
    "check_synthesizer",
    "image_bytes",
    "load_recording",
    "sample_image",
]

"""pytest fixtures for restyle plugin authors (loaded through the ``pytest11`` entry point)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from restyle._engine import Engine
from restyle._input.fetching import Fetcher
from restyle._input.imaging import Photo, load_photo
from restyle._pipeline.rerank import Reranker
from restyle.testing._checks import sample_image
from restyle.testing._fakes import ColorEncoder
from restyle.testing._server import FakeServer


@pytest.fixture
def restyle_color_encoder() -> ColorEncoder:
    """A deterministic encoder that needs no model."""
    return ColorEncoder()


@pytest.fixture
def restyle_photo() -> Photo:
    """A small drawn photo, decoded as restyle decodes user photos."""
    return load_photo(sample_image())


@pytest.fixture
def restyle_engine(restyle_color_encoder: ColorEncoder) -> Callable[..., Engine]:
    """A factory of offline Engines: ``restyle_engine(experts=[MyExpert()])``.

    No installed plugin is loaded, no marketplace is searched and the encoder
    is the fake one unless the test passes others. Plugins are loaded strictly:
    a plugin problem that an Engine would only warn about fails the test. Comp images may be fetched
    from test servers on 127.0.0.1 (never allowed outside tests), and no
    embedding is cached on disk.
    """

    def make(**kwargs: Any) -> Engine:
        options: dict[str, Any] = {
            "encoder": restyle_color_encoder,
            "experts": [],
            "marketplaces": [],
            "load_entrypoints": False,
            "strict_plugins": True,
            "reranker": Reranker(
                fetcher=Fetcher(trusted_networks=["127.0.0.0/8", "::1/128"]), cache=None
            ),
        }
        options.update(kwargs)
        return Engine(**options)

    return make


@pytest.fixture
def restyle_server() -> Iterator[FakeServer]:
    """A started :class:`~restyle.testing.FakeServer` on 127.0.0.1 with no routes
    yet, stopped after the test: add routes
    (``restyle_server.routes["/api/search"] = Reply(body={...})``) or a script."""
    with FakeServer() as server:
        yield server

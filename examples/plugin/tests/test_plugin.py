"""Tests of the plugin, written with the fixtures restyle provides for plugin authors."""

from __future__ import annotations

from collections.abc import Callable

from restyle_dominant_color import DominantColorExpert
from restyle_dominant_color import plugin as plugin_module

from restyle import Engine, Photo, load_photo
from restyle.testing import check_expert, sample_image


def test_keeps_the_expert_contract() -> None:
    opinion = check_expert(DominantColorExpert())
    assert opinion.ok


def test_names_the_item_colour_not_the_background(restyle_photo: Photo) -> None:
    opinion = DominantColorExpert().examine(restyle_photo)  # a blue jacket on light grey
    assert opinion.labels[0].text == "blue"
    assert opinion.labels[0].facet == "color"
    red = DominantColorExpert().examine(load_photo(sample_image(color=(190, 40, 40))))
    assert red.labels[0].text == "red"


def test_colour_reaches_the_identification(restyle_engine: Callable[..., Engine]) -> None:
    engine = restyle_engine(plugins=[plugin_module], experts=["dominant-color"])
    ident = engine.identify(sample_image(color=(40, 130, 70)))
    assert ident.attribute("color") == "green"

"""The docs keep up with the code: every hook documented and tested, every variable listed."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from restyle import _hookspecs

ROOT = Path(__file__).resolve().parent.parent
HOOKS = sorted(
    name for name, fn in vars(_hookspecs).items()
    if inspect.isfunction(fn) and hasattr(fn, "restyle_spec")
)


def test_there_are_hooks() -> None:
    assert HOOKS == ["register_encoders", "register_experts", "register_marketplaces",
                     "register_synthesizers"]


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented_with_its_signature(hook: str) -> None:
    guide = (ROOT / "docs" / "plugins.md").read_text()
    params = ", ".join(inspect.signature(getattr(_hookspecs, hook)).parameters)
    assert f"### `{hook}({params})`" in guide


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_test(hook: str) -> None:
    tests = (ROOT / "tests" / "test_plugins.py").read_text()
    assert re.search(rf"^def test_hook_{hook}\b", tests, re.M), f"no test_hook_{hook}"

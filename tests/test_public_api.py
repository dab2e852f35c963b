"""The public namespace: one sorted, complete __all__, and private modules."""

from __future__ import annotations

import inspect

import restyle


def test_all_is_sorted_and_complete() -> None:
    assert restyle.__all__ == sorted(restyle.__all__, key=lambda n: (not n.isupper(), n))
    public = {
        name for name, value in vars(restyle).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public == set(restyle.__all__) - {"__version__"}


def test_every_exported_error_derives_from_the_root() -> None:
    errors = [getattr(restyle, n) for n in restyle.__all__ if n.endswith("Error")]
    assert len(errors) >= 10
    for error in errors:
        assert issubclass(error, restyle.RestyleError)


def test_error_tree_is_drawn_in_the_errors_module() -> None:
    from restyle import _errors

    doc = _errors.__doc__ or ""
    for name in _errors.__all__:
        assert name in doc, name

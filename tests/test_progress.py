"""Progress bars show where someone is watching: a terminal or a Jupyter kernel, not a pipe."""

from __future__ import annotations

import io
import sys
import types
import warnings
from collections.abc import Iterator

import pytest
import tqdm.std

from restyle._progress import in_kernel, progress_bar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def no_warnings() -> Iterator[None]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    messages = [str(w.message) for w in caught]
    assert not messages, messages


@pytest.fixture
def kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Look like code running in a Jupyter kernel, as ipykernel sets it up."""
    shell = types.SimpleNamespace(kernel=object())
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: shell  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    monkeypatch.setitem(sys.modules, "IPython", ipython)


def run(bar: tqdm.std.tqdm) -> None:
    for _ in range(3):
        bar.update(1)
    bar.close()


def test_a_terminal_gets_a_text_bar(monkeypatch: pytest.MonkeyPatch, no_warnings: None) -> None:
    stderr = Terminal()
    monkeypatch.setattr(sys, "stderr", stderr)
    assert not in_kernel()
    bar = progress_bar(total=3, desc="Analyzing", unit="photo", enabled=None)
    assert type(bar) is tqdm.std.tqdm and not bar.disable
    run(bar)
    assert "Analyzing" in stderr.getvalue()


def test_a_pipe_gets_nothing(monkeypatch: pytest.MonkeyPatch, no_warnings: None) -> None:
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    bar = progress_bar(total=3, desc="Analyzing", unit="photo", enabled=None)
    assert bar.disable
    run(bar)
    assert stderr.getvalue() == ""


def test_a_kernel_without_ipywidgets_gets_a_text_bar_on_stderr(
    kernel: None, monkeypatch: pytest.MonkeyPatch, no_warnings: None
) -> None:
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # not importable
    stderr = io.StringIO()  # a kernel's stderr is no terminal, and Jupyter shows it
    monkeypatch.setattr(sys, "stderr", stderr)
    assert in_kernel()
    bar = progress_bar(total=3, desc="Building catalog", unit="item", enabled=None)
    assert type(bar) is tqdm.std.tqdm and not bar.disable
    run(bar)
    assert "Building catalog" in stderr.getvalue()
    assert "IProgress" not in stderr.getvalue()


def test_a_kernel_with_ipywidgets_gets_a_widget(
    monkeypatch: pytest.MonkeyPatch, no_warnings: None
) -> None:
    pytest.importorskip("ipywidgets", reason="ipywidgets is not installed (it is in the dev group)")
    pytest.importorskip("ipykernel")  # the real one: widgets open their comm through it
    import tqdm.notebook

    shell = types.SimpleNamespace(kernel=object())
    monkeypatch.setattr(sys.modules["IPython"], "get_ipython", lambda: shell)
    bar = progress_bar(total=3, desc="Analyzing", unit="photo", enabled=None)
    assert isinstance(bar, tqdm.notebook.tqdm) and not bar.disable
    run(bar)


def test_enabled_false_is_quiet_everywhere(
    kernel: None, monkeypatch: pytest.MonkeyPatch, no_warnings: None
) -> None:
    stderr = Terminal()
    monkeypatch.setattr(sys, "stderr", stderr)
    bar = progress_bar(total=3, desc="Analyzing", unit="photo", enabled=False)
    assert bar.disable
    run(bar)
    assert stderr.getvalue() == ""


def test_a_terminal_ipython_is_not_a_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = lambda: types.SimpleNamespace()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "IPython", ipython)
    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    assert not in_kernel()
    monkeypatch.delitem(sys.modules, "ipykernel")
    ipython.get_ipython = lambda: types.SimpleNamespace(kernel=object())  # type: ignore[attr-defined]
    assert not in_kernel()


def test_the_command_lines_log_lines_are_written_above_any_bar(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    from tqdm import tqdm

    from restyle.cli import _logging_to_stderr

    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with _logging_to_stderr(0):
        bar = tqdm(total=10, file=sys.stderr, desc="Building", mininterval=0)
        bar.update(3)
        logging.getLogger("restyle").warning("a row was rejected")
        bar.close()
    text = err.getvalue()
    before = text[: text.index("WARNING restyle: a row was rejected")]
    assert "Building" in before and before.endswith("\r")  # the bar cleared first

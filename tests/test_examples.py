"""The examples stay runnable: the plugin package, its tests, and the notebook."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from restyle import Engine
from restyle.cli import main
from restyle.testing import ColorEncoder, sample_image
from tests.conftest import EXAMPLES

PLUGIN = EXAMPLES / "plugin"


def test_example_plugin_is_discovered_through_its_entry_point(
    install_plugin: Callable[[str | Path], None], capsys: pytest.CaptureFixture[str]
) -> None:
    install_plugin(PLUGIN)
    engine = Engine(experts=["dominant-color"], encoder=ColorEncoder(), marketplaces=[])
    registration = engine.registry.get("expert", "dominant-color")
    assert registration is not None and registration.distribution == "restyle-dominant-color"
    assert engine.identify(sample_image(color=(190, 40, 40))).attribute("color") == "red"
    assert main(["plugins"]) == 0
    assert any(line.split()[:3] == ["expert", "dominant-color", "restyle-dominant-color"]
               for line in capsys.readouterr().out.splitlines())


def test_example_plugin_test_suite_passes() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PLUGIN / "src"),
                                                         os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(PLUGIN / "tests")],
        cwd=PLUGIN, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_quickstart_notebook_runs(
    tiny_model_spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nbclient
    import nbformat

    here = tmp_path / "examples"  # the directory the notebook runs from
    here.mkdir()
    shutil.copy(EXAMPLES / "photo.jpg", here / "photo.jpg")
    shutil.copytree(EXAMPLES / "catalog", here / "catalog")
    before = sorted(p.relative_to(here) for p in here.rglob("*"))
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setenv("TMPDIR", str(temp))  # the kernel's tempfile directory
    monkeypatch.setenv("RESTYLE_MODEL", tiny_model_spec)
    monkeypatch.setenv("RESTYLE_LOAD_PLUGINS", "")
    notebook = nbformat.read(EXAMPLES / "quickstart.ipynb", as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=240, kernel_name="python3",
                                     resources={"metadata": {"path": str(here)}})
    client.execute()
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    html = [out["data"]["text/html"] for out in outputs if "text/html" in out.get("data", {})]
    text = "".join(out.get("text", "") for out in outputs)
    assert any("Comps (12)" in h for h in html)
    assert any(h.count("data:image/jpeg;base64,") == 13 for h in html)  # photo + 12 thumbnails
    assert all(len(h) < 300_000 for h in html)
    assert "12 added" in text
    assert "Northwind" in text
    # The catalog build's progress shows: a widget, or text on stderr without ipywidgets.
    widget = "application/vnd.jupyter.widget-view+json"
    widgets = [out for out in outputs if widget in out.get("data", {})]
    assert widgets or "Building catalog" in text
    assert "IProgress" not in text
    # The sample catalog went to a temporary directory; the notebook's folder is unchanged.
    assert [p.name for p in temp.glob("restyle-quickstart-*/catalog.sqlite")] == ["catalog.sqlite"]
    assert sorted(p.relative_to(here) for p in here.rglob("*")) == before


def test_the_examples_readmes_use_the_documented_options() -> None:
    for readme in EXAMPLES.rglob("README.md"):
        assert " --dir " not in readme.read_text(), f"{readme} uses the hidden --dir"


def test_the_notebook_extra_runs_the_notebook_headless() -> None:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    pyproject = tomllib.loads((EXAMPLES.parent / "pyproject.toml").read_text())
    notebook = " ".join(pyproject["project"]["optional-dependencies"]["notebook"])
    assert "nbconvert" in notebook and "ipywidgets" in notebook and "ipykernel" in notebook
    guide = " ".join((EXAMPLES.parent / "docs" / "getting-started.md").read_text().split())
    assert "`jupyter nbconvert --to notebook --execute quickstart.ipynb" in guide

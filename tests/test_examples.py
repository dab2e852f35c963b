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

    shutil.copy(EXAMPLES / "photo.jpg", tmp_path / "photo.jpg")
    shutil.copytree(EXAMPLES / "catalog", tmp_path / "catalog")
    monkeypatch.setenv("RESTYLE_MODEL", tiny_model_spec)
    monkeypatch.setenv("RESTYLE_LOAD_PLUGINS", "")
    notebook = nbformat.read(EXAMPLES / "quickstart.ipynb", as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=240, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.outputs]
    html = [out["data"]["text/html"] for out in outputs if "text/html" in out.get("data", {})]
    text = "".join(out.get("text", "") for out in outputs)
    assert any("Comps (12)" in h for h in html)
    assert "12 added" in text
    assert "Northwind" in text
    assert (tmp_path / "demo-catalog" / "catalog.sqlite").is_file()

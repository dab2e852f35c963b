"""The layout keeps its floors: the import-linter contracts in pyproject.toml
hold, and no import circle has formed (docs/architecture.md)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))
# A value renders itself in a notebook by importing the display module when asked.
ALLOWED = {("restyle._types", "restyle._display")}


def test_the_import_linter_contracts_hold() -> None:
    done = subprocess.run([LINT_IMPORTS], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_no_import_circle_over_real_or_type_checking_imports() -> None:
    graph = grimp.build_graph("restyle")
    for importer, imported in ALLOWED:
        graph.remove_import(importer=importer, imported=imported)
    circles = [
        (module, other) for module in sorted(graph.modules)
        for other in graph.find_modules_directly_imported_by(module)
        if graph.chain_exists(importer=other, imported=module)
    ]
    assert circles == [], f"import circles through: {circles[:10]}"


def test_a_new_upward_import_would_break_a_contract(tmp_path: Path) -> None:
    """The contracts can fail: the same check on a copy with one upward import."""
    import shutil

    copy = tmp_path / "src" / "restyle"
    shutil.copytree(ROOT / "src" / "restyle", copy,
                    ignore=shutil.ignore_patterns("__pycache__"))
    types = copy / "_types.py"
    types.write_text(types.read_text() + "\nfrom restyle._engine import Engine  # noqa\n")
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    env = {"PYTHONPATH": str(tmp_path / "src"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([LINT_IMPORTS], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode != 0
    assert "restyle._types -> restyle._engine" in done.stdout

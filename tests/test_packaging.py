"""What gets published: an sdist that is the whole project, a wheel that is only the library.

The project is copied (without .git and virtual environments) and built there,
so the build's egg-info never lands in the working tree's src/.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from email.message import Message
from email.parser import Parser
from pathlib import Path

import pytest

import restyle
from tests.conftest import ROOT

REPOSITORY = "https://github.com/restyle-dev/restyle"
# Left behind by a developer's tools; never part of a distribution.
_NOT_COPIED = {".git", ".venv", "venv", "build", "dist", ".restyle-demo"}


def _ignore(directory: str, names: list[str]) -> set[str]:
    top = Path(directory) == ROOT
    return {n for n in names if (top and n in _NOT_COPIED) or n.endswith(".egg-info")}


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """The sdist and the wheel (built from that sdist), as `python -m build` makes them."""
    pytest.importorskip("build", reason="`build` is not installed (it is in the dev group)")
    work = tmp_path_factory.mktemp("packaging")
    project = work / "project"
    shutil.copytree(ROOT, project, ignore=_ignore)
    # What a developer's runs leave behind must stay out of the sdist.
    (project / "tests" / "__pycache__").mkdir(exist_ok=True)
    (project / "tests" / "__pycache__" / "conftest.cpython-311.pyc").write_bytes(b"\0")
    (project / "examples" / ".pytest_cache").mkdir(exist_ok=True)
    (project / "examples" / ".pytest_cache" / "README.md").write_text("cache")
    out = work / "dist"
    # No isolation: the build backend comes from the dev group, so no index is reached.
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(project)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (sdist,) = out.glob("restyle-*.tar.gz")
    (wheel,) = out.glob("restyle-*.whl")
    yield sdist, wheel


def _sdist_names(sdist: Path) -> list[str]:
    with tarfile.open(sdist) as tar:
        return [name.split("/", 1)[1] for name in tar.getnames() if "/" in name]


def _wheel_metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        return Parser().parsestr(zf.read(name).decode("utf-8"))


def test_sdist_carries_the_tests_examples_and_docs(dists: tuple[Path, Path]) -> None:
    names = set(_sdist_names(dists[0]))
    for wanted in ("LICENSE", "README.md", "Makefile", "pyproject.toml",
                   "tests/conftest.py", "tests/fakes/__init__.py", "tests/test_packaging.py",
                   "tests/plugins/restyle-hello/pyproject.toml",
                   "tests/plugins/restyle-broken/src/restyle_broken/plugin.py",
                   "examples/photo.jpg", "examples/quickstart.ipynb",
                   "examples/catalog/listings.jsonl", "examples/django/manage.py",
                   "examples/fastapi/app.py", "examples/plugin/pyproject.toml",
                   "docs/getting-started.md", "bench/fanout.py", "src/restyle/py.typed"):
        assert wanted in names, f"the sdist lacks {wanted}"
    assert any(n.startswith("tests/fakes/") and n.endswith(".py") for n in names)
    assert any(n.startswith("examples/catalog/images/") for n in names)


def test_sdist_has_no_caches(dists: tuple[Path, Path]) -> None:
    junk = [n for n in _sdist_names(dists[0])
            if n.endswith((".pyc", ".pyo")) or any(
                part in {"__pycache__", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".venv",
                         ".git"} for part in n.split("/"))]
    assert not junk


def test_wheel_is_only_the_library(dists: tuple[Path, Path]) -> None:
    with zipfile.ZipFile(dists[1]) as zf:
        names = zf.namelist()
    assert {name.split("/", 1)[0] for name in names} == {
        "restyle", f"restyle-{restyle.__version__}.dist-info"}
    assert "restyle/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_metadata_names_license_classifiers_and_urls(dists: tuple[Path, Path]) -> None:
    meta = _wheel_metadata(dists[1])
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("License-File") == ["LICENSE"]
    classifiers = meta.get_all("Classifier") or []
    for wanted in ("Typing :: Typed", "Operating System :: OS Independent",
                   *(f"Programming Language :: Python :: 3.{minor}" for minor in range(10, 14))):
        assert wanted in classifiers
    assert any(c.startswith("Development Status :: ") for c in classifiers)
    assert any(c.startswith("Intended Audience :: ") for c in classifiers)
    assert any(c.startswith("Topic :: ") for c in classifiers)
    assert not [c for c in classifiers if c.startswith("License :: ")]  # the expression says it
    urls = dict(u.split(", ", 1) for u in meta.get_all("Project-URL") or [])
    assert set(urls) >= {"Homepage", "Documentation", "Source", "Issues"}
    assert all(url.startswith(REPOSITORY) for url in urls.values()), urls


def test_development_tools_are_not_an_extra(dists: tuple[Path, Path]) -> None:
    meta = _wheel_metadata(dists[1])
    extras = set(meta.get_all("Provides-Extra") or [])
    assert "dev" not in extras and "examples" not in extras
    assert {"google", "aws", "gemini", "openai", "all"} <= extras
    requires = " ".join(meta.get_all("Requires-Dist") or [])
    for tool in ("pytest", "ruff", "mypy", "django", "moto", "twine"):
        assert tool not in requires


def test_sdist_and_wheel_pass_twine_check(dists: tuple[Path, Path]) -> None:
    pytest.importorskip("twine", reason="`twine` is not installed (it is in the dev group)")
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, dists)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_package_and_a_user_script_pass_mypy_strict() -> None:
    """Users type-check their code against restyle under ``mypy --strict``; restyle
    itself passes it too."""
    pytest.importorskip("mypy")
    root = Path(__file__).resolve().parent.parent
    script = Path(__file__).resolve().parent / "typing" / "user_script.py"
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--follow-imports=silent",
         str(root / "src" / "restyle"), str(script)],
        cwd=root, capture_output=True, text=True, timeout=600,
        env={**os.environ, "MYPYPATH": str(root / "src")},
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_demo_installs_only_the_library_and_lists_what_it_installed(
    tmp_path: Path,
) -> None:
    """`make demo-install` in a fresh virtual environment: the library and its
    default dependencies only (no extras, no dev group), with pip's progress
    shown and a list of what was installed. The fresh environment sees this
    one's packages (a .pth file), so nothing is downloaded: pip resolves the
    same requirements and installs only what is missing, restyle itself."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    if importlib.util.find_spec("setuptools") is None:
        pytest.skip("setuptools (the build backend, in the dev group) is not installed")
    fresh = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(fresh)], check=True)
    site = next((fresh / "lib").glob("python3*/site-packages"))
    ours = next(p for p in map(Path, sys.path) if p.name == "site-packages" and p.is_dir()
                and (p / "numpy").is_dir())
    (site / "ours.pth").write_text(f"{ours}\n")
    # pip runs from the environment it installs into, as the Makefile's $(BIN)/python -m pip.
    (site / "pip.pth").write_text(f"{Path(__import__('pip').__file__).parent.parent}\n")
    # (pip reads PIP_NO_BUILD_ISOLATION=0 as --no-build-isolation.)
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0",
           "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    planned = subprocess.run(["make", "-n", "demo", f"VENV={fresh}"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=60)
    installs = [line for line in planned.stdout.splitlines() if " pip install " in line]
    assert len(installs) == 1 and installs[0].endswith(" -e ."), planned.stdout
    done = subprocess.run(["make", "demo-install", f"VENV={fresh}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "== installing restyle for the demo" in done.stdout
    listed = next(line for line in done.stdout.splitlines() if line.startswith("installed:"))
    assert listed == f"installed: restyle {restyle.__version__}"
    own = {p.name.split("-")[0].lower() for p in site.iterdir()}
    assert not own & {"django", "fastapi", "ray", "moto", "mypy", "pytest", "boto3"}
    assert (fresh / "bin" / "restyle").is_file()


def test_clean_keeps_the_environment_and_the_demo_keeps_a_catalog_per_model() -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")

    def planned(*args: str) -> str:
        done = subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True,
                              timeout=60, env={**os.environ, "RESTYLE_MODEL": ""})
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert ".venv" not in planned("clean") and "rm -rf .venv" in planned("distclean")
    assert ".restyle-demo" in planned("clean")
    default = planned("demo", "VENV=/nonexistent/venv")
    other = planned("demo", "VENV=/nonexistent/venv", "RESTYLE_MODEL=local-dir:/models/tiny")
    assert "--catalog '.restyle-demo/catalog-ViT-B-32_laion2b_s34b_b79k'" in default
    assert "--catalog '.restyle-demo/catalog-local-dir__models_tiny'" in other
    assert "RESTYLE_MODEL='local-dir:/models/tiny'" in other

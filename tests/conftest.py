"""Shared fixtures (a tiny open_clip model built locally, the sample catalog, a TLS
certificate) and a helper to wait for what other threads do."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SAMPLE_PHOTO = EXAMPLES / "photo.jpg"
SAMPLE_LISTINGS = EXAMPLES / "catalog" / "listings.jsonl"
PLUGINS = Path(__file__).parent / "plugins"

# A 2-layer ViT of width 64 on 64-pixel images and a 2-layer text tower:
# the real architecture and code path, at a size that runs in milliseconds.
TINY_MODEL_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


@pytest.fixture(autouse=True)
def _isolated_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Keep tests away from the developer's own catalog, plugins and settings."""
    for name in ("RESTYLE_MODEL", "RESTYLE_WEIGHTS", "RESTYLE_CATALOG", "RESTYLE_EXPERTS",
                 "RESTYLE_MARKETPLACES", "RESTYLE_SYNTHESIZER", "RESTYLE_ENCODER",
                 "RESTYLE_LOAD_PLUGINS", "RESTYLE_DEVICE", "RESTYLE_PRECISION",
                 "RESTYLE_MINIMUM_COMPS", "RESTYLE_HALF_LIFE_DAYS", "RESTYLE_NO_LOG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RESTYLE_HOME", str(tmp_path_factory.mktemp("restyle-home")))
    monkeypatch.setenv("RESTYLE_DEVICE", "cpu")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local open_clip model directory (config + weights), as a user would have."""
    import open_clip
    import torch

    directory = tmp_path_factory.mktemp("tiny-clip")
    config = {"model_cfg": TINY_MODEL_CFG,
              "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                                 "std": [0.26862954, 0.26130258, 0.27577711]}}
    (directory / "open_clip_config.json").write_text(json.dumps(config))
    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_MODEL_CFG)
    torch.save(model.state_dict(), directory / "open_clip_pytorch_model.bin")
    return directory


@pytest.fixture(scope="session")
def tiny_model_spec(tiny_model_dir: Path) -> str:
    return f"local-dir:{tiny_model_dir}"


@pytest.fixture
def tiny_encoder(tiny_model_spec: str):
    from restyle.encoders.openclip import OpenClipEncoder

    return OpenClipEncoder(tiny_model_spec, device="cpu")


@pytest.fixture(scope="session")
def sample_catalog_dir(tiny_model_spec: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample catalog built once with the tiny model."""
    from restyle import Engine
    from restyle.encoders.openclip import OpenClipEncoder

    directory = tmp_path_factory.mktemp("sample-catalog") / "catalog"
    engine = Engine(encoder=OpenClipEncoder(tiny_model_spec, device="cpu"), catalog=directory,
                    experts=[], marketplaces=[], load_entrypoints=False)
    report = engine.build_catalog(SAMPLE_LISTINGS, progress=False)
    assert report.added == 12 and not report.rejected
    engine.catalog.close()
    return directory


@pytest.fixture
def catalog_copy(sample_catalog_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the sample catalog that a test may change."""
    target = tmp_path / "catalog"
    shutil.copytree(sample_catalog_dir, target)
    return target


@pytest.fixture
def install_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str | Path], None]]:
    """Make a plugin project (a name under tests/plugins/, or a path) importable with
    its dist-info, laid out as pip lays it out in site-packages."""
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    installed: list[str] = []

    def install(project: str | Path) -> None:
        root = PLUGINS / project if isinstance(project, str) else project
        meta = tomllib.loads((root / "pyproject.toml").read_text())["project"]
        dist = meta["name"].replace("-", "_")
        info = site / f"{dist}-{meta['version']}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {meta['name']}\nVersion: {meta['version']}\n"
        )
        points = meta["entry-points"]["restyle"]
        (info / "entry_points.txt").write_text(
            "[restyle]\n" + "".join(f"{k} = {v}\n" for k, v in points.items())
        )
        for package in (root / "src").iterdir():
            shutil.copytree(package, site / package.name)
            installed.append(package.name)

    yield install
    for name in list(sys.modules):
        if any(name == pkg or name.startswith(pkg + ".") for pkg in installed):
            del sys.modules[name]


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A throwaway self-signed certificate and its key (PEM paths) for the fake servers:
    valid for ``images.example``, ``localhost`` and 127.0.0.1, for one day."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=images.example",
         "-addext", "subjectAltName=DNS:images.example,DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return str(cert), str(key)


def wait_until(predicate: Callable[[], object], timeout: float = 5.0) -> bool:
    """Whether ``predicate()`` became true within ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return bool(predicate())

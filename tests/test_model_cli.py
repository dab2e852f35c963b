"""``restyle model`` (list, fetch, export, verify) for a machine with no
network, ``restyle plugins`` saying which components are ready, and the help
naming the built-in components and the real default catalog."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from restyle._plugin.registry import PluginRegistry
from restyle.cli import main
from restyle.cli.arguments import BUILT_IN
from restyle.encoders.openclip import sources


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def closed_port() -> int:
    """A local port nothing listens on: a connection to it is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face cache of this test's own."""
    import huggingface_hub.constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.delenv("RESTYLE_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return cache


def plant(cache: Path, repo: str, files: dict[str, Path | bytes]) -> None:
    """``files`` in ``cache`` as huggingface_hub lays out a download of ``repo``."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    snapshot = folder / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text("0123abcd")
    for name, content in files.items():
        if isinstance(content, Path):
            shutil.copyfile(content, snapshot / name)
        else:
            (snapshot / name).write_bytes(content)


def test_fetch_fails_within_seconds_when_the_hub_cannot_be_reached(
    hub_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    import open_clip  # noqa: F401  (its import is not the wait measured)

    monkeypatch.setattr(sources, "_PROBE_ADDRESS", ("127.0.0.1", closed_port()))
    started = time.monotonic()
    code, out, err = run(capsys, "model", "fetch", "ViT-B-32/laion2b_s34b_b79k")
    assert time.monotonic() - started < 3 + 2  # the bound on the wait, plus slack
    assert code == 1 and out == ""
    assert "cannot fetch ViT-B-32/laion2b_s34b_b79k: 127.0.0.1:" in err
    assert "restyle model export ViT-B-32/laion2b_s34b_b79k DIR" in err
    assert "RESTYLE_MODEL=local-dir:DIR" in err


def test_fetch_reads_the_hub_address_from_hf_endpoint(tmp_path: Path) -> None:
    port = closed_port()
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{port}",
           "HF_HUB_CACHE": str(tmp_path), "RESTYLE_OFFLINE": "0", "HF_HUB_OFFLINE": "0"}
    proc = subprocess.run([sys.executable, "-m", "restyle", "model", "fetch",
                           "ViT-B-32/laion2b_s34b_b79k"], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1
    assert f"127.0.0.1:{port} cannot be reached (gave up after 2 s)" in proc.stderr


def test_a_cached_model_is_listed_exported_for_an_offline_machine_and_verified(
    hub_cache: Path, tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(sources, "_PROBE_ADDRESS", ("127.0.0.1", closed_port()))
    plant(hub_cache, "acme/tiny-clip", {
        "open_clip_config.json": tiny_model_dir / "open_clip_config.json",
        "open_clip_pytorch_model.bin": tiny_model_dir / "open_clip_pytorch_model.bin"})
    plant(hub_cache, "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
          {"open_clip_model.safetensors": b"weights"})

    code, out, _ = run(capsys, "model", "list", "--cached", "--json")
    assert code == 0
    assert json.loads(out) == [{"spec": "ViT-B-32/laion2b_s34b_b79k", "cached": True,
                                "repo": "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
                                "default": True}]
    code, out, _ = run(capsys, "model", "list")
    assert code == 0 and "1 of " in out and "ViT-L-14/openai" in out

    # Cached already: fetched with no network.
    code, out, _ = run(capsys, "model", "fetch", "hf-hub:acme/tiny-clip")
    assert code == 0 and "cached at" in out
    folder = tmp_path / "usb" / "tiny"
    code, out, _ = run(capsys, "model", "export", "hf-hub:acme/tiny-clip", str(folder))
    assert code == 0 and f"RESTYLE_MODEL=local-dir:{folder}" in out
    assert sorted(p.name for p in folder.iterdir()) == [
        "open_clip_config.json", "open_clip_pytorch_model.bin"]

    # The offline machine: the exported folder alone.
    monkeypatch.setenv("RESTYLE_OFFLINE", "1")
    code, out, _ = run(capsys, "model", "verify", f"local-dir:{folder}", "--json")
    assert code == 0
    verified = json.loads(out)
    assert verified["dim"] > 0 and verified["model_id"].startswith("local:tiny:")
    # Export refuses to mix a model into a folder holding something else.
    code, _, err = run(capsys, "model", "export", "hf-hub:acme/tiny-clip", str(folder))
    assert code == 1 and "the folder is not empty" in err


def test_verify_names_what_is_missing(
    hub_cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    code, _, err = run(capsys, "model", "verify", "hf-hub:acme/not-cached")
    assert code == 1 and "is not in the local cache and offline mode is on" in err


def test_plugins_json_lists_every_component_and_which_are_ready(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    secret = "sk-test-0123456789abcdefSECRET"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    for name in ("EBAY_CLIENT_ID", "EBAY_CLIENT_SECRET", "GEMINI_API_KEY", "GOOGLE_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    code, out, _ = run(capsys, "plugins", "--no-plugins", "--json")
    assert code == 0 and secret not in out
    data = json.loads(out)
    status = {(c["kind"], c["name"]): (c["status"], c["detail"]) for c in data["components"]}
    assert len(status) == 11 and data["plugins"] == []
    assert status["expert", "clip"] == ("ready", "")
    assert status["marketplace", "ebay"] == ("needs credentials",
                                             "set EBAY_CLIENT_ID and EBAY_CLIENT_SECRET")
    assert status["synthesizer", "gemini"][0] in ("needs credentials", "needs a package")
    openai = status["synthesizer", "openai-compatible"]
    assert openai[0] in ("ready", "needs a package")  # the key is set; is its package?
    code, text, _ = run(capsys, "plugins", "--no-plugins")
    assert secret not in text
    ebay = next(line for line in text.splitlines() if line.split()[:2] == ["marketplace", "ebay"])
    assert ebay.endswith("needs credentials (set EBAY_CLIENT_ID and EBAY_CLIENT_SECRET)")


def test_help_names_the_built_in_components_and_the_real_default_catalog(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    registry = PluginRegistry(load_entrypoints=False)
    for kind, names in BUILT_IN.items():
        assert sorted(names) == sorted(registry.names(kind)), kind
    monkeypatch.setenv("RESTYLE_CATALOG", "/srv/shop/catalog")
    with pytest.raises(SystemExit):
        main(["analyze", "--help"])
    text = " ".join(capsys.readouterr().out.split()).replace("- ", "-")  # unwrapped
    assert "(default: /srv/shop/catalog, from $RESTYLE_CATALOG" in text
    assert "built in: clip, catalog, google-vision, aws-rekognition" in text
    assert "built in: consensus, gemini, openai-compatible" in text
    assert "built in: catalog, ebay, ebay-sold" in text
    for action in ("stats", "check", "repair"):
        with pytest.raises(SystemExit):
            main(["catalog", action, "--help"])
        _, _, rest = capsys.readouterr().out.partition("\n\n")
        assert not rest.startswith("options:"), action  # a description comes first

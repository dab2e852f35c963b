"""The models ``restyle model`` manages: the published ones open_clip knows
and which of them are cached, a model fetched into the cache, exported to a
folder an offline machine loads as ``local-dir:DIR``, and verified by loading
it and encoding a picture. A Hub that cannot be reached fails the fetch at
once (the probe takes at most :data:`~restyle.encoders.openclip.sources.HUB_PROBE_TIMEOUT`
seconds), never after the Hub client's minute of retries."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from restyle import _settings
from restyle._errors import EncoderError
from restyle.encoders.openclip.sources import (
    _TAG_PREPROCESS,
    HUB_PROBE_TIMEOUT,
    _cached_source,
    _hub_address,
    _hub_files,
    _HubFiles,
    _reachable,
    _Source,
)
from restyle.encoders.openclip.spec import ModelSpec, _first_checkpoint, parse_model_spec

__all__ = ["KnownModel", "Verified", "export_model", "fetch_model", "known_models",
           "verify_model"]

CONFIG_NAME = "open_clip_config.json"


@dataclass(frozen=True, slots=True)
class KnownModel:
    """A published open_clip model: its spec, the Hub repository it comes
    from (None: open_clip downloads it from its own URL) and whether its
    weights are in the local cache."""

    spec: str
    repo: str | None
    cached: bool
    default: bool

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "repo": self.repo, "cached": self.cached,
                "default": self.default}


@dataclass(frozen=True, slots=True)
class Verified:
    """A model loaded and used: its id, vector dimension and the seconds it took."""

    model_id: str
    dim: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"model_id": self.model_id, "dim": self.dim, "seconds": round(self.seconds, 2)}


def known_models(*, cache_dir: str | None = None) -> list[KnownModel]:
    """Every (architecture, tag) open_clip publishes, with whether it is cached."""
    import open_clip

    found = []
    for arch, tag in open_clip.list_pretrained():
        spec = ModelSpec(arch, tag, f"{arch}/{tag}")
        try:
            files = _hub_files(spec, offline=False)
        except EncoderError:
            continue
        cached = files is not None and _cached_source(spec, files, cache_dir) is not None
        found.append(KnownModel(spec=spec.model_id, repo=files.repo if files else None,
                                cached=cached, default=spec.model_id == _settings.DEFAULT_MODEL))
    return found


def fetch_model(text: str, *, cache_dir: str | None = None) -> Path:
    """The model's files in the local cache, downloaded from the Hub unless
    they are there already; the folder (or file) they are in."""
    spec, files = _hub_model(text)
    cached = _cached_source(spec, files, cache_dir)
    if cached is not None:
        return _location(cached)
    if _settings.offline():
        raise EncoderError(f"cannot fetch {spec.model_id}: offline mode is on (RESTYLE_OFFLINE "
                           "or HF_HUB_OFFLINE)")
    address = _hub_address()
    if not _reachable(address, HUB_PROBE_TIMEOUT):
        raise EncoderError(
            f"cannot fetch {spec.model_id}: {address[0]}:{address[1]} cannot be reached "
            f"(gave up after {HUB_PROBE_TIMEOUT:g} s). For a machine with no network: run "
            f"'restyle model export {spec.model_id} DIR' on one that has it, copy DIR over, "
            "and set RESTYLE_MODEL=local-dir:DIR")
    _download(files, cache_dir)
    cached = _cached_source(spec, files, cache_dir)
    if cached is None:  # pragma: no cover - the download said it succeeded
        raise EncoderError(f"{spec.model_id} was downloaded but is not in the cache")
    return _location(cached)


def export_model(text: str, folder: str | os.PathLike[str], *,
                 cache_dir: str | None = None) -> Path:
    """The model written to ``folder`` (config and weights) for
    ``RESTYLE_MODEL=local-dir:FOLDER``, fetched first if it is not cached."""
    target = Path(folder).expanduser()
    if target.exists() and any(target.iterdir()):
        raise EncoderError(f"cannot export to {target}: the folder is not empty")
    spec = parse_model_spec(text)
    if spec.model_name.startswith("local-dir:"):
        source_dir = Path(spec.model_name[len("local-dir:"):])
        config = json.loads((source_dir / CONFIG_NAME).read_text())
        weights = _checkpoint(source_dir)
    else:
        fetch_model(text, cache_dir=cache_dir)
        spec, files = _hub_model(text)
        source = _cached_source(spec, files, cache_dir)
        assert source is not None  # fetched just now
        config, weights = _config_and_weights(source)
    target.mkdir(parents=True, exist_ok=True)
    (target / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
    name = ("open_clip_model.safetensors" if weights.suffix == ".safetensors"
            else "open_clip_pytorch_model.bin")
    shutil.copyfile(weights, target / name)
    return target


def verify_model(text: str) -> Verified:
    """The model loaded from this machine alone (offline: nothing downloaded)
    and a picture encoded; an EncoderError saying what is missing otherwise."""
    import numpy as np
    from PIL import Image

    from restyle.encoders.openclip.encoder import OpenClipEncoder

    started = time.monotonic()
    encoder = OpenClipEncoder(text, device="cpu", offline=True)
    vector = encoder.encode_images([Image.new("RGB", (64, 64), (120, 90, 60))])[0]
    if not np.all(np.isfinite(vector)) or abs(float(np.linalg.norm(vector)) - 1) > 1e-2:
        raise EncoderError(f"model {text} loaded but gave no usable vector")
    return Verified(model_id=encoder.model_id, dim=int(vector.shape[0]),
                    seconds=time.monotonic() - started)


def _hub_model(text: str) -> tuple[ModelSpec, _HubFiles]:
    spec = parse_model_spec(text)
    files = _hub_files(spec, offline=False)
    if files is None:
        raise EncoderError(f"{text} is not a model on the Hugging Face Hub: nothing to fetch "
                           "(a local model, untrained weights, or weights from open_clip's "
                           "own URL)")
    return spec, files


def _download(files: _HubFiles, cache_dir: str | None) -> None:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    for name in files.weights:
        try:
            hf_hub_download(files.repo, name, cache_dir=cache_dir)
            break
        except EntryNotFoundError:
            continue
    else:
        raise EncoderError(f"{files.repo} has none of the weights files {list(files.weights)}")
    if files.config:
        hf_hub_download(files.repo, CONFIG_NAME, cache_dir=cache_dir)


def _location(source: _Source) -> Path:
    if source.model_name.startswith("local-dir:"):
        return Path(source.model_name[len("local-dir:"):])
    return Path(source.pretrained or "")


def _config_and_weights(source: _Source) -> tuple[dict[str, Any], Path]:
    """What a local-dir folder holds for a model cached from the Hub: its
    config (an hf-hub model's own, else the architecture's and the tag's
    preprocessing) and its weights file."""
    if source.model_name.startswith("local-dir:"):
        folder = Path(source.model_name[len("local-dir:"):])
        return json.loads((folder / CONFIG_NAME).read_text()), _checkpoint(folder)
    import open_clip

    model_cfg = open_clip.get_model_config(source.model_name)
    if model_cfg is None:
        raise EncoderError(f"open_clip has no config for {source.model_name}")
    preprocess = {_TAG_PREPROCESS[option]: value for option, value in source.preprocess.items()}
    return {"model_cfg": model_cfg, "preprocess_cfg": preprocess}, Path(source.pretrained or "")


def _checkpoint(folder: Path) -> Path:
    found = _first_checkpoint(folder)
    if found is None:
        raise EncoderError(f"model directory {folder} has no weights file")
    return found

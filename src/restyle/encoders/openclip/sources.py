"""Where a model's weights come from: the Hugging Face Hub when it may be used
and a quick probe finds it reachable, else the files cached from it, else an
error at once (no minute of the Hub client's retries on a machine with no
network)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from restyle import _settings
from restyle._errors import EncoderError
from restyle.encoders.openclip.spec import ModelSpec

__all__ = ["HUB_PROBE_TIMEOUT"]

logger = logging.getLogger("restyle.encoders.openclip")

#: Seconds the check that the model hub can be reached may take.
HUB_PROBE_TIMEOUT = 2.0
#: (host, port) checked instead of the hub's; set by tests.
_PROBE_ADDRESS: tuple[str, int] | None = None
# The weights files open_clip looks for in a Hub repository, in its order.
_HUB_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                "open_clip_pytorch_model.bin")
# open_clip's options for what a pretrained tag's config says about preprocessing.
_TAG_PREPROCESS = {"image_mean": "mean", "image_std": "std",
                   "image_interpolation": "interpolation", "image_resize_mode": "resize_mode"}


@dataclass(frozen=True, slots=True)
class _HubFiles:
    """What a model spec downloads from one Hub repository: a weights file (the
    first of ``weights`` found) and, for ``hf-hub:`` specs, the config."""

    repo: str
    weights: tuple[str, ...]
    config: bool
    tag: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class _Source:
    """The arguments open_clip loads a model with."""

    model_name: str
    pretrained: str | None
    preprocess: dict[str, Any] = field(default_factory=dict)


def _hub_address() -> tuple[str, int]:
    """Where a download from the Hub connects first: the endpoint huggingface_hub
    uses (``HF_ENDPOINT``), or the proxy configured for it."""
    if _PROBE_ADDRESS is not None:
        return _PROBE_ADDRESS
    from huggingface_hub import constants

    endpoint = urlsplit(constants.ENDPOINT)
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (80 if endpoint.scheme == "http" else 443)
    proxy = urllib.request.getproxies().get(endpoint.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if parts.hostname:
            return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    return host, port


def _reachable(address: tuple[str, int], timeout: float) -> bool:
    """Whether a TCP connection to ``address`` opens within ``timeout`` seconds,
    name lookup included (it runs in a daemon thread: a stuck resolver is left)."""
    opened: list[bool] = []

    def connect() -> None:
        try:
            socket.create_connection(address, timeout=timeout).close()
            opened.append(True)
        except OSError:
            pass

    worker = threading.Thread(target=connect, name="restyle-hub-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    return bool(opened)


def _model_source(spec: ModelSpec, *, offline: bool | None, cache_dir: str | None) -> _Source:
    """Where open_clip loads the model from: the Hub when it may and can be
    reached, else the files cached from it, else a clear error at once.

    Without this, open_clip on a machine with no network spends about a
    minute in the Hub client's retries before it fails, or before it falls
    back to the cache it had all along.
    """
    as_named = _Source(spec.model_name, spec.pretrained)
    files = _hub_files(spec, offline=offline)
    if files is None:  # a local directory or file, or untrained weights
        return as_named
    cached = _cached_source(spec, files, cache_dir)
    if not _is_offline(offline):
        address = _hub_address()
        if _reachable(address, HUB_PROBE_TIMEOUT):
            return as_named
        if cached is None:
            raise EncoderError(
                f"cannot load model {spec.model_id}: its weights are not in the local cache "
                f"and {address[0]}:{address[1]} cannot be reached; run once with network "
                "access to cache them, or set RESTYLE_OFFLINE=1 and use a local model: "
                "RESTYLE_MODEL=local-dir:/path"
            )
        logger.info("%s:%s cannot be reached; loading %s from the local cache", *address,
                    spec.model_id)
        return cached
    if cached is not None:
        return cached
    if spec.model_name.startswith("hf-hub:"):
        raise EncoderError(
            f"model {spec.model_name} is not in the local cache and offline mode is on; "
            "run once online, or use a local model ('local-dir:/path')"
        )
    raise EncoderError(
        f"weights for {spec.model_id} are not in the local cache and offline mode is on "
        "(RESTYLE_OFFLINE or HF_HUB_OFFLINE); run once online, or use a local model "
        "('local-dir:/path' or weights=PATH)"
    )


def _hub_files(spec: ModelSpec, *, offline: bool | None) -> _HubFiles | None:
    """The Hugging Face Hub files ``spec`` loads, or None when it loads none."""
    if spec.model_name.startswith("hf-hub:"):
        return _HubFiles(spec.model_name[len("hf-hub:") :], _HUB_WEIGHTS, config=True)
    if spec.pretrained is None or os.path.isfile(spec.pretrained):
        return None
    import open_clip

    cfg = open_clip.get_pretrained_cfg(spec.model_name, spec.pretrained)
    if not cfg:
        raise EncoderError(f"model {spec.model_id!r} is not a published open_clip model")
    hub = cfg.get("hf_hub", "")
    if not hub:
        if _is_offline(offline):
            raise EncoderError(
                f"weights for {spec.model_id} are not on the Hugging Face Hub and cannot "
                "be checked offline; pass weights=PATH"
            )
        return None  # open_clip downloads them from their own URL
    repo, _, filename = hub.rstrip("/").rpartition("/") if not hub.endswith("/") else (
        hub.rstrip("/"), "", "")
    names = (filename,) if filename else _HUB_WEIGHTS
    return _HubFiles(repo, names, config=False, tag=cfg)


def _cached_source(spec: ModelSpec, files: _HubFiles, cache_dir: str | None) -> _Source | None:
    """The model from the files cached from the Hub, or None if any is missing."""
    weights = next((found for name in files.weights
                    if (found := _cached_hf(files.repo, name, cache_dir)) is not None), None)
    if weights is None:
        return None
    if files.config:
        config = _cached_hf(files.repo, "open_clip_config.json", cache_dir)
        # open_clip reads a local directory as it would the Hub repository.
        if config is None or Path(config).parent != Path(weights).parent:
            return None
        return _Source(f"local-dir:{Path(config).parent}", None)
    # A file path loses what open_clip takes from the tag: its preprocessing.
    tag = files.tag or {}
    preprocess = {option: tag[key] for option, key in _TAG_PREPROCESS.items() if key in tag}
    return _Source(spec.model_name, weights, preprocess)


def _cached_hf(repo: str, filename: str, cache_dir: str | None) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - open_clip depends on it
        return None
    found = try_to_load_from_cache(repo, filename, cache_dir=cache_dir)
    return found if isinstance(found, str) else None


def _is_offline(setting: bool | None) -> bool:
    """``setting`` where given, else whether the environment forbids downloads."""
    return setting if setting is not None else _settings.offline()

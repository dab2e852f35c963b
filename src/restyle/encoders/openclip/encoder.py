"""The ``openclip`` encoder: loads its model once per process (on the model
thread, shared by every encoder with the same spec, device and precision) and
embeds images and texts with it."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from restyle import _settings
from restyle._errors import EncoderError
from restyle._input.imaging import encoder_input
from restyle._plugin.components import Encoder
from restyle.encoders.openclip.load import create_model
from restyle.encoders.openclip.pixels import _Pixels, _preparers
from restyle.encoders.openclip.sources import _model_source
from restyle.encoders.openclip.spec import (
    _PRECISIONS,
    ModelSpec,
    cpu_has_bf16,
    parse_model_spec,
    select_device,
)
from restyle.encoders.openclip.threads import _MODEL_THREAD, _TORCH_WORK, _wait

__all__ = ["OpenClipEncoder"]

logger = logging.getLogger("restyle.encoders.openclip")


@dataclass
class _Loaded:
    model: Any
    preprocess: Any
    tokenizer: Any
    dim: int
    pixels: _Pixels | None = None


_CACHE: dict[tuple[str, str | None, str, str], _Loaded] = {}
# Loads under way (or failed: tried again on the next call), by the same key.
_LOADING: dict[tuple[str, str | None, str, str], Future[_Loaded]] = {}
_CACHE_LOCK = threading.Lock()


class OpenClipEncoder(Encoder):
    """Embeds images and texts with an open_clip model."""

    name = "openclip"

    def __init__(
        self,
        model: str | None = None,
        *,
        weights: str | os.PathLike[str] | None = None,
        device: str | None = None,
        precision: str | None = None,
        offline: bool | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        batch_size: int = 32,
    ) -> None:
        self._spec_text = model or _settings.env_str("RESTYLE_MODEL") or _settings.DEFAULT_MODEL
        self._weights = weights if weights is not None else _settings.env_str("RESTYLE_WEIGHTS")
        self._device = device or _settings.env_str("RESTYLE_DEVICE")
        self._precision = precision or _settings.env_str("RESTYLE_PRECISION")
        if self._precision is not None and self._precision not in _PRECISIONS:
            raise EncoderError(
                f"precision must be one of {sorted(_PRECISIONS)}, got {self._precision!r}"
            )
        if self._precision == "int8" and self._device not in (None, "cpu"):
            raise EncoderError(f"precision int8 runs on the CPU only, not on {self._device!r}")
        self._offline = offline
        self._cache_dir = str(cache_dir) if cache_dir is not None else None
        if batch_size < 1:
            raise EncoderError("batch_size must be at least 1")
        self.batch_size = batch_size
        self._spec: ModelSpec | None = None

    def __repr__(self) -> str:
        return f"<OpenClipEncoder {self._spec_text!r}>"

    @property
    def spec(self) -> ModelSpec:
        if self._spec is None:
            self._spec = parse_model_spec(self._spec_text, weights=self._weights)
        return self._spec

    @property
    def model_id(self) -> str:
        """The id recorded with every vector: the model's, and for the int8
        path ``int8:`` before it (its vectors are near fp32's but not the same:
        a catalog built at one is not searched with the other's unnoticed)."""
        if self.precision == "int8":
            return f"int8:{self.spec.model_id}"
        return self.spec.model_id

    @property
    def dim(self) -> int:
        return self._load().dim

    @property
    def device(self) -> str:
        return "cpu" if self._precision == "int8" else select_device(self._device)

    @property
    def precision(self) -> str:
        if self._precision:
            return self._precision
        device = self.device
        if device.startswith("cuda"):
            return "fp16"
        if device == "cpu" and cpu_has_bf16():
            return "bf16"
        return "fp32"

    def load(self) -> None:
        """Load the model now instead of on first use."""
        self._load()

    def warm_up(self) -> None:
        self.load()

    def _load(self) -> _Loaded:
        """The loaded model, shared by every encoder with the same spec, device
        and precision. One load runs on the model thread whoever asks; a call
        with a deadline waits for it only until then (see the module docstring)."""
        spec = self.spec
        key = (spec.model_name, spec.pretrained, self.device, self.precision)
        with _CACHE_LOCK:
            loaded = _CACHE.get(key)
            if loaded is not None:
                return loaded
            loading = _LOADING.get(key)
            if loading is None or (loading.done() and loading.exception() is not None):
                loading = _MODEL_THREAD.submit(self._create_and_keep, spec, key)
                _LOADING[key] = loading
        result: _Loaded = _wait(loading, f"loading model {spec.model_id}")
        return result

    def _create_and_keep(self, spec: ModelSpec,
                         key: tuple[str, str | None, str, str]) -> _Loaded:
        loaded = self._create(spec)
        with _CACHE_LOCK:
            _CACHE[key] = loaded
            _LOADING.pop(key, None)
        return loaded

    def _create(self, spec: ModelSpec) -> _Loaded:
        try:
            import open_clip
            import torch
        except ImportError as exc:  # pragma: no cover - core dependencies
            raise EncoderError(f"open_clip and torch are required: {exc}") from exc
        source = _model_source(spec, offline=self._offline, cache_dir=self._cache_dir)
        logger.info(
            "loading open_clip model %s on %s (%s)", spec.model_id, self.device, self.precision
        )
        try:
            model, preprocess = create_model(
                source.model_name, source.pretrained, device=self.device,
                precision=self.precision, cache_dir=self._cache_dir,
                preprocess=source.preprocess)
            tokenizer = open_clip.get_tokenizer(source.model_name, cache_dir=self._cache_dir)
        except Exception as exc:  # open_clip raises many kinds; users need one
            raise EncoderError(
                f"cannot load model {spec.model_id}: {type(exc).__name__}: {exc}. "
                "If this machine is offline, run once with network access to cache the "
                "weights, or pass a local model ('local-dir:/path' or weights=PATH)"
            ) from exc
        with torch.inference_mode():
            dim = int(model.encode_text(tokenizer(["a"]).to(self.device)).shape[-1])
        return _Loaded(model=model, preprocess=preprocess, tokenizer=tokenizer, dim=dim,
                       pixels=_Pixels.of(preprocess))

    # -- encoding --------------------------------------------------------------

    @property
    def input_side(self) -> int | None:
        """The side of the square the model sees, read from the model's
        configuration without loading its weights; None where only the loaded
        model can tell (an ``hf-hub:`` model not loaded yet)."""
        name = self.spec.model_name
        with _CACHE_LOCK:
            # Any loaded copy of the model says (another precision or device too).
            loaded = next((v for key, v in _CACHE.items() if key[0] == name), None)
        if loaded is not None:
            return _visual_side(loaded.model)
        try:
            if name.startswith("hf-hub:"):
                return None
            if name.startswith("local-dir:"):
                config = json.loads(
                    (Path(name[len("local-dir:"):]) / "open_clip_config.json").read_text())
                config = config.get("model_cfg", config)
            else:
                import open_clip

                config = open_clip.get_model_config(name)
            size = (config or {}).get("vision_cfg", {}).get("image_size")
            side = size[0] if isinstance(size, (tuple, list)) else size
            return side if isinstance(side, int) and side > 0 else None
        except (OSError, ValueError, TypeError, AttributeError, EncoderError):
            return None

    @property
    def image_size(self) -> int:
        """The side of the square the model sees, in pixels."""
        return _visual_side(self._load().model)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed ``images`` in batches of ``batch_size``.

        This thread prepares each batch (resize, crop) while the model thread
        runs the one before. Images of any size and shape are accepted: each
        is first bounded by :func:`~restyle._input.imaging.encoder_input`.
        """
        loaded = self._load()
        if not images:
            return np.zeros((0, loaded.dim), dtype=np.float32)
        size = self.batch_size
        return np.concatenate(list(self.encode_image_batches(
            images[start : start + size] for start in range(0, len(images), size))))

    def encode_image_batches(
        self, batches: Iterable[Sequence[Image.Image]]
    ) -> Iterator[np.ndarray]:
        """Embed each batch of ``batches`` in turn, preparing the next batch while
        the model runs this one (a catalog build hands its batches this way)."""
        loaded = self._load()
        future: Future[Any] | None = None
        try:
            for batch in batches:
                prepared = self._prepared(loaded, batch) if batch else None
                done = None if future is None else _wait(future, "the model")
                # The model starts on this batch before the caller sees the last.
                future = None if prepared is None else _MODEL_THREAD.submit(
                    self._forward, loaded, prepared)
                if done is not None:
                    yield done
                if prepared is None:
                    yield np.zeros((0, loaded.dim), dtype=np.float32)
            if future is not None:
                last, future = _wait(future, "the model"), None
                yield last
        except EncoderError:
            raise
        except Exception as exc:
            raise EncoderError(f"cannot encode images: {type(exc).__name__}: {exc}") from exc
        finally:
            if future is not None:
                future.cancel()

    def _prepared(self, loaded: _Loaded, images: Sequence[Image.Image]) -> Any:
        """A batch ready for :meth:`_forward`: uint8 pixels for the standard
        preprocessing, else the bounded images for the model's own."""
        side = self.image_size
        pixels = loaded.pixels
        if pixels is None:
            return [encoder_input(img, side) for img in images]
        batch = np.empty((len(images), 3, pixels.side, pixels.side), dtype=np.uint8)

        with _TORCH_WORK.section():  # torch's resize runs on this thread
            if self.device == "cpu" or len(images) < 2:
                # The model's OpenMP team has the CPUs: one thread prepares.
                for i, img in enumerate(images):
                    batch[i] = pixels.crop(encoder_input(img, side))
            else:
                # An accelerator outruns one preparing thread: a few prepare the
                # batch together, resizing with Pillow, which releases the GIL.
                def fill(i: int) -> None:
                    batch[i] = pixels.crop(encoder_input(images[i], side), pillow=True)

                list(_preparers().map(fill, range(len(images))))
        return batch

    def _forward(self, loaded: _Loaded, prepared: Any) -> np.ndarray:
        """Run on the model thread: unit-length vectors of a prepared batch."""
        import torch

        dtype = next(loaded.model.parameters()).dtype
        with torch.inference_mode():
            if loaded.pixels is not None:
                batch = loaded.pixels.normalise(prepared, self.device)
            else:
                batch = torch.stack([loaded.preprocess(img) for img in prepared])
            features = loaded.model.encode_image(batch.to(self.device, dtype=dtype))
        return _normalise(features)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        loaded = self._load()
        if not texts:
            return np.zeros((0, loaded.dim), dtype=np.float32)

        def encode(chunk: list[str]) -> np.ndarray:
            tokens = loaded.tokenizer(chunk).to(self.device)
            with torch.inference_mode():
                return _normalise(loaded.model.encode_text(tokens))

        out = []
        for start in range(0, len(texts), 256):
            chunk = list(texts[start : start + 256])
            try:
                out.append(_MODEL_THREAD.run(encode, chunk, what="the model"))
            except EncoderError:
                raise
            except Exception as exc:
                raise EncoderError(f"cannot encode texts: {type(exc).__name__}: {exc}") from exc
        return np.concatenate(out)


def _normalise(features: Any) -> np.ndarray:
    array = features.float().cpu().numpy().astype(np.float32, copy=False)
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    result: np.ndarray = array / norms
    return result


def _visual_side(model: Any) -> int:
    """The side of the square a loaded open_clip model's vision tower sees."""
    size = getattr(model.visual, "image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)

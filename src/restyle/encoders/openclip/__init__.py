"""The ``openclip`` encoder: an open_clip model picked by one string.

Model specs:

- ``"ViT-B-32/laion2b_s34b_b79k"``: a built-in architecture plus a pretrained tag
  (downloaded on first use, then cached where open_clip and huggingface_hub
  cache weights). A bare architecture name uses its first published tag.
- ``"hf-hub:org/repo"``: a model published on the Hugging Face Hub.
- ``"local-dir:/path"`` or the path of a directory holding
  ``open_clip_config.json`` and a weights file: no network at all.
- ``weights="/path/file.safetensors"`` with an architecture name loads a local
  weights file for that architecture.

The model loads lazily, once per process per (spec, device, precision), and
is shared by every Engine that asks for it. A model from the Hugging Face Hub
is loaded from the local cache, with no request, in offline mode or when a
quick probe finds the Hub unreachable; missing weights are then an error at once.

Precision: on CUDA the weights are fp16; on CPUs with native bfloat16
instructions (AVX512-BF16 or AMX) the whole model is cast to bfloat16, which
more than doubles ViT-B-32 throughput while keeping embeddings within cosine
0.9999 of fp32 (bf16 *autocast* is avoided: it is several times slower than
fp32 for open_clip); elsewhere fp32. ``precision="fp32"`` or
``RESTYLE_PRECISION=fp32`` turns the fast path off.

Threads: every model call runs on one daemon thread of this module (see
:class:`_ModelThread`), and the standard open_clip preprocessing (shortest-side
resize, centre crop, normalise) is done on uint8 pixels by the calling thread,
which prepares the next batch while the model runs the current one.

Deadlines and exit: a call made by an Engine waits for the model (its loading,
or the batch it asked for) only until the call's deadline, then raises an
:class:`~restyle.EncoderError` and returns; the work goes on on the model
thread and its result is kept (a model loaded late is there for the next
call), so one overrun never makes the encoder *busy*. When the interpreter
shuts down, no new torch work starts and the exit waits for the work in
progress (one batch, or a model load; at most :data:`EXIT_WAIT_SECONDS`):
torch work still running on a daemon thread as the interpreter finalises
aborts the process ("terminate called without an active exception").
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import queue
import socket
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

from restyle import _settings
from restyle._errors import EncoderError
from restyle._input.imaging import encoder_input
from restyle._plugin.components import CALL_DEADLINE, Encoder
from restyle._plugin.hookspecs import hookimpl

__all__ = ["ModelSpec", "OpenClipEncoder", "cpu_has_bf16", "parse_model_spec", "select_device"]

logger = logging.getLogger("restyle.encoders.openclip")

_PRECISIONS = {"fp32", "fp16", "bf16"}
# Low precision casts the whole model (open_clip's "pure_*"): its default
# mixed mode keeps fp32 islands that cost more in conversions than they save.
_OPEN_CLIP_PRECISION = {"fp32": "fp32", "fp16": "pure_fp16", "bf16": "pure_bf16"}


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A parsed model string: what to pass to open_clip and the id to record."""

    model_name: str
    pretrained: str | None
    model_id: str


def parse_model_spec(spec: str, *, weights: str | os.PathLike[str] | None = None) -> ModelSpec:
    """Parse a model string (see the module docstring) into a :class:`ModelSpec`."""
    spec = spec.strip()
    if not spec:
        raise EncoderError("the model spec is empty")
    if spec.startswith("hf-hub:"):
        return ModelSpec(spec, None, spec)
    local: Path | None = None
    if spec.startswith("local-dir:"):
        local = Path(spec[len("local-dir:") :]).expanduser()
    elif os.sep in spec and Path(spec).expanduser().is_dir():
        local = Path(spec).expanduser()
    if local is not None:
        config = local / "open_clip_config.json"
        if not config.is_file():
            raise EncoderError(f"model directory {local} has no open_clip_config.json")
        checkpoint = _first_checkpoint(local)
        if checkpoint is None:
            raise EncoderError(f"model directory {local} has no weights file")
        fingerprint = _fingerprint(config, checkpoint)
        return ModelSpec(f"local-dir:{local.resolve()}", None, f"local:{local.name}:{fingerprint}")
    arch, _, tag = spec.partition("/")
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise EncoderError(f"weights file not found: {path}")
        return ModelSpec(arch, str(path), f"{arch}/file:{path.name}:{_fingerprint(path)}")
    if tag == "random":  # untrained weights: for benchmarks and tests only
        return ModelSpec(arch, None, f"{arch}/random")
    if not tag:
        tag = _default_tag(arch)
    return ModelSpec(arch, tag, f"{arch}/{tag}")


def _default_tag(arch: str) -> str:
    import open_clip

    if arch not in open_clip.list_models():
        raise EncoderError(
            f"unknown model architecture {arch!r}; see open_clip.list_models(), "
            "or use 'hf-hub:org/repo' or 'local-dir:/path'"
        )
    tags = open_clip.list_pretrained_tags_by_model(arch)
    if not tags:
        raise EncoderError(f"model {arch!r} has no published weights; pass weights=PATH")
    return "laion2b_s34b_b79k" if "laion2b_s34b_b79k" in tags else str(tags[0])


def _first_checkpoint(directory: Path) -> Path | None:
    for pattern in ("*.safetensors", "*.bin", "*.pth", "*.pt"):
        found = sorted(directory.glob(pattern))
        if found:
            return found[0]
    return None


def _fingerprint(*paths: Path) -> str:
    # Size plus the first 4 MiB tells different weight files apart without
    # reading gigabytes on every start.
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.stat().st_size).encode())
        with path.open("rb") as fh:
            digest.update(fh.read(4 * 1024 * 1024))
    return digest.hexdigest()[:12]


def select_device(requested: str | None = None) -> str:
    """``requested`` if given, else CUDA, then Apple MPS, then CPU."""
    import torch

    if requested:
        return requested
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


_BF16: bool | None = None


def cpu_has_bf16() -> bool:
    """True when this CPU runs bfloat16 matrix maths natively (AVX512-BF16, AMX, ARM BF16)."""
    global _BF16
    if _BF16 is None:
        import torch

        try:
            supported = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            supported = False
        if supported and sys.platform.startswith("linux"):
            # torch's check accepts any AVX512 CPU, which only emulates bf16.
            try:
                flags = Path("/proc/cpuinfo").read_text(errors="replace").split()
            except OSError:
                flags = []
            supported = "avx512_bf16" in flags or "amx_bf16" in flags or "bf16" in flags
        _BF16 = supported
    return _BF16


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


#: Longest the interpreter's exit waits for torch work in progress, in seconds.
EXIT_WAIT_SECONDS = 120.0


class _TorchWork:
    """Counts the torch work running on this module's threads, so that the
    interpreter's exit can wait for it (see the module docstring): torch code
    that releases the GIL and takes it back while the interpreter finalises
    makes a daemon thread unwind through C++ and aborts the process."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running = 0
        self.closing = False

    @contextmanager
    def section(self) -> Iterator[None]:
        with self._cond:
            if self.closing:
                raise EncoderError("the encoder is not available: the interpreter is exiting")
            self._running += 1
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()

    def drain(self, timeout: float = EXIT_WAIT_SECONDS) -> bool:
        """Start no more work; wait for the work running. True when none is left."""
        with self._cond:
            self.closing = True
            return self._cond.wait_for(lambda: self._running == 0, timeout)


_TORCH_WORK = _TorchWork()
# Run at interpreter exit before daemon threads are frozen, as concurrent.futures does.
with suppress(AttributeError, RuntimeError):  # other interpreters; already exiting
    threading._register_atexit(_TORCH_WORK.drain)  # type: ignore[attr-defined]


_RETURN_SECONDS = 0.1


def _wait(future: Future[Any], what: str) -> Any:
    """``future``'s result, waited for until the deadline of the component call
    running on this thread (without one, for as long as it takes). At the
    deadline the work is left to finish on its own and EncoderError raised."""
    deadline = CALL_DEADLINE.get(None)
    # A little before the deadline, so the call has returned when its caller stops waiting.
    timeout = None if deadline is None or deadline == float("inf") else max(
        0.0, deadline - _RETURN_SECONDS - time.monotonic())
    try:
        return future.result(timeout)
    except FutureTimeout:
        raise EncoderError(f"{what} did not finish within the call's deadline; it goes on "
                           "in the background") from None
    except CancelledError:
        raise EncoderError(f"{what} was cancelled") from None


class _ModelThread:
    """The one thread on which this module runs its models.

    torch's CPU operators run on OpenMP, which gives every thread that starts
    parallel work its own team of worker threads. Once a process holds more of
    them than it has CPUs, OpenMP puts them to sleep between operators instead
    of letting them spin, and a one-photo forward pass of ViT-B-32 takes half as
    long again. Loading and running every model on this thread keeps a single
    team however many threads ask for embeddings, and runs concurrent requests
    one after another instead of fighting over the same cores.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any], int | None]] = (
            queue.SimpleQueue())
        self._thread: threading.Thread | None = None

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        """``fn(*args)`` started on the model thread (at once when called from it)."""
        if args:
            fn = functools.partial(fn, *args)
        future: Future[Any] = Future()
        if threading.current_thread() is self._thread:  # a model call inside one
            _settle(future, fn)
            return future
        with self._lock:
            if self._thread is None or not self._thread.is_alive():  # first use, or forked
                self._thread = threading.Thread(target=self._work, name="restyle-model",
                                                daemon=True)
                self._thread.start()
        self._jobs.put((fn, future, _torch_threads()))
        return future

    def run(self, fn: Callable[..., Any], *args: Any, what: str = "the model") -> Any:
        """``fn(*args)`` run on the model thread; waits for it until the
        deadline of the component call running on this thread, if any."""
        return _wait(self.submit(fn, *args), what)

    def _work(self) -> None:
        while True:
            fn, future, threads = self._jobs.get()
            if future.set_running_or_notify_cancel():
                try:
                    with _TORCH_WORK.section():
                        _follow_torch_threads(threads)
                        _settle(future, fn)
                except EncoderError as exc:  # exiting: the job is not started
                    future.set_exception(exc)


def _torch_threads() -> int | None:
    """The OpenMP team size torch uses on the calling thread (None before torch
    is imported). OpenMP keeps one per thread: ``torch.set_num_threads`` on the
    application's thread does not reach a thread that was already running."""
    torch = sys.modules.get("torch")
    return None if torch is None else int(torch.get_num_threads())


def _follow_torch_threads(wanted: int | None) -> None:
    """Give the model thread the team size of the thread that asked for the work."""
    if wanted is not None and wanted != _torch_threads():
        sys.modules["torch"].set_num_threads(wanted)


def _visual_side(model: Any) -> int:
    """The side of the square a loaded open_clip model's vision tower sees."""
    size = getattr(model.visual, "image_size", 224)
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def _settle(future: Future[Any], fn: Callable[[], Any]) -> None:
    try:
        future.set_result(fn())
    except BaseException as exc:  # handed to the caller, which decides
        future.set_exception(exc)


_MODEL_THREAD = _ModelThread()


@functools.cache
def _preparers() -> ThreadPoolExecutor:
    """Threads that resize and crop a batch for a model on an accelerator, one
    image each at a time, with Pillow (which releases the GIL and starts no
    OpenMP team: torch's resize would start one of every CPU in each thread)."""
    return ThreadPoolExecutor(max_workers=max(1, min(8, (os.cpu_count() or 2) - 1)),
                              thread_name_prefix="restyle-prepare")


@dataclass(frozen=True, slots=True)
class _Pixels:
    """open_clip's standard preprocessing (shortest side resized to ``side``,
    centre crop, normalise), done on uint8 pixels: torch's antialiased uint8
    resize is several times faster than Pillow's and within one level of it."""

    side: int
    mode: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def of(cls, preprocess: Any) -> _Pixels | None:
        """The standard steps read from ``preprocess``; None for anything else."""
        from torchvision import transforms

        steps = list(getattr(preprocess, "transforms", ()))
        # Older open_clip converts to RGB with a plain function, newer with a class.
        names = [getattr(s, "__name__", type(s).__name__) for s in steps]
        if len(steps) != 5 or names[2] not in ("MaybeConvertMode", "_convert_to_rgb") or (
                names[3] not in ("MaybeToTensor", "ToTensor")):
            return None
        resize, crop, _, _, normalize = steps
        if not (isinstance(resize, transforms.Resize) and isinstance(crop, transforms.CenterCrop)
                and isinstance(normalize, transforms.Normalize)):
            return None
        size = resize.size if isinstance(resize.size, int) else (
            resize.size[0] if len(resize.size) == 1 else None)
        modes = {transforms.InterpolationMode.BICUBIC: "bicubic",
                 transforms.InterpolationMode.BILINEAR: "bilinear"}
        # Pillow always antialiases, so torchvision's antialias flag changes nothing here.
        if (size is None or resize.max_size is not None
                or resize.interpolation not in modes or tuple(crop.size) != (size, size)):
            return None
        return cls(side=int(size), mode=modes[resize.interpolation],
                   mean=tuple(float(m) for m in normalize.mean),
                   std=tuple(float(s) for s in normalize.std))

    def crop(self, image: Image.Image, *, pillow: bool = False) -> np.ndarray:
        """``image`` (RGB) resized and cropped: uint8, shape (3, side, side).
        ``pillow`` resizes with Pillow, as torchvision's Resize does a PIL image."""
        import torch
        import torch.nn.functional as functional

        width, height = image.size
        side = self.side
        # torchvision's rounding, so the pixels match its Resize and CenterCrop.
        if width <= height:
            new_w, new_h = side, int(side * height / width)
        else:
            new_w, new_h = int(side * width / height), side
        if pillow and (new_w, new_h) != (width, height):
            method = Image.Resampling.BICUBIC if self.mode == "bicubic" else (
                Image.Resampling.BILINEAR)
            image = image.resize((new_w, new_h), method)
            width, height = new_w, new_h
        pixels = np.array(image, dtype=np.uint8)
        if (new_w, new_h) == (width, height):
            chw = pixels.transpose(2, 0, 1)
        else:
            # One image at a time: no batch to split, so no OpenMP team on this thread.
            tensor = torch.from_numpy(pixels).permute(2, 0, 1).unsqueeze(0)
            chw = functional.interpolate(tensor, size=(new_h, new_w), mode=self.mode,
                                         antialias=True)[0].numpy()
        top, left = round((new_h - side) / 2.0), round((new_w - side) / 2.0)
        cropped: np.ndarray = chw[:, top : top + side, left : left + side]
        return cropped

    def normalise(self, batch: np.ndarray, device: str = "cpu") -> Any:
        """A uint8 batch as ToTensor and Normalize make it, in the same float
        steps, on ``device`` (an accelerator is sent the uint8 pixels, a
        quarter of the bytes, and does the arithmetic)."""
        import torch

        pixels = torch.from_numpy(batch)
        if device != "cpu":
            pixels = pixels.to(device)
        mean = torch.tensor(self.mean, device=pixels.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=pixels.device).view(1, -1, 1, 1)
        return pixels.float().div_(255).sub_(mean).div_(std)


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
        return self.spec.model_id

    @property
    def dim(self) -> int:
        return self._load().dim

    @property
    def device(self) -> str:
        return select_device(self._device)

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
        source = self._source(spec)
        logger.info(
            "loading open_clip model %s on %s (%s)", spec.model_id, self.device, self.precision
        )
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                source.model_name,
                pretrained=source.pretrained,
                device=self.device,
                precision=_OPEN_CLIP_PRECISION[self.precision],
                cache_dir=self._cache_dir,
                **source.preprocess,
            )
            tokenizer = open_clip.get_tokenizer(source.model_name, cache_dir=self._cache_dir)
        except Exception as exc:  # open_clip raises many kinds; users need one
            raise EncoderError(
                f"cannot load model {spec.model_id}: {type(exc).__name__}: {exc}. "
                "If this machine is offline, run once with network access to cache the "
                "weights, or pass a local model ('local-dir:/path' or weights=PATH)"
            ) from exc
        model.eval()
        with torch.inference_mode():
            dim = int(model.encode_text(tokenizer(["a"]).to(self.device)).shape[-1])
        return _Loaded(model=model, preprocess=preprocess, tokenizer=tokenizer, dim=dim,
                       pixels=_Pixels.of(preprocess))

    def _source(self, spec: ModelSpec) -> _Source:
        """Where open_clip loads the model from: the Hub when it may and can be
        reached, else the files cached from it, else a clear error at once.

        Without this, open_clip on a machine with no network spends about a
        minute in the Hub client's retries before it fails, or before it falls
        back to the cache it had all along.
        """
        as_named = _Source(spec.model_name, spec.pretrained)
        files = self._hub_files(spec)
        if files is None:  # a local directory or file, or untrained weights
            return as_named
        offline = self._offline if self._offline is not None else _settings.offline()
        cached = self._cached_source(spec, files)
        if not offline:
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

    def _hub_files(self, spec: ModelSpec) -> _HubFiles | None:
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
            offline = self._offline if self._offline is not None else _settings.offline()
            if offline:
                raise EncoderError(
                    f"weights for {spec.model_id} are not on the Hugging Face Hub and cannot "
                    "be checked offline; pass weights=PATH"
                )
            return None  # open_clip downloads them from their own URL
        repo, _, filename = hub.rstrip("/").rpartition("/") if not hub.endswith("/") else (
            hub.rstrip("/"), "", "")
        names = (filename,) if filename else _HUB_WEIGHTS
        return _HubFiles(repo, names, config=False, tag=cfg)

    def _cached_source(self, spec: ModelSpec, files: _HubFiles) -> _Source | None:
        """The model from the files cached from the Hub, or None if any is missing."""
        weights = next((found for name in files.weights
                        if (found := self._cached_hf(files.repo, name)) is not None), None)
        if weights is None:
            return None
        if files.config:
            config = self._cached_hf(files.repo, "open_clip_config.json")
            # open_clip reads a local directory as it would the Hub repository.
            if config is None or Path(config).parent != Path(weights).parent:
                return None
            return _Source(f"local-dir:{Path(config).parent}", None)
        # A file path loses what open_clip takes from the tag: its preprocessing.
        tag = files.tag or {}
        preprocess = {option: tag[key] for option, key in _TAG_PREPROCESS.items() if key in tag}
        return _Source(spec.model_name, weights, preprocess)

    def _cached_hf(self, repo: str, filename: str) -> str | None:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # pragma: no cover - open_clip depends on it
            return None
        found = try_to_load_from_cache(repo, filename, cache_dir=self._cache_dir)
        return found if isinstance(found, str) else None

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


@hookimpl
def register_encoders(register: Any) -> None:
    register(OpenClipEncoder())

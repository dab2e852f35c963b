"""What model, where, at what precision: a model string parsed into what
open_clip is asked for and the id recorded with every vector (see the package
docstring for the strings), the device chosen, and whether this CPU runs
bfloat16 natively."""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from restyle._errors import EncoderError

__all__ = ["ModelSpec", "cpu_has_bf16", "parse_model_spec", "select_device"]

_PRECISIONS = {"fp32", "fp16", "bf16", "int8"}
# Low precision casts the whole model (open_clip's "pure_*"): its default
# mixed mode keeps fp32 islands that cost more in conversions than they save.
# int8 is made from the fp32 model (see ``quantize``).
_OPEN_CLIP_PRECISION = {"fp32": "fp32", "fp16": "pure_fp16", "bf16": "pure_bf16",
                        "int8": "fp32"}


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


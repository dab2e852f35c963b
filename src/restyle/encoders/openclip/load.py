"""An open_clip model made from its weights file without a second copy of
them: the architecture is built on the meta device (no random initialisation,
no memory), the checkpoint is mapped from disk (``torch.load(mmap=True)`` or
safetensors' own mapping) and its tensors become the model's parameters as
they are (``load_state_dict(assign=True)``).

open_clip's own loading builds a randomly initialised model, reads the whole
checkpoint into memory and copies it into the model: two copies of the
weights at its peak, and seconds of initialisation thrown away. Here an fp32
model on the CPU runs on the mapped file's pages themselves (shared by every
process that loads the same file); a model cast to another precision or moved
to an accelerator lets go of the mapping once converted. A checkpoint this
cannot take as it is (another layout, which open_clip converts) is loaded by
open_clip's own path.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any

from restyle.encoders.openclip.spec import _OPEN_CLIP_PRECISION, _first_checkpoint

__all__ = ["create_model"]

logger = logging.getLogger("restyle.encoders.openclip")


# The models being built without weights here: open_clip's warning that such a
# model "initialized randomly" is wrong for them (their weights come next).
_BUILDING: set[str] = set()


class _NotRandom(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (_BUILDING and record.msg.__class__ is str and any(
            record.msg == f"No pretrained weights loaded for model '{name}'. Model "
            "initialized randomly." for name in _BUILDING))


logging.getLogger().addFilter(_NotRandom())


def create_model(model_name: str, pretrained: str | None, *, device: str, precision: str,
                 cache_dir: str | None, preprocess: dict[str, Any]) -> tuple[Any, Any]:
    """The model (in eval mode, at ``precision`` on ``device``) and its preprocessing."""
    import open_clip

    checkpoint = _local_checkpoint(model_name, pretrained)
    made = None if checkpoint is None else _from_checkpoint(
        model_name, checkpoint, device=device, precision=precision, cache_dir=cache_dir,
        preprocess=preprocess)
    if made is None:
        model, _, transform = open_clip.create_model_and_transforms(
            model_name, pretrained=pretrained, device="cpu" if precision == "int8" else device,
            precision=_OPEN_CLIP_PRECISION[precision], cache_dir=cache_dir, **preprocess)
        made = model, transform
        if precision == "int8":
            from restyle.encoders.openclip.quantize import quantize_int8

            quantize_int8(model.eval())
    made[0].eval()
    return made


def _local_checkpoint(model_name: str, pretrained: str | None) -> Path | None:
    """The weights file of a local model (a folder, or a file given as the
    pretrained weights), when it is one this module maps."""
    if model_name.startswith("local-dir:"):
        found = _first_checkpoint(Path(model_name[len("local-dir:"):]))
    elif pretrained is not None and Path(pretrained).is_file():
        found = Path(pretrained)
    else:
        return None
    return found if found is not None and found.suffix in (
        ".safetensors", ".bin", ".pt", ".pth") else None


def _from_checkpoint(model_name: str, checkpoint: Path, *, device: str, precision: str,
                     cache_dir: str | None, preprocess: dict[str, Any]) -> tuple[Any, Any] | None:
    """The model built on the meta device and given the mapped checkpoint's
    tensors; None where the checkpoint does not fit the model as it is."""
    import open_clip
    import torch

    lowered = precision in ("fp16", "bf16")
    _BUILDING.add(model_name)
    try:
        model, _, transform = open_clip.create_model_and_transforms(
            model_name, pretrained=None, load_weights=False, device="meta",
            precision=_OPEN_CLIP_PRECISION[precision] if lowered else "fp32",
            cache_dir=cache_dir, **preprocess)
    finally:
        _BUILDING.discard(model_name)
    try:
        state = _mapped(checkpoint)
        model.load_state_dict(state, strict=True, assign=True)
        del state
        _make_buffers(model)
    except (RuntimeError, KeyError, ValueError, OSError) as exc:
        logger.info("%s is loaded by open_clip's own path: %s", checkpoint.name, exc)
        return None
    if precision == "int8":
        from restyle.encoders.openclip.quantize import quantize_int8

        quantize_int8(model)
        _own_memory(model)  # the mapped pages the int8 blocks were read from are let go
    elif lowered:
        model.to(device=device, dtype=torch.float16 if precision == "fp16" else torch.bfloat16)
    elif device != "cpu":
        model.to(device=device)
    return model, transform


def _mapped(checkpoint: Path) -> dict[str, Any]:
    """The checkpoint's tensors, mapped from the file rather than read into memory."""
    import torch

    if checkpoint.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(checkpoint), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
    state = torch.load(checkpoint, map_location="cpu", mmap=True, weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError("the checkpoint holds no state dict")
    if next(iter(state), "").startswith("module."):
        state = {key[len("module."):]: value for key, value in state.items()}
    return state


def _make_buffers(model: Any) -> None:
    """The buffers a checkpoint does not hold (not persistent), left on the
    meta device by the build, made as open_clip makes them: the text tower's
    causal attention mask. Any other one: a ValueError (open_clip's path)."""
    import torch

    for module in model.modules():
        for name, buffer in list(module.named_buffers(recurse=False)):
            if buffer is None or not buffer.is_meta:
                continue
            if name != "attn_mask" or buffer.dim() != 2:
                raise ValueError(f"the model's buffer {name!r} is not in the checkpoint")
            mask = torch.full(tuple(buffer.shape), float("-inf")).triu_(1)
            module.register_buffer(name, mask, persistent=False)
    left = [name for name, tensor in model.state_dict().items() if tensor.is_meta]
    if left:
        raise ValueError(f"the checkpoint leaves {left[:3]} unset")


def _own_memory(model: Any) -> None:
    """The model's remaining tensors copied out of the mapped file, so that the
    mapping (and the pages read from it) goes once nothing else holds it."""
    for tensor in (*model.parameters(), *model.buffers()):
        tensor.data = tensor.data.clone()
    gc.collect()  # the modules replaced may sit in reference cycles holding the mapping

"""open_clip's standard preprocessing (shortest-side resize, centre crop,
normalise) done on uint8 pixels, and the threads that prepare a batch for a
model on an accelerator."""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image


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

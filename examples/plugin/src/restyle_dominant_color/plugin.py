"""The ``dominant-color`` expert and the hook that registers it."""

from __future__ import annotations

import numpy as np

import restyle

#: Reference colours, in the words of restyle's taxonomy.
PALETTE: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 20), "white": (245, 245, 245), "grey": (128, 128, 128),
    "blue": (40, 80, 170), "navy": (20, 30, 80), "red": (190, 40, 40),
    "pink": (230, 140, 170), "green": (40, 130, 70), "yellow": (230, 210, 50),
    "orange": (230, 130, 40), "purple": (110, 50, 150), "brown": (120, 75, 40),
    "beige": (215, 195, 160),
}


class DominantColorExpert(restyle.Expert):
    """Names the colours covering most of the item, ignoring the background."""

    name = "dominant-color"
    timeout = 5.0

    def __init__(self, *, top_k: int = 2) -> None:
        self.top_k = top_k

    def examine(self, photo: restyle.Photo) -> restyle.Opinion:
        pixels = np.asarray(photo.image.resize((64, 64)), dtype=np.float32).reshape(-1, 3)
        # The border is usually background: measure it and drop pixels close to it.
        border = np.concatenate([pixels[:64], pixels[-64:]]).mean(axis=0)
        item = pixels[np.linalg.norm(pixels - border, axis=1) > 40]
        if len(item) == 0:
            item = pixels
        names = list(PALETTE)
        refs = np.array([PALETTE[n] for n in names], dtype=np.float32)
        nearest = np.argmin(np.linalg.norm(item[:, None, :] - refs[None], axis=2), axis=1)
        shares = np.bincount(nearest, minlength=len(names)) / len(item)
        labels = tuple(
            restyle.Observation(text=names[i], score=float(shares[i]), facet="color")
            for i in np.argsort(-shares)[: self.top_k]
            if shares[i] > 0
        )
        return restyle.Opinion(expert=self.name, labels=labels)


@restyle.hookimpl
def register_experts(register: restyle.RegisterExpert) -> None:
    register(DominantColorExpert())

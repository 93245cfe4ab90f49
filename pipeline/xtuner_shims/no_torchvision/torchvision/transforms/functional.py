"""Stand-in for `torchvision.transforms.functional`: only `InterpolationMode`, which XTuner imports by name."""

from __future__ import annotations

import enum

from torchvision import missing


class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


def __getattr__(name: str) -> object:
    if name.startswith("__"):
        raise AttributeError(name)
    raise missing(f"transforms.functional.{name}")

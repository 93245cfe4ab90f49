"""Stand-in for `torchvision.transforms`: importable, unusable (see pipeline/xtuner_shims/README.md)."""

from __future__ import annotations

from torchvision import missing


def __getattr__(name: str) -> object:
    if name.startswith("__"):
        raise AttributeError(name)
    raise missing(f"transforms.{name}")

"""Stand-in for `torchvision` in the XTuner training environment (see pipeline/xtuner_shims/README.md).

Only what XTuner imports at module level exists; any real use fails with an error saying what to install.
"""

from __future__ import annotations

__version__ = "0.0.0+xiyou.shim"
SHIM = True


class MissingTorchvisionError(ImportError):
    """Raised when code actually tries to use torchvision (image datasets): install the real package."""


def missing(name: str) -> MissingTorchvisionError:
    return MissingTorchvisionError(
        f"torchvision.{name} is not available: the training environment has a stand-in torchvision "
        "(pipeline/xtuner_shims) because text-only fine-tuning does not need it. Image/multimodal training needs "
        "the real package: pip install torchvision matching your torch build."
    )


def __getattr__(name: str) -> object:
    raise missing(name)

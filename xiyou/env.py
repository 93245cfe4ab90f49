"""The environment variables other code and users' scripts rely on (see DESIGN.md), read in one place."""

from __future__ import annotations

import os
from pathlib import Path

#: Where the shared data lives beside a project checkout (../shared/data); tests and the README's commands use it.
REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

BACKEND_KINDS = ("transformers", "openai", "canon")


def novel_path() -> Path | None:
    """`XIYOU_NOVEL`, else the shared novel beside the checkout when it exists, else None."""
    value = os.environ.get("XIYOU_NOVEL", "").strip()
    if value:
        return Path(value).expanduser()
    default = SHARED_DATA / "xiyouji.txt"
    return default if default.is_file() else None


def backend_kind(default: str = "transformers") -> str:
    """`XIYOU_BACKEND`: which backend the single-character apps use."""
    value = os.environ.get("XIYOU_BACKEND", "").strip().lower() or default
    if value not in BACKEND_KINDS:
        raise ValueError(f"XIYOU_BACKEND={value!r} is not a backend; use one of: {', '.join(BACKEND_KINDS)}")
    return value


def model_path_var(character_id: str) -> str:
    """The name of the variable that points a character at local weights, e.g. XIYOU_MODEL_WUKONG."""
    return f"XIYOU_MODEL_{character_id.upper()}"


def model_path(character_id: str) -> Path | None:
    """`XIYOU_MODEL_<ID>`: local weights for that character (skips the ModelScope download)."""
    value = os.environ.get(model_path_var(character_id), "").strip()
    return Path(value).expanduser() if value else None


def endpoints_path() -> Path | None:
    """`XIYOU_ENDPOINTS`: the hub's endpoints file (TOML)."""
    value = os.environ.get("XIYOU_ENDPOINTS", "").strip()
    return Path(value).expanduser() if value else None

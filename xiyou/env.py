"""The environment variables other code and users' scripts rely on (see DESIGN.md), read in one place."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, get_args

#: Where the shared data lives beside a project checkout (../shared/data); tests and the README's commands use it.
REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

#: How a character can speak: local weights, an OpenAI-compatible server, or his lines from the novel (offline).
BackendKind = Literal["transformers", "openai", "canon"]
BACKEND_KINDS: tuple[str, ...] = get_args(BackendKind)


def novel_path() -> Path | None:
    """`XIYOU_NOVEL`, else the shared novel beside the checkout when it exists, else None."""
    value = os.environ.get("XIYOU_NOVEL", "").strip()
    if value:
        return Path(value).expanduser()
    default = SHARED_DATA / "xiyouji.txt"
    return default if default.is_file() else None


def offline_offer(failed_kind: str) -> bool:
    """Whether a character whose `failed_kind` backend could not be had may be offered the offline canon mode
    instead (the app's 📖 button, `xiyou chat`'s hint): the canon is not what failed, and the novel file is here."""
    novel = novel_path()
    return failed_kind != "canon" and novel is not None and novel.is_file()


def backend_kind(default: str | None = None) -> str:
    """`XIYOU_BACKEND`: which backend the single-character apps use. Unset: "openai" when the persona-mode
    shortcut (`XIYOU_API_BASE_URL`) is set, else `default` (else "transformers", as the published demos)."""
    fallback = default or ("openai" if api_shortcut() is not None else "transformers")
    value = os.environ.get("XIYOU_BACKEND", "").strip().lower() or fallback
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


def api_shortcut() -> tuple[str, str] | None:
    """`XIYOU_API_BASE_URL` and `XIYOU_API_MODEL`: all four characters in persona mode on that model, no endpoints
    file needed (the key comes from OPENAI_API_KEY). None when XIYOU_API_BASE_URL is unset; ValueError saying what
    to set when only one of the two is."""
    base_url = os.environ.get("XIYOU_API_BASE_URL", "").strip()
    model = os.environ.get("XIYOU_API_MODEL", "").strip()
    if not base_url and not model:
        return None
    if not base_url or not model:
        missing = "XIYOU_API_MODEL (the model name, e.g. qwen2.5:7b)" if base_url else "XIYOU_API_BASE_URL (…/v1)"
        raise ValueError(f"persona mode on one model needs both XIYOU_API_BASE_URL and XIYOU_API_MODEL; set {missing}")
    return base_url, model

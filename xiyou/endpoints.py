"""Where each character's model runs: the endpoints file (TOML), one table per character id.

    [wukong]
    base_url = "http://127.0.0.1:23333/v1"
    model = "wukong"
    [bajie]
    base_url = "http://127.0.0.1:23333/v1"   # same LMDeploy server, another LoRA adapter
    model = "bajie"
    api_key_env = "BAJIE_KEY"                # optional: the variable holding the key, never the key itself
    [sanzang]
    backend = "canon"                        # or "transformers" (local weights)
    [default]                                # every character without a table of his own
    base_url = "http://127.0.0.1:11434/v1"   # e.g. Ollama: a general chat model…
    model = "qwen2.5:7b"
    prompt = "persona"                       # …prompted with the persona (the fine-tuned models: "meta")

Without a file, `XIYOU_API_BASE_URL` + `XIYOU_API_MODEL` put all four in persona mode on one model;
`configured_endpoints` applies that shortcut to the characters a file does not cover.

`XIYOU_ENDPOINTS` names the file (the hub's `--endpoints FILE` too). `load_endpoints` validates it and reports
problems with the file, the table and the field; `dump_endpoints` / `write_endpoints` write one.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from xiyou import env
from xiyou.character import load_characters
from xiyou.env import BackendKind
from xiyou.io import write_text_atomic
from xiyou.prompts import PromptMode

#: The table that applies to every character without a table of his own.
DEFAULT_TABLE = "default"


class EndpointError(ValueError):
    """The endpoints file is broken or names an unknown character; the message says where and what to do."""


class EndpointConfig(BaseModel):
    """How one character is reached.

    - `backend`: "openai" (an OpenAI-compatible server such as LMDeploy's api_server; the default), "canon"
      (offline, the character's lines from the novel) or "transformers" (local weights, `model_path` or
      XIYOU_MODEL_<ID> or ModelScope).
    - `base_url`, `model`: the server (…/v1) and the model name to ask for (LMDeploy: the LoRA adapter's name);
      `model` defaults to the character id.
    - `api_key_env`: the name of the environment variable holding the API key (keys never live in this file).
    - `timeout`: seconds to wait for the connection and between streamed chunks.
    - `send_top_k`, `send_repetition_penalty`: send LMDeploy's extra sampling fields (plain OpenAI servers
      refuse them).
    - `prompt`: "meta" (the fine-tuned models: their `meta_instruction`, exactly as trained; the default) or
      "persona" (any general chat model: the character's description, how he speaks, canon examples; see
      xiyou.prompts).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: BackendKind = "openai"
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    timeout: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=2, ge=0, le=10)
    send_top_k: bool = False
    send_repetition_penalty: bool = False
    top_k: int | None = Field(default=None, ge=1)
    model_path: str | None = None
    prompt: PromptMode = "meta"

    @model_validator(mode="after")
    def _server_needs_url(self) -> EndpointConfig:
        if self.backend == "openai":
            if not self.base_url:
                raise ValueError("backend 'openai' needs base_url (e.g. \"http://127.0.0.1:23333/v1\")")
            if not self.base_url.startswith(("http://", "https://")):
                raise ValueError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        return self


def _problems(err: ValidationError) -> str:
    out = []
    for e in err.errors():
        field = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (typo?)"
        out.append(f"field '{field}': {msg}" if field else msg)
    return "; ".join(out)


def parse_endpoints(raw: Mapping[str, object], source: str = "endpoints") -> dict[str, EndpointConfig]:
    """Validate already-parsed TOML (a mapping of character id -> table; `[default]` fills in the others)."""
    raw = dict(raw)
    default = raw.pop(DEFAULT_TABLE, None)
    known = list(load_characters())
    result: dict[str, EndpointConfig] = {}
    for cid, table in raw.items():
        if cid not in known:
            raise EndpointError(f"{source}: table [{cid}]: unknown character id; valid ids: {', '.join(known)}")
        if not isinstance(table, Mapping):
            raise EndpointError(f"{source}: '{cid}' must be a table ([{cid}] with base_url, model, …), got {table!r}")
        try:
            result[cid] = EndpointConfig.model_validate(dict(table))
        except ValidationError as e:
            raise EndpointError(f"{source}: table [{cid}]: {_problems(e)}") from None
    if default is not None:
        if not isinstance(default, Mapping):
            raise EndpointError(f"{source}: 'default' must be a table ([default] with base_url, model, …)")
        try:
            fallback = EndpointConfig.model_validate(dict(default))
        except ValidationError as e:
            raise EndpointError(f"{source}: table [{DEFAULT_TABLE}]: {_problems(e)}") from None
        result = {cid: result.get(cid, fallback) for cid in known}
    return result


def shortcut_endpoint() -> EndpointConfig | None:
    """The persona-mode shortcut: `XIYOU_API_BASE_URL` + `XIYOU_API_MODEL` (key: OPENAI_API_KEY when set), or None.

    Raises EndpointError when the variables are half set or the URL is not http(s).
    """
    try:
        shortcut = env.api_shortcut()
        if shortcut is None:
            return None
        key_env = "OPENAI_API_KEY" if os.environ.get("OPENAI_API_KEY", "").strip() else None
        base_url, model = shortcut
        return EndpointConfig(base_url=base_url, model=model, api_key_env=key_env, prompt="persona")
    except ValidationError as e:
        raise EndpointError(f"XIYOU_API_BASE_URL: {_problems(e)}") from None
    except ValueError as e:
        raise EndpointError(str(e)) from None


def configured_endpoints(path: str | Path | None = None) -> dict[str, EndpointConfig]:
    """Every character's endpoint: the file's tables (`path`, default XIYOU_ENDPOINTS; its `[default]` fills in the
    others), then the persona-mode shortcut for whoever is still without one. Characters with neither are absent."""
    path = path if path is not None else env.endpoints_path()
    configs = load_endpoints(path) if path is not None else {}
    shortcut = shortcut_endpoint()
    if shortcut is not None:
        configs = {cid: configs.get(cid, shortcut) for cid in load_characters()}
    return configs


def load_endpoints(path: str | Path) -> dict[str, EndpointConfig]:
    """Read and validate an endpoints file; errors name the file, the table and the field."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EndpointError(f"{path}: no such endpoints file (check XIYOU_ENDPOINTS / --endpoints)") from None
    except tomllib.TOMLDecodeError as e:
        raise EndpointError(f"{path}: not valid TOML: {e}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise EndpointError(f"{path}: cannot read the file: {e}") from None
    return parse_endpoints(raw, str(path))


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a valid TOML basic string


def dump_endpoints(endpoints: Mapping[str, EndpointConfig | Mapping[str, object]]) -> str:
    """TOML text for `endpoints` (only the fields that differ from the defaults, so files stay short)."""
    lines: list[str] = []
    for cid, config in endpoints.items():
        if not isinstance(config, EndpointConfig):
            config = EndpointConfig.model_validate(dict(config))
        lines.append(f"[{cid}]")
        for key, value in config.model_dump(exclude_defaults=True).items():
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def write_endpoints(path: str | Path, endpoints: Mapping[str, EndpointConfig | Mapping[str, object]]) -> Path:
    """Write an endpoints file atomically; it reads back with `load_endpoints`."""
    text = dump_endpoints(endpoints)
    parse_endpoints(tomllib.loads(text), str(path))  # refuse to write what would not load
    return write_text_atomic(path, text)

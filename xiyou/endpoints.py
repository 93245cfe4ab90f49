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
problems with the file, the table and the field in one short line (EndpointError); `dump_endpoints` /
`write_endpoints` write one. A file that is not a plain file, larger than `MAX_FILE_BYTES`, not UTF-8, nested
too deeply, or with more than `MAX_TABLES` tables or `MAX_KEYS` keys in a table is refused before validation;
strings have length limits and `timeout` must be a finite number of seconds.
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
from xiyou.redact import redact
from xiyou.validation import describe_validation_error, shorten

#: The table that applies to every character without a table of his own.
DEFAULT_TABLE = "default"

#: An endpoints file names at most a few characters; anything this large is not one.
MAX_FILE_BYTES = 256 * 1024
MAX_TABLES = 32
MAX_KEYS = 64
#: The longest error line `load_endpoints` produces.
MAX_MESSAGE_CHARS = 500


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
    base_url: str | None = Field(default=None, max_length=2048)
    model: str | None = Field(default=None, max_length=256)
    api_key_env: str | None = Field(default=None, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    timeout: float = Field(default=60.0, gt=0, le=3600, allow_inf_nan=False)
    max_retries: int = Field(default=2, ge=0, le=10)
    send_top_k: bool = False
    send_repetition_penalty: bool = False
    top_k: int | None = Field(default=None, ge=1, le=100_000)
    model_path: str | None = Field(default=None, max_length=4096)
    prompt: PromptMode = "meta"

    @model_validator(mode="after")
    def _server_needs_url(self) -> EndpointConfig:
        if self.backend == "openai":
            if not self.base_url:
                raise ValueError("backend 'openai' needs base_url (e.g. \"http://127.0.0.1:23333/v1\")")
            if not self.base_url.startswith(("http://", "https://")):
                got = shorten(redact(repr(self.base_url)))
                raise ValueError(f"base_url must start with http:// or https://, got {got}")
        return self


def parse_endpoints(raw: Mapping[str, object], source: str = "endpoints") -> dict[str, EndpointConfig]:
    """Validate already-parsed TOML (a mapping of character id -> table; `[default]` fills in the others)."""
    raw = dict(raw)
    default = raw.pop(DEFAULT_TABLE, None)
    known = list(load_characters())
    if len(raw) > MAX_TABLES:
        raise _error(f"{source}: {len(raw)} tables; an endpoints file has one per character (at most {MAX_TABLES})")
    result: dict[str, EndpointConfig] = {}
    for cid, table in raw.items():
        name = shorten(cid, 40)
        if cid not in known:
            raise _error(f"{source}: table [{name}]: unknown character id; valid ids: {', '.join(known)}")
        if not isinstance(table, Mapping):
            got = shorten(redact(repr(table)))
            raise _error(f"{source}: '{name}' must be a table ([{name}] with base_url, model, …), got {got}")
        if len(table) > MAX_KEYS:
            raise _error(f"{source}: table [{name}]: {len(table)} keys; a table has at most {MAX_KEYS}")
        try:
            result[cid] = EndpointConfig.model_validate(dict(table))
        except ValidationError as e:
            raise _error(f"{source}: table [{name}]: {redact(describe_validation_error(e))}") from None
    if default is not None:
        if not isinstance(default, Mapping):
            raise _error(f"{source}: 'default' must be a table ([default] with base_url, model, …)")
        if len(default) > MAX_KEYS:
            raise _error(f"{source}: table [{DEFAULT_TABLE}]: {len(default)} keys; a table has at most {MAX_KEYS}")
        try:
            fallback = EndpointConfig.model_validate(dict(default))
        except ValidationError as e:
            raise _error(f"{source}: table [{DEFAULT_TABLE}]: {redact(describe_validation_error(e))}") from None
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
        raise _error(f"XIYOU_API_BASE_URL: {redact(describe_validation_error(e))}") from None
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


def _error(message: str) -> EndpointError:
    """An EndpointError whose message is one line of at most MAX_MESSAGE_CHARS characters."""
    return EndpointError(shorten(" ".join(message.split()), MAX_MESSAGE_CHARS))


def load_endpoints(path: str | Path) -> dict[str, EndpointConfig]:
    """Read and validate an endpoints file; errors name the file, the table and the field."""
    path = Path(path)
    source = shorten(str(path), 200)
    try:
        if not path.is_file():  # a directory, a FIFO, /dev/zero: never read one
            what = "no such endpoints file" if not path.exists() else "not a regular file"
            raise _error(f"{source}: {what} (check XIYOU_ENDPOINTS / --endpoints)")
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as e:
        raise _error(f"{source}: cannot read the file: {e.strerror or e}") from None
    if len(data) > MAX_FILE_BYTES:
        raise _error(f"{source}: larger than {MAX_FILE_BYTES // 1024} KiB; that is not an endpoints file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        where = f"byte {data[e.start]:#04x} at offset {e.start}"
        raise _error(f"{source}: not UTF-8 text ({where}); save it as UTF-8") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise _error(f"{source}: not valid TOML: {e}") from None
    except RecursionError:
        raise _error(f"{source}: not valid TOML: nested too deeply") from None
    except (ValueError, MemoryError) as e:  # anything else the parser may raise on a hostile file
        raise _error(f"{source}: not valid TOML: {type(e).__name__}") from None
    return parse_endpoints(raw, source)


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

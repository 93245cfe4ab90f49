"""A real OpenAI-compatible server for tests: `transformers serve` on the tiny model, on a free 127.0.0.1 port.

    with transformers_serve(tiny_model_dir) as server:
        OpenAIBackend(server.base_url, server.model)...

The `transformers` executable comes from XIYOU_TESTSERVER_BIN (the Makefile sets it), else
`.venv-testserver/bin/transformers` in the repository root; tests skip with a reason when it is absent.
Quirks of the server (see the common brief): it refuses `top_k`/`repetition_penalty` (HTTP 422), names the
served model after its path argument, sends no `[DONE]`, and stops at the model's EOS only (the tiny model's
reply is then `REPLY + AFTER`, see tests/tiny_model.py).

The server runs in its own process group (xiyou/process.py); leaving the `with` block (or `stop()`) ends the whole
group. `kill()` ends it abruptly, for tests of a server dying mid-conversation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from xiyou.process import Process, free_port, http_ok

__all__ = ["ServedModel", "free_port", "http_ok", "testserver_bin", "transformers_serve"]

REPO_ROOT = Path(__file__).resolve().parent.parent


def testserver_bin() -> Path:
    """The `transformers` executable of the test-server environment; skips the test when it is absent."""
    value = os.environ.get("XIYOU_TESTSERVER_BIN", "").strip()
    path = Path(value) if value else REPO_ROOT / ".venv-testserver" / "bin" / "transformers"
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.skip(
            f"`transformers serve` is not installed at {path} (`make setup-testserver` or XIYOU_TESTSERVER_BIN)"
        )
    return path


@dataclasses.dataclass
class ServedModel:
    """A running `transformers serve`: `base_url` ends in /v1; `model` is the name to send in requests."""

    base_url: str
    model: str
    port: int
    proc: Process

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/health"


@contextlib.contextmanager
def transformers_serve(
    model_dir: str | Path | None,
    *,
    startup_timeout_s: float = 180.0,
    extra_args: tuple[str, ...] = (),
) -> Iterator[ServedModel]:
    """Run `transformers serve` on `model_dir` (preloaded, CPU) until the block ends; yield a ServedModel.

    `model_dir=None` starts it with no model: each request's `model` (a local path) then picks the model it loads,
    so several names reach one server, as several LoRA adapters of one LMDeploy server would."""
    exe = testserver_bin()
    model = str(model_dir) if model_dir is not None else ""
    log_path = Path(tempfile.mkdtemp(prefix="xiyou-serve-")) / "serve.log"
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    last_error = ""
    for _attempt in range(3):  # another process may grab the free port between our check and the bind
        port = free_port()
        cmd = [str(exe), "serve", *([model] if model else []), "--host", "127.0.0.1", "--port", str(port)]
        proc = Process.start([*cmd, "--device", "cpu", *extra_args], log_path=log_path, env=env)
        server = ServedModel(f"http://127.0.0.1:{port}/v1", model, port, proc)
        if proc.wait_ready(functools.partial(http_ok, server.health_url), startup_timeout_s) == "ready":
            try:
                yield server
            finally:
                proc.stop()
            return
        proc.stop()
        last_error = proc.log()[-3000:]
        if "address already in use" not in last_error.lower():
            break
    raise RuntimeError(f"`transformers serve {model}` did not become ready; its log ends with:\n{last_error}")

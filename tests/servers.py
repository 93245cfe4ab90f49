"""A real OpenAI-compatible server for tests: `transformers serve` on the tiny model, on a free 127.0.0.1 port.

    with transformers_serve(tiny_model_dir) as server:
        OpenAIBackend(server.base_url, server.model)...

The `transformers` executable comes from XIYOU_TESTSERVER_BIN (the Makefile sets it), else
`.venv-testserver/bin/transformers` in the repository root; tests skip with a reason when it is absent.
Quirks of the server (see the common brief): it refuses `top_k`/`repetition_penalty` (HTTP 422), names the
served model after its path argument, sends no `[DONE]`, and stops at the model's EOS only (the tiny model's
reply is then `REPLY + AFTER`, see tests/tiny_model.py).

The server runs in its own process group; leaving the `with` block (or `stop()`) ends the whole group.
`kill()` ends it abruptly, for tests of a server dying mid-conversation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class ServedModel:
    """A running `transformers serve`: `base_url` ends in /v1; `model` is the name to send in requests."""

    base_url: str
    model: str
    port: int
    process: subprocess.Popen
    log_path: Path

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.process.poll() is None

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        """End the server at once (SIGKILL to its process group), as a crash would."""
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)

    def stop(self, grace_s: float = 10.0) -> None:
        """End the server politely (SIGTERM to the group), then forcibly after `grace_s`."""
        if self.process.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        # Children may outlive the leader: make sure the whole group is gone.
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=grace_s)


def http_ok(url: str) -> bool:
    """Does `url` answer 200 right now? (Health checks of the servers and pages tests start.)"""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _ready(port: int) -> bool:
    return http_ok(f"http://127.0.0.1:{port}/health")


@contextlib.contextmanager
def transformers_serve(
    model_dir: str | Path,
    *,
    startup_timeout_s: float = 180.0,
    extra_args: tuple[str, ...] = (),
) -> Iterator[ServedModel]:
    """Run `transformers serve` on `model_dir` (preloaded, CPU) until the block ends; yield a ServedModel."""
    exe = testserver_bin()
    model = str(model_dir)
    log_dir = Path(tempfile.mkdtemp(prefix="xiyou-serve-"))
    log_path = log_dir / "serve.log"
    last_error = ""
    for _attempt in range(3):  # another process may grab the free port between our check and the bind
        port = free_port()
        cmd = [str(exe), "serve", model, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
        env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [*cmd, *extra_args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )
        server = ServedModel(f"http://127.0.0.1:{port}/v1", model, port, proc, log_path)
        deadline = time.monotonic() + startup_timeout_s
        while time.monotonic() < deadline and proc.poll() is None and not _ready(port):
            time.sleep(0.3)
        if proc.poll() is None and _ready(port):
            try:
                yield server
            finally:
                server.stop()
            return
        server.stop()
        last_error = server.log()[-3000:]
        if "address already in use" not in last_error.lower():
            break
    raise RuntimeError(f"`transformers serve {model}` did not become ready; its log ends with:\n{last_error}")

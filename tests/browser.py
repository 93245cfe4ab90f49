"""What the headless-Chromium tests share: Debian's chromium, its flags, and a Streamlit process to point it at."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from servers import http_ok

from xiyou.env import REPO_ROOT

CHROMIUM = Path("/usr/bin/chromium")
#: Headless, as root, on a machine whose network is closed: without the background-networking flags Chromium
#: keeps trying (and failing) to reach Google's services.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = REPO_ROOT / "artifacts"


def require_chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (`make system-deps` installs Debian's chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    return CHROMIUM


def _healthy(port: int) -> bool:
    return http_ok(f"http://127.0.0.1:{port}/_stcore/health")


@contextlib.contextmanager
def streamlit_process(cmd: Sequence[str], port: int, env: dict[str, str], log_path: Path) -> Iterator[str]:
    """Run a Streamlit command serving on 127.0.0.1:`port`; yield its URL once healthy; stop its whole group."""
    env = {**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", **env}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            list(cmd), cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None and not _healthy(port):
            time.sleep(0.3)
        if not _healthy(port):
            pytest.fail(f"the app did not start; its log:\n{log_path.read_text(errors='replace')[-3000:]}")
        yield f"http://127.0.0.1:{port}/"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)

"""What the headless-Chromium tests share: Debian's chromium, its flags, and a Streamlit process to point it at."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from xiyou.env import REPO_ROOT
from xiyou.process import Process, http_ok

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


@contextlib.contextmanager
def streamlit_process(cmd: Sequence[str], port: int, env: dict[str, str], log_path: Path) -> Iterator[str]:
    """Run a Streamlit command serving on 127.0.0.1:`port`; yield its URL once healthy; stop its whole group."""
    env = {**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", **env}
    proc = Process.start(cmd, log_path=log_path, env=env, cwd=REPO_ROOT)
    try:
        if proc.wait_ready(lambda: http_ok(f"http://127.0.0.1:{port}/_stcore/health"), 90) != "ready":
            pytest.fail(f"the app did not start; its log:\n{proc.log()[-3000:]}")
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.stop(grace_s=15)

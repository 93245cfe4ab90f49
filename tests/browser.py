"""What the headless-Chromium tests share: Debian's chromium, its flags, and a Streamlit process to point it at."""

from __future__ import annotations

import contextlib
import os
import sys
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

#: For `page.evaluate(ACT_UNTIL_ENABLED_JS, [act, until])`: in the page, act (click the button whose text holds
#: `act`, or type one character into the chat input when `act` is "type"), then watch frame by frame until the button
#: whose text holds `until` is enabled; returns the milliseconds it took (-1: not within 20 s). Measured inside the
#: page: Playwright's own waiting polls, which adds up to a second.
ACT_UNTIL_ENABLED_JS = """
async ([act, until]) => {
  const button = (label) => [...document.querySelectorAll('button')].find((b) => b.innerText.includes(label));
  const t0 = performance.now();
  if (act === 'type') {
    const box = document.querySelector('textarea[data-testid="stChatInputTextArea"]');
    const set = Object.getOwnPropertyDescriptor(HTMLTextAreaElement.prototype, 'value').set;
    box.focus();
    set.call(box, box.value + '字');
    box.dispatchEvent(new Event('input', { bubbles: true }));
  } else {
    button(act).click();
  }
  return await new Promise((resolve) => {
    const tick = () => {
      const b = button(until);
      if (b && !b.disabled) resolve(performance.now() - t0);
      else if (performance.now() - t0 > 20000) resolve(-1);
      else requestAnimationFrame(tick);
    };
    tick();
  });
}
"""


def require_chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (`make system-deps` installs Debian's chromium)")
    ARTIFACTS.mkdir(exist_ok=True)
    return CHROMIUM


def streamlit_command(script: str, port: int) -> list[str]:
    """`streamlit run SCRIPT` headless on 127.0.0.1:`port`, without the file watcher (skips without Streamlit)."""
    streamlit = Path(sys.executable).with_name("streamlit")
    if not streamlit.exists():
        pytest.skip(f"streamlit is not installed beside {sys.executable}")
    return [
        str(streamlit), "run", script, "--server.headless", "true", "--server.address", "127.0.0.1",
        "--server.port", str(port), "--server.fileWatcherType", "none",
    ]  # fmt: skip


@contextlib.contextmanager
def streamlit_process(
    cmd: Sequence[str],
    port: int,
    env: dict[str, str],
    log_path: Path,
    *,
    cwd: Path = REPO_ROOT,
    startup_timeout_s: float = 90,
) -> Iterator[str]:
    """Run a Streamlit command serving on 127.0.0.1:`port` from `cwd`; yield its URL once healthy; stop its whole
    group."""
    env = {**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", **env}
    proc = Process.start(cmd, log_path=log_path, env=env, cwd=cwd)
    try:
        if proc.wait_ready(lambda: http_ok(f"http://127.0.0.1:{port}/_stcore/health"), startup_timeout_s) != "ready":
            pytest.fail(f"the app did not start; its log:\n{proc.log()[-3000:]}")
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.stop(grace_s=15)

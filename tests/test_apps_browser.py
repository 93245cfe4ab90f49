"""End to end: 悟空-Chat started through the OpenXLab entry (openxlab/start.py), in headless Chromium.

Type a question, see the tiny model's reply stream into a bubble, save a screenshot to artifacts/.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import free_port
from tiny_model import TinyModel

from xiyou.env import REPO_ROOT

CHROMIUM = Path("/usr/bin/chromium")
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


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def openxlab_app(character_id: str, env: dict[str, str], log_path: Path) -> Iterator[str]:
    """Run `python openxlab/start.py <id>` on a free 127.0.0.1 port; yield its URL; stop the whole group."""
    port = free_port()
    env = dict(os.environ, **env, XIYOU_OPENXLAB_ADDRESS="127.0.0.1", XIYOU_OPENXLAB_PORT=str(port))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(REPO_ROOT / "openxlab" / "start.py"), character_id],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None and not _healthy(port):
            time.sleep(0.3)
        if not _healthy(port):
            raise RuntimeError(f"the app did not start; its log:\n{log_path.read_text(errors='replace')[-3000:]}")
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


@pytest.mark.parametrize("entry", ["start.py", "app.py"])
def test_openxlab_entries_refuse_an_unknown_character(entry: str) -> None:
    out = subprocess.run(
        [sys.executable, str(REPO_ROOT / "openxlab" / entry), "sunwukong"], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "unknown character 'sunwukong'" in out.stderr and "wukong" in out.stderr


@pytest.mark.slow
def test_chat_in_headless_chromium(tiny_model: TinyModel, tmp_path: Path) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent (`make system-deps` installs Debian's chromium)")
    from playwright.sync_api import expect, sync_playwright

    env = {"XIYOU_BACKEND": "transformers", "XIYOU_MODEL_WUKONG": str(tiny_model.path)}
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "wukong_chat.png"
    with openxlab_app("wukong", env, tmp_path / "app.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="zh-CN")
            page.goto(url)
            box = page.get_by_test_id("stChatInputTextArea")
            expect(box).to_be_visible(timeout=60_000)
            expect(page.get_by_text("悟空-Chat")).to_be_visible()
            box.fill("大圣，妖怪在哪里？")
            box.press("Enter")
            messages = page.get_by_test_id("stChatMessage")
            expect(messages.filter(has_text="大圣，妖怪在哪里？")).to_have_count(1, timeout=60_000)
            expect(messages.filter(has_text=tiny_model.reply)).to_have_count(1, timeout=60_000)
            expect(messages).to_have_count(3)  # greeting, question, reply
            expect(page.get_by_test_id("stException")).to_have_count(0)
            expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=30_000)  # the run has finished
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000

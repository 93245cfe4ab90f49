"""End to end in headless Chromium: `streamlit run hub/app.py` in canon mode, plus 猪八戒 on a slow scripted
OpenAI-compatible server so Stop can be pressed while he is talking; a screenshot at the end.

The screenshot lands in artifacts/hub.png (git-ignored) for a person to look at.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

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


SLOW_REPLY = "俺老猪这一路挑着担子，" * 12


@pytest.fixture
def slow_bajie():
    """猪八戒's server: his first reply streams two characters every 0.25 s (about 30 s), later ones are short."""
    from scripted_openai import ScriptedOpenAI

    calls: list[str] = []

    def reply(request) -> str:
        calls.append(request.last_user)
        return SLOW_REPLY if len(calls) == 1 else "俺老猪来也。"

    server = ScriptedOpenAI(reply, chunk_chars=2, chunk_delay=0.25, send_done=False)
    with server:
        yield server


@pytest.fixture
def hub_url(novel_path: Path, tmp_path: Path, slow_bajie):
    from servers import free_port

    streamlit = Path(sys.executable).with_name("streamlit")
    if not streamlit.exists():
        pytest.skip(f"streamlit is not installed beside {sys.executable}")
    port = free_port()
    endpoints = tmp_path / "endpoints.toml"
    endpoints.write_text(f'[bajie]\nbase_url = "{slow_bajie.base_url}"\nmodel = "bajie"\n', encoding="utf-8")
    env = dict(os.environ)
    env.update(
        XIYOU_NOVEL=str(novel_path), XIYOU_ENDPOINTS=str(endpoints), STREAMLIT_BROWSER_GATHER_USAGE_STATS="false"
    )
    log = tmp_path / "streamlit.log"
    cmd = [
        str(streamlit), "run", "hub/app.py", "--server.headless", "true", "--server.address", "127.0.0.1",
        "--server.port", str(port), "--server.fileWatcherType", "none",
    ]  # fmt: skip
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            time.sleep(0.3)
        else:
            pytest.fail(f"streamlit did not start; log:\n{log.read_text(errors='replace')[-3000:]}")
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.mark.slow
def test_hub_in_chromium_answers_and_renders(hub_url: str) -> None:
    if not CHROMIUM.exists() or shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (make system-deps)")
    from playwright.sync_api import expect, sync_playwright

    artifacts = REPO_ROOT / "artifacts"
    artifacts.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(hub_url)
            expect(page.get_by_role("heading", name="西游群聊")).to_be_visible(timeout=60_000)
            expect(page.get_by_text("孙悟空").first).to_be_visible()
            box = page.get_by_test_id("stChatInputTextArea")
            bubbles = page.get_by_test_id("stChatMessage")
            # 1. 八戒 talks slowly; Stop in the middle keeps what he said, marked interrupted, and nobody else starts
            box.fill("八戒，你一路上都在忙什么？")
            box.press("Enter")
            expect(bubbles.nth(1)).to_contain_text("俺老猪这一路", timeout=60_000)
            page.get_by_role("button", name=re.compile("停止")).click()
            expect(bubbles.nth(1)).to_contain_text("被打断", timeout=30_000)
            expect(page.get_by_text("已停止")).to_be_visible()
            partial = bubbles.nth(1).inner_text()
            assert SLOW_REPLY not in partial.replace("\n", "")  # cut short, not the whole reply
            page.wait_for_timeout(1500)
            expect(bubbles).to_have_count(2)
            # 2. canon members answer by name, then two banter turns
            box.fill("悟空、沙僧，你们两个说说？")
            box.press("Enter")
            expect(bubbles).to_have_count(7, timeout=60_000)  # + you, 悟空, 沙僧, two banter turns
            expect(bubbles.nth(3)).to_contain_text("孙悟空")
            expect(bubbles.nth(4)).to_contain_text("沙悟净")
            expect(bubbles.nth(3)).to_contain_text("《西游记》第")
            expect(page.get_by_role("button", name=re.compile("继续"))).to_be_enabled(timeout=30_000)  # all done
            expect(page.get_by_text("▌")).to_have_count(0)
            page.screenshot(path=str(artifacts / "hub.png"), full_page=True)
            # no raw HTML and no Python traceback anywhere on the page
            assert page.get_by_test_id("stException").count() == 0
        finally:
            browser.close()
    assert (artifacts / "hub.png").stat().st_size > 10_000

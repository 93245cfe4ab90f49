"""End to end in headless Chromium: `streamlit run hub/app.py` in canon mode, plus 猪八戒 on a slow scripted
OpenAI-compatible server so Stop can be pressed while he is talking; a screenshot at the end.

The screenshot lands in artifacts/hub.png (git-ignored) for a person to look at.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from browser import ARTIFACTS, CHROMIUM_ARGS, require_chromium, streamlit_command, streamlit_process

pytestmark = pytest.mark.browser

#: starts with raw HTML: the page must show it as text, never as an element
SLOW_REPLY = '<b class="raw-html">俺老猪</b>' + "这一路挑着担子，" * 12


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

    port = free_port()
    endpoints = tmp_path / "endpoints.toml"
    endpoints.write_text(f'[bajie]\nbase_url = "{slow_bajie.base_url}"\nmodel = "bajie"\n', encoding="utf-8")
    cmd = streamlit_command("hub/app.py", port)
    env = {"XIYOU_NOVEL": str(novel_path), "XIYOU_ENDPOINTS": str(endpoints), "XIYOU_DATA_DIR": str(tmp_path / "data")}
    with streamlit_process(cmd, port, env, tmp_path / "streamlit.log") as url:
        yield url.rstrip("/")


@pytest.mark.slow
def test_hub_in_chromium_answers_and_renders(hub_url: str) -> None:
    chromium = require_chromium()
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.goto(hub_url)
            expect(page.get_by_role("heading", name="师徒群聊")).to_be_visible(timeout=60_000)
            expect(page.get_by_text("孙悟空").first).to_be_visible()
            box = page.get_by_test_id("stChatInputTextArea")
            bubbles = page.get_by_test_id("stChatMessage")
            # 1. 八戒 talks slowly; Stop in the middle keeps what he said, marked interrupted, and nobody else starts
            box.fill("八戒，你一路上都在忙什么？")
            box.press("Enter")
            expect(bubbles.nth(1)).to_contain_text("这一路", timeout=60_000)
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
            page.screenshot(path=str(ARTIFACTS / "hub.png"), full_page=True)
            # no raw HTML (八戒's tag is shown as text, not made an element) and no Python traceback on the page
            expect(bubbles.nth(1)).to_contain_text("raw-html")
            assert page.locator(".raw-html").count() == 0
            assert page.get_by_test_id("stException").count() == 0
        finally:
            browser.close()
    assert (ARTIFACTS / "hub.png").stat().st_size > 10_000

"""End to end: 悟空-Chat started through the OpenXLab entry (openxlab/start.py), in headless Chromium.

Type a question, see the tiny model's reply stream into a bubble, save a screenshot to artifacts/.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from browser import ARTIFACTS, CHROMIUM_ARGS, require_chromium, streamlit_process
from servers import free_port
from tiny_model import TinyModel

from xiyou.env import REPO_ROOT
from xiyou.ui.chat import MAX_INPUT_CHARS

pytestmark = pytest.mark.browser


def openxlab_app(character_id: str, env: dict[str, str], log_path: Path):
    """`python openxlab/start.py <id>` on a free 127.0.0.1 port, as OpenXLab starts it (but not on 0.0.0.0)."""
    port = free_port()
    env = {**env, "XIYOU_OPENXLAB_ADDRESS": "127.0.0.1", "XIYOU_OPENXLAB_PORT": str(port)}
    return streamlit_process(
        [sys.executable, str(REPO_ROOT / "openxlab" / "start.py"), character_id], port, env, log_path
    )


@pytest.mark.parametrize("entry", ["start.py", "app.py"])
def test_openxlab_entries_refuse_an_unknown_character(entry: str) -> None:
    out = subprocess.run(
        [sys.executable, str(REPO_ROOT / "openxlab" / entry), "sunwukong"], capture_output=True, text=True
    )
    assert out.returncode == 2
    assert "unknown character 'sunwukong'" in out.stderr and "wukong" in out.stderr


@pytest.mark.slow
def test_chat_in_headless_chromium(tiny_model: TinyModel, tmp_path: Path) -> None:
    chromium = require_chromium()
    from playwright.sync_api import expect, sync_playwright

    env = {"XIYOU_BACKEND": "transformers", "XIYOU_MODEL_WUKONG": str(tiny_model.path), "XIYOU_PERSIST": "0"}
    screenshot = ARTIFACTS / "wukong_chat.png"
    with openxlab_app("wukong", env, tmp_path / "app.log") as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900}, locale="zh-CN")
            page.goto(url)
            box = page.get_by_test_id("stChatInputTextArea")
            expect(box).to_be_visible(timeout=60_000)
            expect(page.get_by_text("悟空-Chat")).to_be_visible()
            box.fill("大圣，妖怪在哪里？")
            counter = page.get_by_test_id("xiyouChatCounter")  # the input counts what is typed
            expect(counter).to_have_text(f"9 / {MAX_INPUT_CHARS}")
            box.press("Enter")
            messages = page.get_by_test_id("stChatMessage")
            expect(messages.filter(has_text="大圣，妖怪在哪里？")).to_have_count(1, timeout=60_000)
            expect(messages.filter(has_text=tiny_model.reply)).to_have_count(1, timeout=60_000)
            expect(messages).to_have_count(3)  # greeting, question, reply
            expect(page.get_by_test_id("stException")).to_have_count(0)
            expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=30_000)  # the run has finished
            expect(counter).to_have_text("")  # the box was emptied when the message went
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    assert screenshot.stat().st_size > 10_000

"""End to end in headless Chromium: a scene picked in the hub (`streamlit run hub/app.py`, canon mode) opens with
the narrator's setting once, the narrator tells that scene's chapter, and the room answers in it. A screenshot
lands in artifacts/hub-scene.png (git-ignored) for a person to look at.

The browser keeps a widget's value until the server sets it: this is where a scene that only cleared the chapter
box showed (the browser sent the old chapter back, the room left the scene and told chapter 1)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from browser import ARTIFACTS, CHROMIUM_ARGS, require_chromium, streamlit_command, streamlit_process

pytestmark = pytest.mark.browser


@pytest.fixture
def hub_url(novel_path: Path, tmp_path: Path):
    from servers import free_port

    port = free_port()
    cmd = streamlit_command("hub/app.py", port)
    env = {"XIYOU_NOVEL": str(novel_path), "XIYOU_DATA_DIR": str(tmp_path / "data"), "XIYOU_CANON_CPS": "0"}
    for name in ("XIYOU_ENDPOINTS", "XIYOU_API_BASE_URL", "XIYOU_API_MODEL"):
        env[name] = ""
    with streamlit_process(cmd, port, env, tmp_path / "streamlit.log") as url:
        yield url.rstrip("/")


@pytest.mark.slow
def test_a_scene_in_chromium_opens_once_and_the_narrator_tells_its_chapter(hub_url: str) -> None:
    chromium = require_chromium()
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(hub_url)
            expect(page.get_by_role("heading", name="师徒群聊")).to_be_visible(timeout=90_000)
            # the page's first run is over (on a loaded machine it can still be running under the heading)
            expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=90_000)
            # the scene is picked with the keyboard (type to filter, arrow down, Enter), as a keyboard user does.
            # Streamlit's selectbox is a react-aria combobox; under load, Playwright's mouse click on an option was
            # lost in about 1 of 4 tries (the list stayed open, its Open button left `data-pressed`, nothing sent to
            # the server), a known trait of react-aria popovers under automation (namesakefyi/namesake#608)
            box = page.get_by_test_id("stSelectbox").filter(has_text="Start in a scene").get_by_role("combobox")
            box.focus()
            box.press_sequentially("三打白骨")
            expect(page.get_by_role("option")).to_have_count(1, timeout=30_000)  # the list is filtered to it
            box.press("ArrowDown")
            box.press("Enter")
            expect(box).to_have_value(re.compile("三打白骨精"), timeout=30_000)
            bubbles = page.get_by_test_id("stChatMessage")
            expect(bubbles).to_have_count(1, timeout=90_000)
            expect(bubbles.nth(0)).to_contain_text("【三打白骨精】第二十七回 · 白虎岭")
            page.get_by_text("旁白 · Narrator").click()
            narrate = page.get_by_role("button", name=re.compile("Narrate"))
            expect(narrate).to_be_enabled(timeout=30_000)
            narrate.click()
            expect(bubbles).to_have_count(2, timeout=60_000)
            expect(bubbles.nth(1)).to_contain_text("《西游记》第二十七回")  # the scene's chapter, told once
            page.wait_for_timeout(1500)
            expect(bubbles).to_have_count(2)
            box = page.get_by_test_id("stChatInputTextArea")
            box.fill("悟空，那送斋的女子是什么人？")
            box.press("Enter")
            expect(bubbles.nth(3)).to_contain_text("孙悟空", timeout=60_000)
            expect(bubbles.nth(3)).to_contain_text("《西游记》第二十七回")
            expect(page.get_by_role("button", name=re.compile("继续"))).to_be_enabled(timeout=30_000)  # all done
            page.screenshot(path=str(ARTIFACTS / "hub-scene.png"), full_page=True)
            assert page.get_by_test_id("stException").count() == 0
        except AssertionError:
            page.screenshot(path=str(ARTIFACTS / "hub-scene-failed.png"), full_page=True)  # what the page showed
            raise
        finally:
            browser.close()

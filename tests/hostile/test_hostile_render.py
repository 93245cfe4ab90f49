"""Model text never causes a request (issue 15 item 2), and hostile nesting never breaks a bubble.

A reply carrying images in every Markdown form (inline, reference-style, shortcut, linked, raw HTML `<img>`,
an autolink) pointing at a logging HTTP server is shown by the 悟空 app and by the hub in headless Chromium,
and the hub's Markdown export is opened in the most permissive viewer (Markdown with raw HTML allowed): the
logging server must receive zero requests. The same reply ends in a 3,000-deep block quote, which must show as
text, not as a JavaScript stack trace.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from xiyou.room.transcript import Entry, transcript_markdown
from xiyou.ui.render import JOINER, MAX_DEPTH, safe_markdown

DEEP = 3000


def hostile_reply(base: str) -> str:
    """Every way Markdown (or HTML in Markdown) can make a browser fetch `base/...`; then a deep quote."""
    return (
        f"俺老孙来也！![inline]({base}/inline.png)\n\n"
        f"看这里：![ref][pic]\n\n[pic]: {base}/reference.png\n\n"
        f"![short]\n\n[short]: {base}/shortcut.png\n\n"
        f"[![linked]({base}/linked.png)]({base}/clicked-only)\n\n"
        f'<img src="{base}/html-img.png"> <picture><source srcset="{base}/srcset.png"></picture>\n\n'
        f"<{base}/autolink.png>\n\n"
        "`![在代码里](x)` 不算。\n\n" + ">" * DEEP + "深不见底"  # fits the client's reply cap (wukong: 4,096)
    )


class _Log(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.paths.append(self.path)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def logging_server() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on a free 127.0.0.1 port that records every request path: yields (base URL, paths)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Log)
    server.paths = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", server.paths  # type: ignore[attr-defined]
    finally:
        server.shutdown()
        server.server_close()


# --- the rewrite itself -------------------------------------------------------------------------------------


def test_no_image_or_tag_syntax_is_left_and_the_words_stay() -> None:
    text = hostile_reply("http://h")
    out = safe_markdown(text)
    assert "![" not in out and not re.search(r"<[A-Za-z/!?]", out)
    # every word the model said is still there (only invisible joiners were added, deep markers flattened)
    for word in ("俺老孙来也", "inline", "reference.png", "html-img.png", "在代码里", "深不见底"):
        assert word in out.replace(JOINER, "")


def test_deep_quotes_and_lists_are_cut_to_max_depth() -> None:
    for marker in ("> ", "- ", "1. ", ">", "* > "):
        out = safe_markdown(marker * DEEP + "底")
        head = out.split(JOINER)[0]
        assert head.count(marker.strip() or marker) <= MAX_DEPTH * 2, marker
        assert out.endswith("底")
    indented = "\n".join(" " * (2 * i) + "- 层" for i in range(DEEP))
    assert max(len(line) - len(line.lstrip()) for line in safe_markdown(indented).split("\n")) <= 48


def test_ordinary_markdown_is_unchanged() -> None:
    text = "**师父**，*妖怪*来了！\n\n> 一层引用\n> > 两层\n\n- 金箍棒\n  - 如意\n\n1. 一\n2. 二\n\n"
    text += "[链接](https://example.org) a < b"
    assert safe_markdown(text) == text


def test_the_markdown_export_is_safe() -> None:
    export = transcript_markdown([Entry("wukong", "孙悟空", hostile_reply("http://h"))])
    assert "![" not in export and "<img" not in export


# --- in the browser -------------------------------------------------------------------------------------------


def _assert_clean(page, paths: list[str], where: str) -> None:
    from playwright.sync_api import expect

    page.wait_for_timeout(1500)  # time for any image request to arrive
    expect(page.get_by_test_id("stException")).to_have_count(0)
    body = page.locator("body").inner_text()
    assert "Maximum call stack" not in body and "RangeError" not in body, where
    assert page.locator("img[src*='127.0.0.1']").count() == 0, where
    assert paths == [], f"{where}: model text made the browser fetch {paths}"


@pytest.mark.slow
def test_app_and_hub_and_export_fetch_nothing(novel_path: Path, tmp_path: Path) -> None:
    from browser import CHROMIUM_ARGS, require_chromium, streamlit_command, streamlit_process
    from playwright.sync_api import expect, sync_playwright
    from scripted_openai import ScriptedOpenAI
    from servers import free_port

    chromium = require_chromium()
    with logging_server() as (base, paths), ScriptedOpenAI(lambda req: hostile_reply(base)) as llm:
        endpoints = tmp_path / "endpoints.toml"
        endpoints.write_text(f'[wukong]\nbase_url = "{llm.base_url}"\nmodel = "wukong"\n', encoding="utf-8")
        common = {"XIYOU_NOVEL": str(novel_path), "OPENAI_API_KEY": "sk-test", "XIYOU_DATA_DIR": str(tmp_path / "data")}
        app_env = {**common, "XIYOU_BACKEND": "openai", "OPENAI_BASE_URL": llm.base_url}
        hub_env = {**common, "XIYOU_ENDPOINTS": str(endpoints)}
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                # 1. the 悟空 app
                port = free_port()
                app_cmd = streamlit_command("apps/wukong/app.py", port)
                with streamlit_process(app_cmd, port, app_env, tmp_path / "app.log"):
                    page.goto(f"http://127.0.0.1:{port}/")
                    box = page.get_by_test_id("stChatInputTextArea")
                    expect(box).to_be_visible(timeout=60_000)
                    box.fill("大圣，给我看张图？")
                    box.press("Enter")
                    bubbles = page.get_by_test_id("stChatMessage")
                    expect(bubbles.filter(has_text="深不见底")).to_have_count(1, timeout=60_000)
                    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=30_000)
                    expect(bubbles.nth(2)).to_contain_text("俺老孙来也")
                    _assert_clean(page, paths, "app")
                # 2. the hub, and its Markdown export
                port = free_port()
                with streamlit_process(streamlit_command("hub/app.py", port), port, hub_env, tmp_path / "hub.log"):
                    page.goto(f"http://127.0.0.1:{port}/")
                    box = page.get_by_test_id("stChatInputTextArea")
                    expect(box).to_be_visible(timeout=60_000)
                    box.fill("悟空，给我看张图？")
                    box.press("Enter")
                    bubbles = page.get_by_test_id("stChatMessage")
                    expect(bubbles.filter(has_text="深不见底").first).to_be_visible(timeout=60_000)
                    expect(page.get_by_role("button", name=re.compile("继续"))).to_be_enabled(timeout=60_000)
                    _assert_clean(page, paths, "hub")
                    with page.expect_download() as download:
                        page.get_by_test_id("stSidebar").get_by_role("button", name=re.compile("Markdown")).click()
                    export = Path(download.value.path()).read_text(encoding="utf-8")
                assert "俺老孙来也" in export and "深不见底" in export
                # 3. the export in a viewer that renders Markdown with raw HTML (as many Markdown viewers do)
                (tmp_path / "export.md").write_text(export, encoding="utf-8")
                viewer = tmp_path / "viewer.py"
                viewer.write_text(
                    "import pathlib, streamlit as st\n"
                    f"st.markdown(pathlib.Path({str(tmp_path / 'export.md')!r}).read_text(), unsafe_allow_html=True)\n",
                    encoding="utf-8",
                )
                port = free_port()
                with streamlit_process(streamlit_command(str(viewer), port), port, {}, tmp_path / "viewer.log"):
                    page.goto(f"http://127.0.0.1:{port}/")
                    expect(page.get_by_text("深不见底").first).to_be_visible(timeout=60_000)
                    _assert_clean(page, paths, "export")
            finally:
                browser.close()

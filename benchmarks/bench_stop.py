"""How fast the room's controls answer: ⏹️ Stop (or typing in the chat input) during auto-banter until ▶️ Continue is
enabled again, in headless Chromium, against Streamlit's own round trip measured in the same run.

The hub runs in offline canon mode (a temporary store, auto-banter 8); with `--baseline DIR` a second hub runs from
another checkout (the code before a change) and the tries alternate between the two. Each try: let the room talk
(▶️ Continue when it is idle), wait until a reply streams (half the tries) or the pause between turns (the other
half), then press Stop, or type a character into the chat input (`--typing`); the time is measured inside the page,
from the click or keystroke to the first frame where Continue is enabled. The floor is a two-button Streamlit page
(a click that enables another button) on this machine at the same time: no app can answer faster than that.

    XIYOU_NOVEL=../shared/data/xiyouji.txt .venv/bin/python benchmarks/bench_stop.py [--tries 12] [--typing]
        [--baseline /tmp/old]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import statistics
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))  # the Chromium flags and the in-page timing the tests use

from browser import ACT_UNTIL_ENABLED_JS  # noqa: E402

FLOOR_APP = textwrap.dedent(
    """
    import streamlit as st
    st.session_state.setdefault("on", False)
    st.button("flip", key="flip", on_click=lambda: st.session_state.update(on=not st.session_state.on))
    st.button("target", key="target", disabled=not st.session_state.on)
    """
)

@contextlib.contextmanager
def _server(script: str, env: dict[str, str], log: Path, root: Path = REPO) -> Iterator[str]:
    """`streamlit run script` from the checkout `root` (its code and its .streamlit/config.toml)."""
    from browser import streamlit_command, streamlit_process
    from servers import free_port

    port = free_port()
    env = {"PYTHONPATH": str(root), **env}
    with streamlit_process(streamlit_command(script, port), port, env, log, cwd=root, startup_timeout_s=120) as url:
        yield url.rstrip("/")


def _floor(browser, url: str, tries: int) -> list[float]:
    from playwright.sync_api import expect

    page = browser.new_page()
    page.goto(url)
    page.get_by_role("button", name="flip").wait_for(timeout=60_000)
    out = []
    for _ in range(tries):  # off -> on (measured), then back off
        out.append(page.evaluate(ACT_UNTIL_ENABLED_JS, ["flip", "target"]))
        page.get_by_role("button", name="flip").click()
        expect(page.get_by_role("button", name="target")).to_be_disabled(timeout=30_000)
    page.close()
    return out


class Room:
    """One hub in one browser tab, talking (auto-banter 8); `stop()` measures one Stop (or keystroke)."""

    def __init__(self, browser, url: str, typing: bool) -> None:
        from playwright.sync_api import expect

        self.expect, self.typing = expect, typing
        self.page = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN").new_page()
        self.page.goto(url)
        self.box = self.page.get_by_test_id("stChatInputTextArea")
        expect(self.box).to_be_visible(timeout=120_000)
        banter = self.page.get_by_test_id("stSidebar").get_by_role("slider", name=re.compile("Auto-banter"))
        banter.press("End")
        expect(banter).to_have_value("8", timeout=30_000)
        self.box.fill("悟空、八戒，你们从哪里来？")
        self.box.press("Enter")
        self.cont = self.page.get_by_role("button", name="继续")
        self.streaming: list[float] = []
        self.pausing: list[float] = []

    def stop(self, mid_reply: bool) -> None:
        page = self.page
        if self.cont.is_enabled():
            self.cont.click()
        self.expect(self.cont).to_be_disabled(timeout=30_000)
        if mid_reply:
            page.get_by_test_id("stChatMessage").filter(has_text="▌").first.wait_for(timeout=60_000)
        else:
            page.get_by_text("next turn in").first.wait_for(timeout=60_000)
        ms = page.evaluate(ACT_UNTIL_ENABLED_JS, ["type" if self.typing else "停止", "继续"])
        (self.streaming if mid_reply else self.pausing).append(ms)
        if self.typing:
            self.box.fill("")
        errors = page.get_by_test_id("stException").count()
        if errors:
            sys.exit(f"the page shows {errors} exception(s)")


def _line(name: str, values: list[float], floor: float) -> str:
    if any(v < 0 for v in values):
        return f"{name:<40} {sum(v < 0 for v in values)} of {len(values)} did not come within 20 s"
    med = statistics.median(values)
    return (
        f"{name:<40} median {med / 1000:.2f} s, min {min(values) / 1000:.2f}, max {max(values) / 1000:.2f} s "
        f"(n={len(values)}, {med / floor:.1f}x the floor)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tries", type=int, default=12, help="stops measured (half mid-reply, half in the pause)")
    parser.add_argument("--typing", action="store_true", help="stop by typing into the chat input, not by ⏹️ Stop")
    parser.add_argument("--cps", type=float, default=60.0, help="canon typing pace (characters per second)")
    parser.add_argument(
        "--baseline", type=Path, help="another checkout (e.g. `git worktree add /tmp/old <commit>`): its hub is "
        "measured too, side by side, the tries alternating",
    )  # fmt: skip
    args = parser.parse_args()
    from browser import CHROMIUM_ARGS, require_chromium
    from playwright.sync_api import sync_playwright

    novel = os.environ.get("XIYOU_NOVEL") or str(REPO.parent / "shared" / "data" / "xiyouji.txt")
    tmp = Path(tempfile.mkdtemp(prefix="bench-stop-"))
    floor_app = tmp / "floor.py"
    floor_app.write_text(FLOOR_APP, encoding="utf-8")
    env = {"XIYOU_NOVEL": novel, "XIYOU_CANON_CPS": f"{args.cps:g}"}
    os.environ.pop("XIYOU_ENDPOINTS", None)
    roots = {"this checkout": REPO, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    with contextlib.ExitStack() as stack:
        urls = {
            name: stack.enter_context(
                _server("hub/app.py", {**env, "XIYOU_DATA_DIR": str(tmp / f"data{i}")}, tmp / f"hub{i}.log", root)
            )
            for i, (name, root) in enumerate(roots.items())
        }
        floor_url = stack.enter_context(_server(str(floor_app), {}, tmp / "floor.log"))
        p = stack.enter_context(sync_playwright())
        browser = p.chromium.launch(executable_path=str(require_chromium()), args=CHROMIUM_ARGS)
        stack.callback(browser.close)
        floor = _floor(browser, floor_url, args.tries)
        rooms = {name: Room(browser, url, args.typing) for name, url in urls.items()}
        for i in range(args.tries):
            for room in rooms.values():
                room.stop(mid_reply=i % 2 == 0)
    how = "typing" if args.typing else "Stop"
    base = statistics.median(floor)
    print(f"canon pace {args.cps:g} chars/s, auto-banter 8, pace 1.5 s; {os.cpu_count()} cores")
    print(_line("floor: click -> button enabled", floor, base))
    for name, room in rooms.items():
        print(f"{name} ({roots[name]}):")
        print(_line(f"  {how} mid-reply -> Continue enabled", room.streaming, base))
        print(_line(f"  {how} in the pause -> Continue enabled", room.pausing, base))
        print(_line(f"  {how} (all) -> Continue enabled", room.streaming + room.pausing, base))
    if len(rooms) == 2:
        this, old = (statistics.median(r.streaming + r.pausing) for r in rooms.values())
        print(f"this checkout / baseline (median, all): {this / old:.2f}")


if __name__ == "__main__":
    main()

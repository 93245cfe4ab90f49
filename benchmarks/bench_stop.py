"""How fast the room's controls answer: ⏹️ Stop (or typing in the chat input) during auto-banter until ▶️ Continue is
enabled again, in headless Chromium, against Streamlit's own round trip measured in the same run.

The hub runs in offline canon mode (a temporary store, auto-banter 8). Each try: let the room talk (▶️ Continue when
it is idle), wait until a reply streams (half the tries) or the pause between turns (the other half), then press
Stop, or type a character into the chat input (`--typing`); the time is measured inside the page, from the click or
keystroke to the first frame where Continue is enabled. The floor is a two-button Streamlit page (a click that
enables another button) on this machine at the same time: no app can answer faster than that.

    XIYOU_NOVEL=../shared/data/xiyouji.txt .venv/bin/python benchmarks/bench_stop.py [--tries 12] [--typing]
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
sys.path.insert(0, str(REPO / "tests"))  # the Chromium flags and the Streamlit process helper the tests use

FLOOR_APP = textwrap.dedent(
    """
    import streamlit as st
    st.session_state.setdefault("on", False)
    st.button("flip", key="flip", on_click=lambda: st.session_state.update(on=not st.session_state.on))
    st.button("target", key="target", disabled=not st.session_state.on)
    """
)

#: In the page: act (click the button named `act`, or type one character into the chat input), then wait frame by
#: frame until the button named `until` is enabled; the milliseconds it took (-1: not within 20 s).
MEASURE_JS = """
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


@contextlib.contextmanager
def _server(script: str, env: dict[str, str], log: Path) -> Iterator[str]:
    from browser import streamlit_process
    from servers import free_port

    port = free_port()
    cmd = [
        str(Path(sys.executable).with_name("streamlit")), "run", script, "--server.headless", "true",
        "--server.address", "127.0.0.1", "--server.port", str(port), "--server.fileWatcherType", "none",
    ]  # fmt: skip
    with streamlit_process(cmd, port, env, log) as url:
        yield url.rstrip("/")


def _floor(browser, url: str, tries: int) -> list[float]:
    from playwright.sync_api import expect

    page = browser.new_page()
    page.goto(url)
    page.get_by_role("button", name="flip").wait_for(timeout=60_000)
    out = []
    for _ in range(tries):  # off -> on (measured), then back off
        out.append(page.evaluate(MEASURE_JS, ["flip", "target"]))
        page.get_by_role("button", name="flip").click()
        expect(page.get_by_role("button", name="target")).to_be_disabled(timeout=30_000)
    page.close()
    return out


def _room(browser, url: str, tries: int, typing: bool) -> tuple[list[float], list[float]]:
    from playwright.sync_api import expect

    page = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN").new_page()
    page.goto(url)
    box = page.get_by_test_id("stChatInputTextArea")
    expect(box).to_be_visible(timeout=120_000)
    banter = page.get_by_test_id("stSidebar").get_by_role("slider", name=re.compile("Auto-banter"))
    banter.press("End")  # auto-banter 8
    expect(banter).to_have_value("8", timeout=30_000)
    box.fill("悟空、八戒，你们从哪里来？")
    box.press("Enter")
    cont = page.get_by_role("button", name="继续")
    streaming, pausing = [], []
    for i in range(tries):
        if cont.is_enabled():
            cont.click()
        expect(cont).to_be_disabled(timeout=30_000)
        if i % 2 == 0:  # a reply is streaming
            page.get_by_test_id("stChatMessage").filter(has_text="▌").first.wait_for(timeout=60_000)
        else:  # the pause between two turns
            page.get_by_text("next turn in").first.wait_for(timeout=60_000)
        ms = page.evaluate(MEASURE_JS, ["type" if typing else "停止", "继续"])
        (streaming if i % 2 == 0 else pausing).append(ms)
        if typing:
            box.fill("")
        page.wait_for_timeout(300)
    errors = page.get_by_test_id("stException").count()
    if errors:
        sys.exit(f"the page shows {errors} exception(s)")
    return streaming, pausing


def _line(name: str, values: list[float], floor: float) -> str:
    if any(v < 0 for v in values):
        return f"{name:<34} {sum(v < 0 for v in values)} of {len(values)} did not come within 20 s"
    med = statistics.median(values)
    return (
        f"{name:<34} median {med / 1000:.2f} s, min {min(values) / 1000:.2f}, max {max(values) / 1000:.2f} s "
        f"(n={len(values)}, {med / floor:.1f}x the floor)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tries", type=int, default=12, help="stops measured (half mid-reply, half in the pause)")
    parser.add_argument("--typing", action="store_true", help="stop by typing into the chat input, not by ⏹️ Stop")
    parser.add_argument("--cps", type=float, default=60.0, help="canon typing pace (characters per second)")
    args = parser.parse_args()
    from browser import CHROMIUM_ARGS, require_chromium
    from playwright.sync_api import sync_playwright

    novel = os.environ.get("XIYOU_NOVEL") or str(REPO.parent / "shared" / "data" / "xiyouji.txt")
    tmp = Path(tempfile.mkdtemp(prefix="bench-stop-"))
    floor_app = tmp / "floor.py"
    floor_app.write_text(FLOOR_APP, encoding="utf-8")
    env = {"XIYOU_NOVEL": novel, "XIYOU_DATA_DIR": str(tmp / "data"), "XIYOU_CANON_CPS": f"{args.cps:g}"}
    os.environ.pop("XIYOU_ENDPOINTS", None)
    with (
        _server("hub/app.py", env, tmp / "hub.log") as hub,
        _server(str(floor_app), {}, tmp / "floor.log") as floor_url,
        sync_playwright() as p,
    ):
        browser = p.chromium.launch(executable_path=str(require_chromium()), args=CHROMIUM_ARGS)
        try:
            floor = _floor(browser, floor_url, args.tries)
            streaming, pausing = _room(browser, hub, args.tries, args.typing)
        finally:
            browser.close()
    how = "typing" if args.typing else "Stop"
    base = statistics.median(floor)
    print(f"canon pace {args.cps:g} chars/s, auto-banter 8, pace 1.5 s; {os.cpu_count()} cores")
    print(_line("floor: click -> button enabled", floor, base))
    print(_line(f"{how} mid-reply -> Continue enabled", streaming, base))
    print(_line(f"{how} in the pause -> Continue enabled", pausing, base))
    print(_line(f"{how} (all) -> Continue enabled", streaming + pausing, base))


if __name__ == "__main__":
    main()

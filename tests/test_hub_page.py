"""The hub page under Streamlit's AppTest, in offline canon mode on the shared novel."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from xiyou.env import REPO_ROOT

APP = str(REPO_ROOT / "hub" / "app.py")


@pytest.fixture
def hub(novel_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("XIYOU_NOVEL", str(novel_path))
    monkeypatch.delenv("XIYOU_ENDPOINTS", raising=False)

    def start() -> AppTest:
        return AppTest.from_file(APP, default_timeout=120).run()

    return start


def bubbles(at: AppTest) -> list[tuple[str, str]]:
    """(name, text) of every chat bubble, in order."""
    out = []
    for msg in at.main.get("chat_message"):
        texts = [m.value for m in msg.markdown]
        out.append((msg.name, "\n".join(texts[1:])))
    return out


def test_page_opens_in_canon_mode_with_four_members_and_green_controls(hub) -> None:
    at = hub()
    assert not at.exception
    assert "西游群聊" in at.title[0].value
    assert at.multiselect(key="hub_members").value == ["sanzang", "wukong", "bajie", "wujing"]
    sidebar = " ".join(m.value for m in at.sidebar.markdown)
    for name in ("🪷 **唐三藏**", "🐒 **孙悟空**", "🐖 **猪八戒**", "🐟 **沙悟净**"):
        assert name in sidebar
    assert "canon mode" in " ".join(c.value for c in at.main.caption)
    assert at.selectbox(key="hub_policy").value == "mention"
    assert at.button(key="hub_stop").proto.type == "secondary"  # nothing is running
    assert not bubbles(at)


def test_send_streams_named_members_then_banter_and_exports(hub) -> None:
    at = hub()
    at.multiselect(key="hub_members").set_value(["wukong", "bajie", "wujing"])
    at.slider(key="hub_banter").set_value(1)
    at.chat_input(key="hub_input").set_value("八戒、悟空，你们两个吵什么？").run()
    assert not at.exception
    said = bubbles(at)
    assert [name for name, _ in said[:3]] == ["施主", "猪八戒", "孙悟空"]
    assert len(said) == 4  # two named answers + one banter turn
    assert said[3][0] != "孙悟空"  # banter never repeats the last speaker
    assert all(text.strip() for _, text in said[1:])
    avatars = [m.avatar for m in at.main.get("chat_message")]
    assert avatars[:3] == ["🙏", "🐖", "🐒"]
    # each canon line cites its chapter in the bubble, as in the novel
    # (and to whom the line was said there, when the novel says), e.g. 📖 《西游记》第二十七回 · 对唐三藏说
    room = at.session_state["hub_room"]
    cites = [[c.value for c in m.caption] for m in at.main.get("chat_message")]
    for entry, cs in zip(room.entries[1:], cites[1:]):
        assert entry.citation is not None and f"📖 《西游记》{entry.citation.label()}" in cs
        assert "回）" not in entry.text
    # status lights turned green for those who spoke
    sidebar = " ".join(m.value for m in at.sidebar.markdown)
    assert "🟢 🐖 **猪八戒**" in sidebar and "🟢 🐒 **孙悟空**" in sidebar
    assert [e.name for e in room.entries] == [name for name, _ in said]
    md = at.sidebar.get("download_button")
    assert len(md) == 2 and not any(b.proto.disabled for b in md)
    # continue: the characters go on by themselves; stop is off again when they are done
    at.button(key="hub_continue").click().run()
    assert len(bubbles(at)) == 5
    assert at.button(key="hub_stop").proto.type == "secondary"


def test_stop_ends_the_planned_banter(hub) -> None:
    at = hub()
    at.chat_input(key="hub_input").set_value("悟空").run()
    before = len(bubbles(at))
    room = at.session_state["hub_room"]
    at.session_state["hub_plan"] = room.plan_continue(5)  # as if the banter were still going
    at.run()
    # the page ran one more turn per run until done; now plan a long one and stop it at once
    after_run = len(bubbles(at))
    assert after_run == before + 5
    at.session_state["hub_plan"] = room.plan_continue(5)
    at.button(key="hub_stop").click().run()
    assert len(bubbles(at)) == after_run, "stop means nobody else speaks"
    assert any("stopped" in i.value for i in at.main.info)
    assert at.session_state["hub_plan"] is None


def test_mute_manual_pick_and_reset(hub) -> None:
    at = hub()
    at.toggle(key="hub_mute_bajie").set_value(True).run()
    assert "🔇 🐖 **猪八戒**" in " ".join(m.value for m in at.sidebar.markdown)
    at.slider(key="hub_banter").set_value(0)
    at.chat_input(key="hub_input").set_value("八戒，出来！").run()
    assert "猪八戒" not in [name for name, _ in bubbles(at)[1:]]
    at.selectbox(key="hub_policy").set_value("manual").run()
    at.selectbox(key="hub_pick").set_value("wujing")
    at.button(key="hub_speak").click().run()
    assert bubbles(at)[-1][0] == "沙悟净"
    at.button(key="hub_reset").click().run()
    assert bubbles(at) == []


def test_a_dead_server_is_a_red_notice_and_the_others_answer(hub, tmp_path: Path, monkeypatch) -> None:
    from servers import free_port

    endpoints = tmp_path / "endpoints.toml"
    endpoints.write_text(
        f'[bajie]\nbase_url = "http://127.0.0.1:{free_port()}/v1"\ntimeout = 5\nmax_retries = 0\n', encoding="utf-8"
    )
    monkeypatch.setenv("XIYOU_ENDPOINTS", str(endpoints))
    at = hub()
    at.slider(key="hub_banter").set_value(0)
    at.chat_input(key="hub_input").set_value("八戒、悟空？").run()
    assert not at.exception
    assert [name for name, _ in bubbles(at)] == ["施主", "孙悟空"]
    errors = [e.value for e in at.main.error]
    assert len(errors) == 1 and "猪八戒" in errors[0]
    assert "🔴 🐖 **猪八戒**" in " ".join(m.value for m in at.sidebar.markdown)


def test_no_novel_and_no_endpoints_explains_how_to_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XIYOU_NOVEL", str(tmp_path / "missing.txt"))
    monkeypatch.delenv("XIYOU_ENDPOINTS", raising=False)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown)
    assert "XIYOU_NOVEL" in text and "XIYOU_ENDPOINTS" in text and "base_url" in text
    assert not at.get("chat_input") or not at.chat_input

"""The app's group room under Streamlit's AppTest, in offline canon mode on the shared novel, stored in a temporary
conversation store (XIYOU_DATA_DIR)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pages import HUB_APP, bubbles, cid, widget
from streamlit.testing.v1 import AppTest

from xiyou.store import SQLiteStore

# every test: its own conversation store, and Streamlit's resource cache cleared before and after
pytestmark = pytest.mark.usefixtures("page_store")


def say(at: AppTest, text: str) -> AppTest:
    return widget(at, "hub_input").set_value(text).run()


def stored(page_store: Path, conversation: str) -> list[str]:
    return [m.text for m in SQLiteStore(page_store / "conversations.db").messages(conversation)]


def sidebar_text(at: AppTest) -> str:
    return " ".join(m.value for m in at.sidebar.markdown)


def test_page_opens_a_stored_room_in_canon_mode_with_four_members(hub, page_store) -> None:
    at = hub()
    assert "师徒群聊" in at.title[0].value
    assert widget(at, "hub_members").value == ["sanzang", "wukong", "bajie", "wujing"]
    for name in ("🪷 **唐三藏**", "🐒 **孙悟空**", "🐖 **猪八戒**", "🐟 **沙悟净**"):
        assert name in sidebar_text(at)
    assert "canon mode" in " ".join(c.value for c in at.main.caption)
    assert widget(at, "hub_policy").value == "mention"
    assert at.button(key="hub_stop").proto.type == "secondary" and not at.button(key="hub_continue").disabled
    assert not bubbles(at)
    conv = SQLiteStore(page_store / "conversations.db").get(cid(at))
    assert conv is not None and conv.kind == "room" and len(conv.id) >= 20


def test_send_streams_named_members_then_banter_stores_and_exports(hub, page_store) -> None:
    at = hub()
    widget(at, "hub_members").set_value(["wukong", "bajie", "wujing"])
    widget(at, "hub_banter").set_value(1)
    say(at, "八戒、悟空，你们两个吵什么？")
    assert not at.exception
    said = bubbles(at)
    assert [name for name, _ in said[:3]] == ["施主", "猪八戒", "孙悟空"]
    assert len(said) == 4  # two named answers + one banter turn
    assert said[3][0] != "孙悟空"  # banter never repeats the last speaker
    assert all(text.strip() and "（第" not in text for _, text in said[1:])  # the citation is a caption, not text
    avatars = [m.avatar for m in at.main.get("chat_message")]
    assert avatars[:3] == ["🙏", "🐖", "🐒"]
    # each canon line cites its chapter in the bubble, as in the novel
    # (and to whom the line was said there, when the novel says), e.g. 📖 《西游记》第二十七回 · 对唐三藏说
    room = at.session_state[f"room_{cid(at)}"].room
    cites = [[c.value for c in m.caption] for m in at.main.get("chat_message")]
    for entry, cs in zip(room.entries[1:], cites[1:]):
        assert entry.citation is not None and f"📖 《西游记》{entry.citation.label()}" in cs
        assert "回）" not in entry.text
    assert "🟢 🐖 **猪八戒**" in sidebar_text(at) and "🟢 🐒 **孙悟空**" in sidebar_text(at)
    assert [e.name for e in room.entries] == [name for name, _ in said]
    # every line is stored, in order, the citation apart from the text
    assert stored(page_store, cid(at)) == [text for _, text in said]
    rows = SQLiteStore(page_store / "conversations.db").messages(cid(at))
    assert [(m.chapter, m.said_to) for m in rows[1:]] == [
        (e.citation.chapter, e.citation.said_to) for e in room.entries[1:]
    ]
    exports = at.sidebar.get("download_button")
    assert len(exports) == 2 and not any(b.proto.disabled for b in exports)
    # continue: the characters go on by themselves; stop is off again when they are done
    at.button(key="hub_continue").click().run()
    assert len(bubbles(at)) == 5
    assert at.button(key="hub_stop").proto.type == "secondary"


def test_a_reload_restores_the_conversation_and_its_settings(hub, page_store) -> None:
    at = hub()
    widget(at, "hub_banter").set_value(0)
    widget(at, "hub_policy").set_value("round_robin")
    at.toggle(key=f"hub_mute_{cid(at)}_bajie").set_value(True)
    widget(at, "hub_person").set_value("小明")
    say(at, "悟空，你好")
    before = bubbles(at)
    assert before[0][0] == "小明" and len(before) == 2
    again = hub(cid(at), pace=None)  # a new session (a reload, a new tab) opening the same URL
    assert bubbles(again) == before
    assert widget(again, "hub_policy").value == "round_robin"
    assert widget(again, "hub_banter").value == 0 and widget(again, "hub_person").value == "小明"
    assert again.toggle(key=f"hub_mute_{cid(at)}_bajie").value is True
    # a second room in another tab stays apart
    other = hub()
    other.button(key="conv_new_room").click().run()
    assert cid(other) != cid(at) and bubbles(other) == []
    say(other, "八戒，吃了吗")
    assert bubbles(hub(cid(at), pace=None)) == before


def test_stop_ends_the_planned_banter_and_continue_is_live_at_once(hub) -> None:
    at = hub()
    say(at, "悟空")
    before = len(bubbles(at))
    rs = at.session_state[f"room_{cid(at)}"]
    rs.plan = rs.room.plan_continue(5)  # as if the banter were still going
    at.run()
    after_run = len(bubbles(at))
    assert after_run == before + 5
    rs.plan = rs.room.plan_continue(5)  # the banter is going on: the page drawn then has Stop on
    at.button(key="hub_stop").click().run()
    assert len(bubbles(at)) == after_run, "stop means nobody else speaks"
    assert any("stopped" in i.value for i in at.main.info)
    # the page drawn by the Stop click already shows the real state: Continue on, Stop off
    assert not at.button(key="hub_continue").disabled and at.button(key="hub_stop").proto.type == "secondary"
    assert rs.plan is None


def test_banter_waits_its_pace_between_turns(hub) -> None:
    at = hub(pace=1.5)
    widget(at, "hub_banter").set_value(3)
    rs_key = f"room_{cid(at)}"
    say(at, "悟空")
    rs = at.session_state[rs_key]
    assert rs.next_turn_at > 0  # the next banter turn was scheduled a pace after the last one


def test_mute_manual_pick_force_talk_and_reset(hub) -> None:
    at = hub()
    at.toggle(key=f"hub_mute_{cid(at)}_bajie").set_value(True).run()
    assert "🔇 🐖 **猪八戒**" in sidebar_text(at)
    widget(at, "hub_banter").set_value(0)
    say(at, "八戒，出来！")
    assert "猪八戒" not in [name for name, _ in bubbles(at)[1:]]
    assert any("猪八戒" in i.value and "muted" in i.value for i in at.main.info)  # named while muted: a note
    # force-talk works in any policy: 沙僧 speaks now under "mention"
    at.selectbox(key=f"hub_pick_{cid(at)}").set_value("wujing")
    at.button(key="hub_speak").click().run()
    assert bubbles(at)[-1][0] == "沙悟净"
    widget(at, "hub_policy").set_value("manual").run()
    assert at.button(key="hub_continue").disabled  # manual: Continue would do nothing
    n = len(bubbles(at))
    say(at, "谁来说说？")
    assert len(bubbles(at)) == n + 1 and any("manual" in i.value for i in at.main.info)  # a hint, no silence
    at.selectbox(key=f"hub_pick_{cid(at)}").set_value("wukong")
    at.button(key="hub_speak").click().run()
    assert bubbles(at)[-1][0] == "孙悟空"
    widget(at, "hub_reset").click().run()
    assert bubbles(at) == []
    assert all(b.proto.disabled for b in at.sidebar.get("download_button"))  # no old transcript to export
    assert "🟢" not in sidebar_text(at)


def test_no_members_is_a_clear_hint_not_a_silent_message(hub) -> None:
    at = hub()
    widget(at, "hub_members").set_value([]).run()
    assert widget(at, "hub_input").disabled
    assert "pick members" in widget(at, "hub_input").placeholder


def test_a_message_over_the_limit_comes_back_with_a_counter(hub) -> None:
    from xiyou.ui.chat import MAX_INPUT_CHARS

    at = hub()
    long = "长" * (MAX_INPUT_CHARS + 200)
    say(at, long)
    assert bubbles(at) == []  # not posted
    box = at.text_area(key=f"hub_draft_{cid(at)}_box")
    assert box.value == long  # nothing typed is lost
    assert any(f"{len(long)} / {MAX_INPUT_CHARS}" in c.value for c in at.caption)
    box.set_value("长话短说").run()
    at.button(key=f"hub_draft_{cid(at)}_send").click().run()
    assert bubbles(at)[0] == ("施主", "长话短说")


def test_regenerate_keeps_versions_swipe_edit_delete(hub, page_store) -> None:
    at = hub()
    widget(at, "hub_banter").set_value(0)
    say(at, "悟空，你从哪里来？")
    first = bubbles(at)[-1]
    store = SQLiteStore(page_store / "conversations.db")
    reply = store.messages(cid(at))[-1]
    at.button(key=f"msg_regen_{reply.id}").click().run()
    assert len(bubbles(at)) == 2
    again = store.messages(cid(at))[-1]
    assert again.id == reply.id and len(again.alternatives) == 2 and again.selected == 1
    assert at.button(key=f"msg_prev_{reply.id}")  # ◀ 2/2 ▶
    at.button(key=f"msg_prev_{reply.id}").click().run()
    assert bubbles(at)[-1] == first
    # edit the person's message: stored, shown, and the room goes on from the edited transcript
    person = store.messages(cid(at))[0]
    at.text_area(key=f"msg_edit_text_{person.id}").set_value("八戒，你从哪里来？")
    at.button(key=f"msg_edit_{person.id}").click().run()
    assert bubbles(at)[0] == ("施主", "八戒，你从哪里来？")
    rs = at.session_state[f"room_{cid(at)}"]
    assert rs.room.entries[0].text == "八戒，你从哪里来？"
    # delete the reply
    at.button(key=f"msg_delete_{reply.id}").click().run()
    assert [n for n, _ in bubbles(at)] == ["施主"]
    assert len(store.messages(cid(at))) == 1 and len(rs.room.entries) == 1


def test_a_turn_interrupted_by_a_rerun_goes_on(hub, page_store) -> None:
    """Touching a sidebar control mid-reply redraws the page; the reply is not cut off."""
    at = hub()
    widget(at, "hub_banter").set_value(0)
    say(at, "悟空")
    rs = at.session_state[f"room_{cid(at)}"]
    rs.room.say("八戒，你说")
    rs.plan = rs.room.plan(["bajie"], banter=0)
    rs.live = rs.room.step(rs.plan)
    for event in rs.live:  # the run was cut after the first piece of 八戒's line
        if type(event).__name__ == "Delta":
            break
    widget(at, "hub_banter").set_value(1).run()  # a sidebar touch: the next run resumes the turn
    said = bubbles(at)
    assert said[-1][0] == "猪八戒" and said[-1][1]
    assert not rs.room.entries[-1].interrupted
    assert stored(page_store, cid(at))[-1] == said[-1][1]


def test_conversation_list_new_private_chat_rename_delete(hub, page_store) -> None:
    at = hub()
    room_id = cid(at)
    at.sidebar.button(key="conv_new_private_bajie").click().run()
    chat_id = cid(at)
    assert chat_id != room_id and "猪八戒" in at.title[0].value
    at.chat_input[0].set_value("二师兄，吃了吗").run()
    assert not at.exception and not at.error
    names = [m.name for m in at.main.get("chat_message")]
    assert names == ["assistant", "user", "assistant"]
    at.text_input(key=f"conv_title_{chat_id}").set_value("吃饭的事")
    at.button(key=f"conv_rename_{chat_id}").click().run()
    assert SQLiteStore(page_store / "conversations.db").get(chat_id).title == "吃饭的事"
    assert any(b.label.endswith("吃饭的事") for b in at.sidebar.button)
    at.button(key=f"conv_open_{room_id}").click().run()
    assert cid(at) == room_id and "师徒群聊" in at.title[0].value
    at.button(key=f"conv_open_{chat_id}").click().run()
    at.button(key=f"conv_delete_{chat_id}").click().run()
    assert SQLiteStore(page_store / "conversations.db").get(chat_id) is None and cid(at) == room_id


def test_import_a_transcript_exported_as_json_lines(hub, page_store) -> None:
    from xiyou.room.transcript import Entry, transcript_jsonl
    from xiyou.ui.conversations import TranscriptError, parse_transcript

    exported = transcript_jsonl([Entry("person", "小明", "大圣好"), Entry("wukong", "孙悟空", "俺老孙来也")])
    rows = parse_transcript(exported.encode(), "施主")
    assert [(m.speaker, m.name, m.text) for m in rows] == [
        ("person", "小明", "大圣好"),
        ("wukong", "孙悟空", "俺老孙来也"),
    ]
    with pytest.raises(TranscriptError, match="line 2 is not JSON"):
        parse_transcript(b'{"text": "a"}\nnot json\n', "施主")
    with pytest.raises(TranscriptError, match='line 1 has no "text"'):
        parse_transcript(json.dumps({"speaker": "x"}).encode(), "施主")


def test_a_dead_server_is_a_red_notice_and_the_others_answer(hub, tmp_path: Path, monkeypatch) -> None:
    from servers import free_port

    endpoints = tmp_path / "endpoints.toml"
    endpoints.write_text(
        f'[bajie]\nbase_url = "http://127.0.0.1:{free_port()}/v1"\ntimeout = 5\nmax_retries = 0\n', encoding="utf-8"
    )
    monkeypatch.setenv("XIYOU_ENDPOINTS", str(endpoints))
    at = hub()
    widget(at, "hub_banter").set_value(0)
    say(at, "八戒、悟空？")
    assert not at.exception
    assert [name for name, _ in bubbles(at)] == ["施主", "孙悟空"]
    errors = [e.value for e in at.main.error]
    assert len(errors) == 1 and "猪八戒" in errors[0]
    assert "🔴 🐖 **猪八戒**" in sidebar_text(at)


def test_no_novel_and_no_endpoints_explains_how_to_start(tmp_path: Path, monkeypatch, page_store) -> None:
    monkeypatch.setenv("XIYOU_NOVEL", str(tmp_path / "missing.txt"))
    monkeypatch.delenv("XIYOU_ENDPOINTS", raising=False)
    at = AppTest.from_file(HUB_APP, default_timeout=60).run()
    assert not at.exception
    text = " ".join(m.value for m in at.markdown)
    assert "XIYOU_NOVEL" in text and "XIYOU_ENDPOINTS" in text and "base_url" in text
    assert not at.get("chat_input") or not at.chat_input


def test_persist_off_keeps_each_session_apart(hub, monkeypatch, page_store) -> None:
    monkeypatch.setenv("XIYOU_PERSIST", "0")
    one = hub()
    say(one, "悟空，我是一号")
    two = hub(cid(one))  # another visitor with the first one's link sees nothing of it
    assert cid(two) != cid(one) and bubbles(two) == []
    assert not (page_store / "conversations.db").exists()


def test_a_point_in_the_story_is_kept_and_limits_the_canon(hub, page_store) -> None:
    at = hub()
    widget(at, "hub_banter").set_value(2)
    at.number_input(key=f"hub_chapter_{cid(at)}").set_value(20).run()
    say(at, "悟空、八戒，你们在做什么？")
    rows = SQLiteStore(page_store / "conversations.db").messages(cid(at))
    assert len(rows) >= 3 and all(m.chapter is not None and m.chapter <= 20 for m in rows[1:])
    assert SQLiteStore(page_store / "conversations.db").get(cid(at)).settings["chapter"] == 20
    again = hub(cid(at), pace=None)
    assert again.number_input(key=f"hub_chapter_{cid(at)}").value == 20


def test_continue_extends_the_last_reply_in_place(hub, page_store) -> None:
    at = hub()
    widget(at, "hub_banter").set_value(0)
    say(at, "悟空，说说你的来历")
    store = SQLiteStore(page_store / "conversations.db")
    reply = store.messages(cid(at))[-1]
    at.button(key=f"msg_cont_{reply.id}").click().run()
    longer = store.messages(cid(at))
    assert len(longer) == 2 and longer[-1].id == reply.id
    assert longer[-1].text.startswith(reply.text) and len(longer[-1].text) > len(reply.text)
    assert bubbles(at)[-1] == ("孙悟空", longer[-1].text)
    assert at.session_state[f"room_{cid(at)}"].room.entries[-1].text == longer[-1].text  # the room goes on from it


def test_typing_ends_banter_at_once_but_not_the_answers_to_the_person() -> None:
    """The chat input signals the first keystroke (xiyou.ui.chat_input; Chromium: tests/test_app_browser.py)."""
    from xiyou.room import Room
    from xiyou.room.engine import Plan
    from xiyou.ui.hub import RoomSession, typing_started

    rs = RoomSession(Room([]), [])
    rs.plan = Plan(["wukong"], banter_left=3)  # 悟空's answer still to come, then banter
    typing_started(rs)
    assert (rs.plan.queue, rs.plan.banter_left, rs.room.stopping) == (["wukong"], 0, False)  # he answers, no banter
    rs.plan = Plan([], banter_left=3)  # the pause before a banter turn
    typing_started(rs)
    assert rs.room.stopping  # stopped, as with ⏹️ Stop
    rs.room.plan([])  # (a new plan clears the stop)
    rs.plan, rs.live = Plan([], banter_left=2, banter_spoke=True), iter(())  # a banter turn streaming
    typing_started(rs)
    assert rs.room.stopping


def test_a_room_where_nobody_can_speak_says_what_to_do_and_why_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, page_store
) -> None:
    """No novel and no endpoints: the room page says how to make them speak, then the one reason all four share,
    once, naming them (it was the same line four times)."""
    monkeypatch.setenv("XIYOU_NOVEL", str(tmp_path / "no-novel.txt"))
    for name in ("XIYOU_ENDPOINTS", "XIYOU_API_BASE_URL", "XIYOU_API_MODEL"):
        monkeypatch.delenv(name, raising=False)
    at = AppTest.from_file(HUB_APP, default_timeout=120).run()
    assert not at.exception
    assert any("Nobody can speak yet" in m.value for m in at.markdown)
    reasons = [c.value for c in at.caption if "no-novel.txt" in c.value]
    assert len(reasons) == 1 and all(name in reasons[0] for name in ("唐三藏", "孙悟空", "猪八戒", "沙悟净"))


def test_a_private_chat_with_no_way_to_speak_says_why_and_offers_nothing_to_click(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, page_store
) -> None:
    """No novel and no endpoints: nobody can speak. His private chat says so in a visitor's words, folds the exact
    reason away, and greys out the input and the suggested questions (a click on one would be lost)."""
    from xiyou.ui.chat import CANNOT_SPEAK_DETAILS

    monkeypatch.setenv("XIYOU_NOVEL", str(tmp_path / "no-novel.txt"))
    for name in ("XIYOU_ENDPOINTS", "XIYOU_API_BASE_URL", "XIYOU_API_MODEL"):
        monkeypatch.delenv(name, raising=False)
    at = AppTest.from_file(HUB_APP, default_timeout=120).run()
    at.sidebar.button(key="conv_new_private_bajie").click().run()
    assert not at.exception
    assert [e.value for e in at.error] == ["猪八戒暂时无法说话 · 猪八戒 cannot speak now"]
    (details,) = [x for x in at.expander if x.label == CANNOT_SPEAK_DETAILS]
    assert "no-novel.txt" in " ".join(m.value for m in details.markdown)
    suggestions = [b for b in at.sidebar.button if b.key.startswith("suggest_")]
    assert suggestions and all(b.disabled for b in suggestions)
    assert at.chat_input[0].disabled


def test_a_private_chat_whose_model_fails_offers_no_button_it_cannot_honour(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, novel_path: Path, page_store
) -> None:
    """八戒 on local weights that are not there, the novel at hand: his private chat in the app says he cannot speak,
    without the single-character apps' 📖 button (this page takes its members from the endpoints file, so the button
    would do nothing)."""
    from xiyou.ui.chat import OFFLINE_OFFER

    endpoints = tmp_path / "endpoints.toml"
    endpoints.write_text('[bajie]\nbackend = "transformers"\n', encoding="utf-8")
    monkeypatch.setenv("XIYOU_ENDPOINTS", str(endpoints))
    monkeypatch.setenv("XIYOU_MODEL_BAJIE", str(tmp_path / "no-weights"))
    monkeypatch.setenv("XIYOU_NOVEL", str(novel_path))
    at = AppTest.from_file(HUB_APP, default_timeout=120).run()
    at.sidebar.button(key="conv_new_private_bajie").click().run()
    assert not at.exception
    assert [e.value for e in at.error] == ["猪八戒暂时无法说话 · 猪八戒 cannot speak now"]
    assert OFFLINE_OFFER not in [b.label for b in at.button]

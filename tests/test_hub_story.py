"""The story in the hub's group room (issue 16) under Streamlit's AppTest, in offline canon mode on the shared novel:
a scene picker, "after chapter N", who cannot join yet and why, the narrator, all stored with the conversation."""

from __future__ import annotations

from pathlib import Path

import pytest
from pages import bubbles, cid, widget
from streamlit.testing.v1 import AppTest

from xiyou.store import SQLiteStore
from xiyou.story import get_scene, membership

# every test: its own conversation store, and Streamlit's resource cache cleared before and after
pytestmark = pytest.mark.usefixtures("page_store")


def warnings(at: AppTest) -> str:
    return " ".join(w.value for w in at.warning)


def settings(page_store: Path, conversation: str) -> dict:
    conv = SQLiteStore(page_store / "conversations.db").get(conversation)
    assert conv is not None
    return conv.settings


def test_a_scene_sets_members_and_chapter_and_opens_with_the_narrators_setting(hub, page_store) -> None:
    at = hub()
    assert widget(at, "hub_scene").value == "" and widget(at, "hub_chapter").value == 0  # the whole journey
    scene = get_scene("gaolaozhuang")
    widget(at, "hub_scene").set_value(scene.id).run()
    assert not at.exception, at.exception
    assert widget(at, "hub_members").value == list(scene.present)
    assert widget(at, "hub_chapter").value == scene.chapter
    said = bubbles(at)
    assert len(said) == 1 and said[0][0] == "旁白" and scene.name in said[0][1] and scene.place in said[0][1]
    assert at.main.get("chat_message")[0].avatar == "📜"
    room = at.session_state[f"room_{cid(at)}"].room
    assert room.chapter == scene.chapter and scene.name in (room.setting or "")
    assert room.prefer_chapters == scene.chapters  # persona members' examples: the scene's lines first
    stored = SQLiteStore(page_store / "conversations.db").messages(cid(at))
    assert [m.speaker for m in stored] == ["narrator"] and stored[0].text.startswith(f"【{scene.name}】")
    # the room answers at the scene's point in the story: no canon line from a later chapter
    at.chat_input(key=f"hub_input_{cid(at)}").set_value("悟空，八戒，你们说说这高老庄的事").run()
    assert not at.exception, at.exception
    cited = [e.citation.chapter for e in room.entries if e.citation is not None]
    assert cited and max(cited) <= scene.chapter


def test_a_chapter_before_the_scene_leaves_it_and_one_before_bajie_joins_says_why(hub, page_store) -> None:
    at = hub()
    widget(at, "hub_scene").set_value("gaolaozhuang").run()
    assert widget(at, "hub_members").value == ["sanzang", "wukong", "bajie"]
    widget(at, "hub_chapter").set_value(7).run()  # 高老庄 is chapters 18-19
    assert not at.exception, at.exception
    assert widget(at, "hub_scene").value == "" and settings(page_store, cid(at))["scene"] is None
    assert settings(page_store, cid(at))["chapter"] == 7
    room = at.session_state[f"room_{cid(at)}"].room
    assert room.setting is None and room.chapter == 7
    assert "bajie" not in {m.id for m in room.members}  # he first speaks in chapter 8: said why, never a traceback
    assert membership("bajie", 7).reason in warnings(at)
    # a scene picked again brings its members and chapter back
    widget(at, "hub_scene").set_value("liushahe").run()
    assert not at.exception, at.exception
    assert {m.id for m in room.members} == set(get_scene("liushahe").present) and room.chapter == 22
    assert not warnings(at)


def test_narrate_posts_a_line_of_the_novels_narration(hub, page_store) -> None:
    at = hub()
    widget(at, "hub_scene").set_value("baigujing").run()
    assert widget(at, "hub_narrate").disabled  # no narrator in the room yet
    widget(at, "hub_narrator").set_value(True).run()
    assert not at.exception, at.exception
    before = bubbles(at)
    widget(at, "hub_narrate").click().run()
    assert not at.exception, at.exception
    after = bubbles(at)
    assert len(after) == len(before) + 1 and after[-1][0] == "旁白" and after[-1][1].strip()
    assert "“" not in after[-1][1] or "道" not in after[-1][1]  # narration, not someone's line
    stored = SQLiteStore(page_store / "conversations.db").messages(cid(at))
    assert [m.speaker for m in stored] == ["narrator", "narrator"]


def test_the_story_settings_survive_a_reload(hub, page_store) -> None:
    at = hub()
    widget(at, "hub_scene").set_value("huoyanshan").run()
    widget(at, "hub_narrator").set_value(True).run()
    widget(at, "hub_chapter").set_value(70).run()  # later than the scene: it stays
    assert not at.exception, at.exception
    stored = settings(page_store, cid(at))
    assert (stored["scene"], stored["chapter"], stored["narrator"]) == ("huoyanshan", 70, True)
    again = hub(cid(at))  # a new session opening the same conversation
    assert widget(again, "hub_scene").value == "huoyanshan"
    assert widget(again, "hub_chapter").value == 70
    assert widget(again, "hub_narrator").value is True and not widget(again, "hub_narrate").disabled
    assert bubbles(again) == bubbles(at)
    room = again.session_state[f"room_{cid(again)}"].room
    assert room.chapter == 70 and room.narrator is not None


def keyed(at: AppTest, prefix: str) -> list:
    return [b for b in at.button if (b.key or "").startswith(prefix)]


def test_a_narrators_line_offers_only_what_works_on_it(hub, page_store) -> None:
    at = hub()
    widget(at, "hub_scene").set_value("baigujing").run()
    widget(at, "hub_narrator").set_value(True).run()
    widget(at, "hub_narrate").click().run()
    assert not at.exception, at.exception
    assert [name for name, _ in bubbles(at)] == ["旁白", "旁白"]
    # narration is told, not answered: no 🔄 regenerate / ➡️ continue on it (📜 Narrate tells the next passage)
    assert not keyed(at, "msg_regen_") and not keyed(at, "msg_cont_")
    store = SQLiteStore(page_store / "conversations.db")
    told = store.messages(cid(at))
    # what it does show works: ⋯ delete takes the line out of the transcript and the store
    keyed(at, f"msg_delete_{told[-1].id}")[0].click().run()
    assert not at.exception, at.exception
    assert len(bubbles(at)) == 1 and [m.id for m in store.messages(cid(at))] == [told[0].id]
    # a character's last reply keeps its 🔄, and it works: a second version, ◀ ▶ between them
    at.chat_input(key=f"hub_input_{cid(at)}").set_value("悟空，那女子是什么人？").run()
    assert not at.exception, at.exception
    last = store.messages(cid(at))[-1]
    assert last.speaker != "narrator"
    keyed(at, f"msg_regen_{last.id}")[0].click().run()
    assert not at.exception, at.exception
    again = next(m for m in store.messages(cid(at)) if m.id == last.id)
    assert len(again.alternatives) == 2 and keyed(at, f"msg_prev_{last.id}")


def test_a_scene_picked_in_a_room_with_a_conversation_starts_a_new_room(hub, page_store) -> None:
    at = hub()
    first = cid(at)
    at.chat_input(key=f"hub_input_{first}").set_value("悟空，你从哪里来？").run()
    assert not at.exception, at.exception
    store = SQLiteStore(page_store / "conversations.db")
    before = [(m.speaker, m.text) for m in store.messages(first)]
    assert len(before) >= 2
    scene = get_scene("gaolaozhuang")
    widget(at, "hub_scene").set_value(scene.id).run()
    assert not at.exception, at.exception
    new = cid(at)
    assert new != first  # the scene opened in a room of its own: its setting first, nothing from the other room
    said = bubbles(at)
    assert len(said) == 1 and said[0][0] == "旁白" and scene.name in said[0][1]
    assert widget(at, "hub_scene").value == scene.id and widget(at, "hub_members").value == list(scene.present)
    assert settings(page_store, new)["scene"] == scene.id
    assert any("新的群聊" in t.value for t in at.toast)
    # the conversation that was going on is kept as it was, and listed
    assert [(m.speaker, m.text) for m in store.messages(first)] == before
    assert settings(page_store, first).get("scene") is None
    assert keyed(at, f"conv_open_{first}") and keyed(at, f"conv_open_{new}")
    old = hub(first)
    assert widget(old, "hub_scene").value == "" and len(bubbles(old)) == len(before)


def test_a_scene_picked_again_before_anyone_speaks_replaces_the_setting(hub, page_store) -> None:
    at = hub()
    first = cid(at)
    widget(at, "hub_scene").set_value("gaolaozhuang").run()
    widget(at, "hub_scene").set_value("baigujing").run()
    assert not at.exception, at.exception
    assert cid(at) == first
    said = bubbles(at)
    assert len(said) == 1 and get_scene("baigujing").name in said[0][1]
    assert [m.speaker for m in SQLiteStore(page_store / "conversations.db").messages(first)] == ["narrator"]

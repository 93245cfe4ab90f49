"""Who is present: a member who joins later, or leaves for a while, sees only the lines said while he was there."""

from __future__ import annotations

import json
from collections.abc import Iterator

from xiyou.character import load_characters
from xiyou.room import Room, TurnEnded, transcript_jsonl
from xiyou.room.member import Member
from xiyou.room.view import build_view

C = load_characters()


class Recording:
    """Answers with a fixed line and records every message list it was given."""

    label = "recording"

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.seen: list[list[dict]] = []

    def stream(self, messages, settings, cancel=None) -> Iterator[str]:
        self.seen.append([dict(m) for m in messages])
        yield f"{self.reply}（{len(self.seen)}）"


def _said(messages: list[dict]) -> str:
    return "\n".join(m["content"] for m in messages if m["role"] != "system")


def test_a_member_who_joins_later_does_not_hear_what_was_said_before() -> None:
    wukong, bajie = Recording("俺老孙在此。"), Recording("老猪来也。")
    m_wukong, m_bajie = Member(C["wukong"], wukong), Member(C["bajie"], bajie)
    room = Room([m_wukong], policy="all", banter_turns=0)
    room.say("悟空，那妖精的暗号是青松")
    assert [e for e in room.run() if isinstance(e, TurnEnded)]
    room.set_members([m_wukong, m_bajie])
    room.say("大家好")
    list(room.run())
    assert "暗号是青松" in _said(wukong.seen[-1])  # he was there
    assert "暗号是青松" not in _said(bajie.seen[-1])  # he was not
    assert "俺老孙在此。（1）" not in _said(bajie.seen[-1])
    assert "俺老孙在此。（2）" in _said(bajie.seen[-1])  # 悟空's answer to 大家好, said with 八戒 there
    assert "大家好" in _said(bajie.seen[-1])


def test_a_member_who_left_for_a_while_misses_only_that_while() -> None:
    sanzang, wujing = Recording("阿弥陀佛。"), Recording("师父说得是。")
    m_sanzang, m_wujing = Member(C["sanzang"], sanzang), Member(C["wujing"], wujing)
    room = Room([m_sanzang, m_wujing], policy="all", banter_turns=0)
    room.say("第一句")
    list(room.run())
    room.set_members([m_sanzang])  # 沙僧 steps out
    room.say("背着沙僧说的话")
    list(room.run())
    room.set_members([m_sanzang, m_wujing])  # and comes back
    room.say("第三句")
    list(room.run())
    heard = _said(wujing.seen[-1])
    assert "第一句" in heard and "第三句" in heard
    assert "背着沙僧说的话" not in heard
    assert "背着沙僧说的话" in _said(sanzang.seen[-1])
    assert {"role": "assistant", "content": "师父说得是。（1）"} in wujing.seen[-1]  # his own line stays
    view = build_view(C["wujing"], room.entries, [C["sanzang"], C["wujing"]], room.person)
    assert "背着沙僧说的话" not in _said(view)


def test_the_transcript_records_who_was_present() -> None:
    room = Room([Member(C["wukong"], Recording("嗯"))], policy="all", banter_turns=0)
    room.say("你好")
    list(room.run())
    rows = [json.loads(line) for line in transcript_jsonl(room.entries).splitlines()]
    assert [r["present"] for r in rows] == [["wukong"], ["wukong"]]

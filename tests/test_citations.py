"""Citations as data: a backend's Citation travels to the transcript entry, exports and views, never as text."""

from __future__ import annotations

import json

from xiyou.backends.base import Citation, GenerationSettings, collect, collect_cited, text_only
from xiyou.character import load_characters
from xiyou.room import Delta, Room, TurnEnded, transcript_jsonl, transcript_markdown
from xiyou.room.member import Member
from xiyou.room.view import build_view

C = load_characters()


class Cited:
    """Says `text` in two pieces, then cites chapter 27, said to 唐三藏 (as the canon backend does)."""

    label = "cited"

    def __init__(self, text: str) -> None:
        self.text = text

    def stream(self, messages, settings, cancel=None):
        half = len(self.text) // 2
        yield self.text[:half]
        yield self.text[half:]
        yield Citation(27, "唐三藏")


def test_text_only_passes_text_and_hands_over_the_citation() -> None:
    got: list[Citation] = []
    closed = []

    def pieces():
        try:
            yield "师父，"
            yield "莫怕。"
            yield Citation(3)
        finally:
            closed.append(True)

    assert list(text_only(pieces(), got.append)) == ["师父，", "莫怕。"]
    assert got == [Citation(3)] and closed == [True]
    assert list(text_only(["a", Citation(1), "b"])) == ["a", "b"]  # no callback: the citation is just left out
    backend = Cited("俺老孙去也！")
    assert collect(backend, [{"role": "user", "content": "hi"}], GenerationSettings()) == "俺老孙去也！"
    assert collect_cited(backend, [{"role": "user", "content": "hi"}], GenerationSettings()) == (
        "俺老孙去也！",
        Citation(27, "唐三藏"),
    )


class CitedThenStalls:
    """Cites chapter 27 first (as the canon backend does), says a little, then hangs until cancelled."""

    label = "cited-then-stalls"

    def stream(self, messages, settings, cancel=None):
        yield Citation(27, "唐三藏")
        yield "师父，"
        while not (cancel is not None and cancel.wait(0.01)):
            pass


def test_a_reply_stopped_midway_keeps_its_citation() -> None:
    room = Room([Member(C["wukong"], CitedThenStalls())])
    room.say("悟空")
    for event in room.run(banter=0):
        if isinstance(event, Delta):
            room.stop()  # the person presses stop while 悟空 is talking
    entry = room.entries[-1]
    assert (entry.text, entry.interrupted, entry.citation) == ("师父，", True, Citation(27, "唐三藏"))
    assert "第二十七回" in transcript_markdown(room.entries)  # the export still says where the words are from


def test_the_room_keeps_the_citation_beside_the_line() -> None:
    room = Room([Member(C["wukong"], Cited("俺老孙去也！")), Member(C["bajie"], Cited("哥啊，等等老猪。"))])
    room.say("悟空、八戒，走吧")
    ended = [e for e in room.run(banter=0) if isinstance(e, TurnEnded)]
    assert [e.entry.text for e in ended] == ["俺老孙去也！", "哥啊，等等老猪。"]
    assert all(e.entry.citation == Citation(27, "唐三藏") for e in ended)
    assert room.entries[0].citation is None  # the person's line has none

    records = [json.loads(line) for line in transcript_jsonl(room.entries).splitlines()]
    assert "citation" not in records[0]
    assert records[1]["text"] == "俺老孙去也！"
    assert records[1]["citation"] == {"chapter": 27, "said_to": "唐三藏", "label": "第二十七回 · 对唐三藏说"}
    md = transcript_markdown(room.entries)
    assert md.count("*📖 《西游记》第二十七回 · 对唐三藏说*") == 2

    view = build_view(C["bajie"], room.entries, [C["wukong"], C["bajie"]], room.person)  # 八戒 was there
    heard = "\n".join(m["content"] for m in view)
    assert "俺老孙去也！" in heard and "第二十七回" not in heard  # others hear the words, not the citation

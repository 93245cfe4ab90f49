"""The room engine with scripted backends: policies in action, banter cap, failures, guards, stop."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator, Sequence

import pytest

from xiyou.backends.base import BackendError, GenerationSettings, Message
from xiyou.character import load_characters
from xiyou.room import (
    PERSON,
    Delta,
    MemberFailed,
    ReplyDropped,
    Room,
    Stopped,
    TurnEnded,
    TurnStarted,
    Waiting,
    transcript_jsonl,
    transcript_markdown,
)
from xiyou.room.member import Member

C = load_characters()


class Scripted:
    """A Backend that answers with `reply(messages)` in small deltas and records what it was asked."""

    def __init__(self, reply: str | Callable[[Sequence[Message]], str], chunk: int = 2, fail: Exception | None = None):
        self.reply = reply
        self.chunk = chunk
        self.fail = fail
        self.calls: list[tuple[list[Message], GenerationSettings]] = []
        self.cancels: list[threading.Event] = []
        self.label = "scripted"

    def stream(self, messages, settings, cancel=None) -> Iterator[str]:
        self.calls.append(([dict(m) for m in messages], settings))
        if cancel is not None:
            self.cancels.append(cancel)
        if self.fail is not None:
            raise self.fail
        text = self.reply(messages) if callable(self.reply) else self.reply
        for i in range(0, len(text), self.chunk):
            if cancel is not None and cancel.is_set():
                return
            yield text[i : i + self.chunk]


class Stalls:
    """Says a little, then hangs until cancelled (a server that stopped answering mid-stream)."""

    label = "stalls"

    def __init__(self, first: str | None = "呃……") -> None:
        self.first = first
        self.cancelled = threading.Event()

    def stream(self, messages, settings, cancel=None) -> Iterator[str]:
        if self.first:
            yield self.first
        while not (cancel is not None and cancel.wait(0.01)):
            pass
        self.cancelled.set()


def room_of(backends: dict[str, object], **kwargs) -> Room:
    return Room([Member(C[cid], b, timeout=kwargs.pop("timeout", 5.0)) for cid, b in backends.items()], **kwargs)


def posted(room: Room) -> list[tuple[str, str]]:
    return [(e.speaker, e.text) for e in room.entries]


def test_mentioned_members_answer_in_order_and_stream_deltas() -> None:
    room = room_of({"wukong": Scripted("俺老孙在此！"), "bajie": Scripted("饿了饿了"), "wujing": Scripted("是")})
    room.say("八戒、悟空，你们两个吵什么？")
    events = list(room.run(banter=0))
    assert [e.speaker for e in events if isinstance(e, TurnStarted)] == ["bajie", "wukong"]
    deltas = [e.text for e in events if isinstance(e, Delta) and e.speaker == "bajie"]
    assert len(deltas) > 1 and "".join(deltas) == "饿了饿了"
    assert posted(room) == [(PERSON, "八戒、悟空，你们两个吵什么？"), ("bajie", "饿了饿了"), ("wukong", "俺老孙在此！")]
    assert [type(e) for e in events][-1] is TurnEnded


def test_each_speaker_sees_its_own_lines_as_assistant_and_others_prefixed() -> None:
    wukong, bajie = Scripted("呆子！"), Scripted("猴哥！")
    room = room_of({"wukong": wukong, "bajie": bajie}, person="小施主")
    room.say("悟空，八戒")
    list(room.run(banter=0))
    room.say("再来")
    list(room.run(speakers=["wukong"], banter=0))
    messages, settings = wukong.calls[-1]
    assert messages[1:] == [
        {"role": "user", "content": "小施主：悟空，八戒"},
        {"role": "assistant", "content": "呆子！"},
        {"role": "user", "content": "猪八戒：猴哥！\n\n小施主：再来"},
    ]
    assert "\n猪八戒：" in settings.stop and "\n小施主：" in settings.stop
    assert settings.temperature == C["wukong"].generation.temperature


def test_banter_respects_the_cap_and_never_repeats_a_speaker() -> None:
    backends = {cid: Scripted(f"{C[cid].name}有话说") for cid in ("sanzang", "wukong", "bajie", "wujing")}
    for seed in range(10):
        room = room_of(backends, policy="mention", banter_turns=3, seed=seed)
        room.say("八戒，你先说")
        list(room.run())
        speakers = [e.speaker for e in room.entries[1:]]
        assert len(speakers) == 1 + 3 and speakers[0] == "bajie"
        assert all(a != b for a, b in itertools.pairwise(speakers))
    room.say("大家说")
    list(room.run(banter=0))
    assert room.entries[-1].speaker != PERSON  # someone answered; banter=0 adds nothing more
    alone = room_of({"bajie": Scripted("俺老猪自言自语")}, banter_turns=2)
    alone.say("八戒")
    list(alone.run())
    assert [e.speaker for e in alone.entries] == [PERSON, "bajie", "bajie", "bajie"]


def test_continue_lets_them_talk_without_the_person() -> None:
    room = room_of({"wukong": Scripted("八戒，走了"), "bajie": Scripted("猴哥，等等")}, banter_turns=4)
    room.say("悟空")
    list(room.run(banter=0))
    list(room.continue_(3))
    assert [e.speaker for e in room.entries] == [PERSON, "wukong", "bajie", "wukong", "bajie"]


def test_a_failing_member_is_an_error_notice_and_the_room_goes_on() -> None:
    dead = Scripted("", fail=BackendError("cannot reach http://127.0.0.1:9/v1 (connection refused); start the server"))
    broken = Scripted("", fail=ZeroDivisionError("division by zero"))
    alive = Scripted(lambda ms: "师父莫慌")
    room = room_of({"bajie": dead, "wujing": broken, "wukong": alive}, policy="all", banter_turns=2, seed=0)
    room.say("徒弟们何在？")
    events = list(room.run())
    failures = [e for e in events if isinstance(e, MemberFailed)]
    assert [f.speaker for f in failures] == ["bajie", "wujing"]
    assert "connection refused" in failures[0].notice.message and "猪八戒" in failures[0].notice.message
    assert "ZeroDivisionError" in failures[1].notice.message
    assert room.status["bajie"].failing and room.status["wujing"].failing and not room.status["wukong"].failing
    assert posted(room) == [(PERSON, "徒弟们何在？"), ("wukong", "师父莫慌")]  # failed members not drawn again
    # the error is never a chat line, and no character ever sees it
    assert all("refused" not in m["content"] for ms, _ in alive.calls for m in ms)
    assert "refused" not in transcript_jsonl(room.entries)
    # the next time it works, the status turns green again
    dead.fail = None
    dead.reply = "来了来了"
    room.say("八戒？")
    list(room.run(speakers=["bajie"], banter=0))
    assert room.status["bajie"].state == "ok" and room.entries[-1].text == "来了来了"


def test_a_stalled_member_times_out_mid_stream_and_its_stream_is_cancelled() -> None:
    stall = Stalls()
    room = room_of({"bajie": stall, "wukong": Scripted("俺来")}, timeout=1.2, banter_turns=0)
    room.say("八戒、悟空")
    events = list(room.run())
    failed = next(e for e in events if isinstance(e, MemberFailed))
    assert "no reply within 1.2 s" in failed.notice.message
    waits = [e for e in events if isinstance(e, Waiting)]
    assert waits and all(w.speaker == "bajie" for w in waits)  # a page can show "thinking…" meanwhile
    assert stall.cancelled.wait(2), "the stalled stream is told to stop"
    assert posted(room)[-1] == ("wukong", "俺来")
    assert all(e.speaker != "bajie" for e in room.entries)


def test_guards_trim_cross_speaker_text_and_drop_empty_replies() -> None:
    room = room_of(
        {
            "wukong": Scripted("孙悟空：呆子休走！\n猪八戒：猴哥饶命！\n沙悟净：二位莫打"),
            "bajie": Scripted("唐三藏：悟能，你又偷懒"),
        },
        banter_turns=0,
    )
    room.say("悟空、八戒")
    events = list(room.run())
    assert posted(room)[1:] == [("wukong", "呆子休走！")]
    shown = "".join(e.text for e in events if isinstance(e, Delta) and e.speaker == "wukong")
    assert shown == "呆子休走！"
    dropped = [e for e in events if isinstance(e, ReplyDropped)]
    assert [d.speaker for d in dropped] == ["bajie"] and "empty reply" in dropped[0].notice.message


def test_stop_ends_the_reply_in_progress_and_no_one_else_starts() -> None:
    slow = Stalls(first="师父，")
    room = room_of({"wukong": slow, "bajie": Scripted("俺也说")}, banter_turns=3)
    room.say("悟空、八戒")
    events = []
    for event in room.run():
        events.append(event)
        if isinstance(event, Delta):
            room.stop()  # the person presses stop while 悟空 is talking
    assert isinstance(events[-1], Stopped)
    assert slow.cancelled.wait(2)
    assert posted(room)[1:] == [("wukong", "师父，")] and room.entries[-1].interrupted
    assert not any(isinstance(e, TurnStarted) and e.speaker == "bajie" for e in events)
    # a new message clears the stop
    room.say("八戒")
    list(room.run(banter=0))
    assert posted(room)[-1] == ("bajie", "俺也说")


def test_closing_the_event_stream_keeps_what_was_shown() -> None:
    slow = Stalls(first="且慢")
    room = room_of({"wukong": slow}, banter_turns=0)
    room.say("悟空")
    run = room.run()
    for event in run:
        if isinstance(event, Delta):
            break
    run.close()  # what a page rerun does to a running script
    assert slow.cancelled.wait(2)
    assert posted(room)[-1] == ("wukong", "且慢") and room.status["wukong"].state == "ok"


def test_muted_members_are_never_picked_and_manual_speak_works() -> None:
    room = room_of({"wukong": Scripted("我"), "bajie": Scripted("俺")}, policy="all", banter_turns=2)
    room.mute("bajie")
    room.say("八戒、悟空")
    list(room.run())
    assert {e.speaker for e in room.entries} == {PERSON, "wukong"}
    assert room.status["bajie"].state == "muted"
    room.mute("bajie", False)
    room.policy = "manual"
    room.say("谁来？")
    assert room.next_speakers() == []
    list(room.speak("bajie"))
    assert posted(room)[-1] == ("bajie", "俺")


def test_retriever_adds_context_per_speaker_and_its_failure_is_not_fatal() -> None:
    seen: list[str] = []

    def retriever(character, messages):
        seen.append(character.id)
        if character.id == "bajie":
            raise RuntimeError("index missing")
        return [{"role": "system", "content": messages[0]["content"] + "\n[原著] 第1回"}, *messages[1:]]

    wukong, bajie = Scripted("有"), Scripted("俺")
    room = Room([Member(C["wukong"], wukong, retriever=retriever), Member(C["bajie"], bajie, retriever=retriever)])
    room.say("悟空、八戒")
    list(room.run(banter=0))
    assert seen == ["wukong", "bajie"]
    assert wukong.calls[0][0][0]["content"].endswith("[原著] 第1回")
    assert posted(room)[-1] == ("bajie", "俺")


def test_unavailable_member_is_red_and_skipped() -> None:
    room = Room([Member(C["wukong"], None, unavailable="no endpoint and no novel"), Member(C["bajie"], Scripted("俺"))])
    room.say("悟空、八戒")
    list(room.run(banter=0))
    assert room.status["wukong"].failing and "no endpoint" in (room.status["wukong"].message or "")
    assert posted(room)[1:] == [("bajie", "俺")]


def test_exports_and_reset() -> None:
    room = room_of({"bajie": Scripted("吃*斋*去\n<b>粗</b>")}, banter_turns=0)
    room.say("八戒")
    list(room.run())
    md = transcript_markdown(room.entries)
    assert "**施主**" in md and "**猪八戒**" in md and "吃*斋*去" in md
    lines = transcript_jsonl(room.entries).splitlines()
    assert '"speaker": "猪八戒"' in lines[1] and '"text": "吃*斋*去\\n<b>粗</b>"' in lines[1]
    room.reset()
    assert room.entries == [] and room.notices == []


def test_unknown_speaker_and_empty_message_fail_clearly() -> None:
    room = room_of({"bajie": Scripted("俺")})
    with pytest.raises(ValueError, match="empty"):
        room.say("   ")
    room.say("hi")
    with pytest.raises(KeyError, match="members: bajie"):
        list(room.run(speakers=["erlang"]))


def test_stop_from_another_thread_while_a_backend_is_silent() -> None:
    room = room_of({"wukong": Stalls(first=None)}, banter_turns=0, timeout=30)
    room.say("悟空")
    timer = threading.Timer(0.2, room.stop)
    timer.start()
    started = time.monotonic()
    events = list(room.run())
    assert isinstance(events[-1], Stopped)
    assert time.monotonic() - started < 20  # not the 30 s timeout: the stop was noticed


def test_a_member_who_leaves_while_planned_is_skipped() -> None:
    room = room_of({"wukong": Scripted("我"), "bajie": Scripted("俺")}, banter_turns=0)
    room.say("八戒、悟空")
    plan = room.plan()
    assert plan.queue == ["bajie", "wukong"]
    room.set_members([m for m in room.members if m.id != "bajie"])
    while not plan.done:
        list(room.step(plan))
    assert posted(room)[1:] == [("wukong", "我")]

"""The narrator: canon narration from the scene's chapters, a persona narrator that never speaks for anyone,
narration between banter turns, and the guards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from xiyou.backends.base import Citation
from xiyou.character import load_characters
from xiyou.room import NARRATOR, Room, TurnEnded
from xiyou.room.member import Member
from xiyou.story import get_scene
from xiyou.story.narrator import (
    QUOTE_MARKS,
    CanonNarration,
    NarratorBackend,
    cut_at_speech,
    narration_passages,
    narrator_character,
)
from xiyou.story.rooms import scene_story

C = load_characters()


class Scripted:
    """An LLM stand-in: answers with `reply` in small pieces and records the messages it was given."""

    label = "scripted"

    def __init__(self, reply: str) -> None:
        self.reply = reply
        self.seen: list[list[dict]] = []

    def stream(self, messages, settings, cancel=None) -> Iterator[str]:
        self.seen.append([dict(m) for m in messages])
        for i in range(0, len(self.reply), 3):
            yield self.reply[i : i + 3]


def _ended(events) -> list:
    return [e.entry for e in events if isinstance(e, TurnEnded)]


def test_canon_narration_is_the_novels_narration_of_the_scene(canon) -> None:
    scene = get_scene("baigujing")
    start = (scene.opening[0].chapter, scene.opening[0].offset)
    passages = narration_passages(canon.novel, scene.chapters, start)
    assert len(passages) >= 5
    for p in passages:
        assert canon.novel.chapter(p.chapter).text[p.offset :].startswith(p.text)
        assert not any(q in p.text for q in QUOTE_MARKS)  # nobody speaks in a narration passage
        assert (p.chapter, p.offset) >= start and p.chapter in scene.chapters


def test_canon_narrator_in_a_room_tells_the_scene_in_order(canon) -> None:
    scene = get_scene("baigujing")
    backend = CanonNarration(canon.novel, scene.chapters, (scene.opening[0].chapter, scene.opening[0].offset))
    narrator = Member(narrator_character(), backend)
    room = Room([Member(C["wukong"], Scripted("师父，那是个妖精！"))], narrator=narrator, banter_turns=0)
    room.post_narration(scene.setting())
    first = _ended(room.narrate())
    second = _ended(room.narrate())
    assert [e.text for e in first + second] == [p.text for p in backend.passages[:2]]
    assert all(e.speaker == NARRATOR and e.citation == Citation(27) for e in first + second)
    room.say("大圣，你看那女子")
    list(room.run())
    heard = "\n".join(m["content"] for m in room.members[0].backend.seen[-1])
    assert f"旁白：{backend.passages[1].text}" in heard  # the pilgrims hear the narration
    assert scene.situation in heard


@pytest.mark.parametrize(
    ("model_says", "posted"),
    [
        ("夜色渐深，山风阵阵。\n孙悟空：师父莫怕！", "夜色渐深，山风阵阵。"),
        ("众人行到山前。行者笑道：“师父，这山好险！”", "众人行到山前。"),
        ("那呆子听了，口里嘟嘟囔囔。\n唐三藏：悟能！", "那呆子听了，口里嘟嘟囔囔。"),
        ("施主：我也要说", ""),
        ("月色照着白虎岭，松影斑驳，远处隐隐传来猿啼。", "月色照着白虎岭，松影斑驳，远处隐隐传来猿啼。"),
    ],
)
def test_a_persona_narrator_never_writes_anyones_lines(model_says: str, posted: str) -> None:
    inner = Scripted(model_says)
    scene = get_scene("baigujing")
    narrator = Member(narrator_character(), NarratorBackend(inner))
    members = [Member(C["wukong"], Scripted("嗯")), Member(C["sanzang"], Scripted("阿弥陀佛"))]
    room = Room(members, narrator=narrator, chapter=scene.chapter, setting=scene_story(scene))
    events = list(room.narrate())
    assert [e.text for e in _ended(events)] == ([posted] if posted else [])
    system = inner.seen[-1][0]["content"]
    assert system.startswith(narrator_character().meta_instruction)
    assert "【此刻的场景】三打白骨精 · 白虎岭" in system and "【故事进展】" in system


def test_cut_at_speech_drops_a_dangling_speech_intro() -> None:
    assert cut_at_speech("天色将晚。八戒嚷道：“饿了！”") == "天色将晚。"
    assert cut_at_speech("天色将晚，八戒嚷道：「饿了」") == ""
    assert cut_at_speech("一路无话。") == "一路无话。"


def test_the_narrator_speaks_between_banter_turns_when_asked() -> None:
    members = [Member(C["wukong"], Scripted("呆子！")), Member(C["bajie"], Scripted("猴哥！"))]
    narrator = Member(narrator_character(), Scripted("一阵风过。"))
    room = Room(members, policy="round_robin", banter_turns=3, narrator=narrator, narrate_banter=True, seed=1)
    room.say("悟空，你说")
    speakers = [e.speaker for e in _ended(room.run())]
    assert speakers == ["wukong", "bajie", NARRATOR, "wukong", NARRATOR, "bajie"]
    quiet = Room(members, policy="round_robin", banter_turns=3, narrator=narrator, seed=1)
    quiet.say("悟空，你说")
    assert NARRATOR not in [e.speaker for e in _ended(quiet.run())]  # off unless enabled, never by a policy


def test_a_room_without_a_narrator_says_so() -> None:
    room = Room([Member(C["wukong"], Scripted("嗯"))])
    with pytest.raises(ValueError, match="no narrator"):
        list(room.narrate())
    entry = room.post_narration("话说……")
    assert entry.speaker == NARRATOR and entry.name == "旁白"


def test_xiyou_room_narrator_on_the_persona_model_never_writes_speech(novel_path, monkeypatch) -> None:
    """Persona mode on one model (XIYOU_API_BASE_URL): the narrator speaks on that model with its own instruction,
    and what the model writes after a speech intro never reaches the transcript."""
    import json

    from click.testing import CliRunner
    from scripted_openai import ScriptedOpenAI

    from xiyou.cli import main

    def reply(request) -> str:
        if request.messages[0]["content"].startswith(narrator_character().meta_instruction):
            return "白虎岭上阴风飒飒。行者笑道：“师父，那是个妖精！”"
        return "俺老孙知道了。"

    with ScriptedOpenAI(reply=reply, chunk_chars=2) as server:
        for var in ("XIYOU_ENDPOINTS", "XIYOU_BACKEND", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("XIYOU_API_BASE_URL", server.base_url)
        monkeypatch.setenv("XIYOU_API_MODEL", "general")
        monkeypatch.setenv("XIYOU_NOVEL", str(novel_path))
        result = CliRunner().invoke(main, ["room", "--scene", "baigujing", "--narrator", "--turns", "0", "悟空？"])
        systems = [r.messages[0]["content"] for r in server.chat_requests()]
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.output.splitlines() if line.startswith("{")]
    assert [line["id"] for line in lines[:3]] == [NARRATOR, NARRATOR, "person"]
    assert lines[1]["text"] == "白虎岭上阴风飒飒。"  # the model's speech was cut off
    narrator_system = next(s for s in systems if s.startswith(narrator_character().meta_instruction))
    assert "【此刻的场景】三打白骨精 · 白虎岭" in narrator_system and "第二十七回" in narrator_system
    assert any(line["id"] == "wukong" and line["text"] == "俺老孙知道了。" for line in lines)

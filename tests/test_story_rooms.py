"""A room set after chapter N or in a scene, end to end: no exchange from a later chapter ever reaches a canon
reply or a model's prompt (all four characters, many N); `xiyou room --chapter/--scene/--narrator`; eval leaks."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.evaluation.leaks import first_mentions, leaks
from xiyou.canon.loader import parse_number
from xiyou.character import load_characters
from xiyou.cli import main
from xiyou.room import NARRATOR, Room, TurnEnded
from xiyou.room.lineup import build_lineup, canon_retriever
from xiyou.room.member import Member
from xiyou.story import StoryError, get_scene, membership
from xiyou.story.rooms import plan_story_room

C = load_characters()
IDS = ("sanzang", "wukong", "bajie", "wujing")
CHAPTERS = (3, 10, 14, 19, 22, 27, 35, 47, 59, 72, 90)
QUESTIONS = ("你见过白骨精吗？", "火焰山那么热，你们是怎么过去的？", "师父在哪里？", "你们取到真经了吗？")
STORY_QUESTIONS = Path(__file__).resolve().parent.parent / "pipeline" / "data" / "story_questions.txt"


@pytest.fixture(autouse=True)
def _no_pacing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XIYOU_CANON_CPS", "0")


def _refs(text: str) -> list[int]:
    return [parse_number(m) for m in re.findall(r"第([零一二三四五六七八九十百]+)回", text)]


@pytest.mark.parametrize("cid", IDS)
def test_no_later_line_reaches_a_canon_reply_in_a_room(canon, novel_path: Path, cid: str) -> None:
    table = first_mentions(canon)
    for n in CHAPTERS:
        if not membership(cid, n, canon).can_join:
            continue
        lineup = build_lineup([cid], endpoints=None, novel=novel_path, max_chapter=n)
        room = Room(lineup.members([cid]), policy="all", banter_turns=0)
        for q in QUESTIONS:
            room.say(q)
            for e in room.run():
                if isinstance(e, TurnEnded):
                    assert e.entry.citation is not None and e.entry.citation.chapter <= n, (cid, n, q)
                    assert leaks(e.entry.text, n, [e.entry.citation], table=table) == [], (cid, n, e.entry.text)


class Recording:
    label = "recording"

    def __init__(self, mode: str) -> None:
        self.prompt_mode = mode  # as the backend factory sets it from the endpoint's `prompt`
        self.seen: list[list[dict]] = []

    def stream(self, messages, settings, cancel=None) -> Iterator[str]:
        self.seen.append([dict(m) for m in messages])
        yield "嗯。"


@pytest.mark.parametrize("mode", ["meta", "persona"])
@pytest.mark.parametrize("cid", IDS)
def test_no_later_line_reaches_a_model_members_prompt(canon, cid: str, mode: str) -> None:
    table = first_mentions(canon)
    for n in CHAPTERS:
        if not membership(cid, n, canon).can_join:
            continue
        backend = Recording(mode)
        hints = canon_retriever(canon, k=5, token_budget=1500, max_chapter=n) if mode == "meta" else None
        room = Room([Member(C[cid], backend, retriever=hints)], policy="all", banter_turns=0, chapter=n)
        for q in QUESTIONS:
            room.say(q)
            list(room.run())
            system = backend.seen[-1][0]["content"]
            added = system[system.index("【故事进展】") :]  # the story so far, the room, the canon examples
            assert "你一概不知" in added and "以下是《西游记》原著中" in added
            assert _refs(added) and max(_refs(added)) <= n, (cid, n)
            # the examples are labelled with his display name (唐三藏 before chapter 14 too): that is no knowledge
            assert leaks(added, n, table=table, ignore=C[cid].names) == [], (cid, n, q)


def test_a_scene_rooms_persona_members_get_the_scenes_lines_first(canon) -> None:
    scene = get_scene("huoyanshan")
    backend = Recording("persona")
    room = Room(
        [Member(C["wukong"], backend)], policy="all", banter_turns=0, chapter=scene.chapter,
        prefer_chapters=scene.chapters,
    )  # fmt: skip
    room.say("师父在哪里？")  # anywhere in the book, the best matches are outside the scene
    list(room.run())
    system = backend.seen[-1][0]["content"]
    examples = _refs(system[system.index("以下是《西游记》原著中") :])
    assert examples and all(c in scene.chapters for c in examples[:3]) and max(examples) <= scene.chapter, examples


def test_plan_story_room_takes_members_and_chapter_from_the_scene(canon) -> None:
    plan = plan_story_room(scene="huoyanshan", canon=canon)
    assert plan.ids == IDS and plan.chapter == 61 and plan.chapters == range(59, 62)
    assert plan_story_room(["wukong"], 70, "huoyanshan", canon=canon).chapter == 70
    with pytest.raises(StoryError, match="happens in 第五十九至六十一回; chapter 30 is before it"):
        plan_story_room(None, 30, "huoyanshan", canon=canon)


def test_a_scene_room_prefers_the_scenes_chapters(canon) -> None:
    from xiyou.backends.canon import CanonBackend

    questions = ["这里好热啊", "前面是什么地方？", "我们该怎么办？", "你去借扇子吧", "那妇人是谁？", "妖精在哪里？",
                 "师父，怎么过去？", "我们歇歇罢", "快走罢", "你去问问"]  # fmt: skip
    counts = {False: 0, True: 0}
    for scene in (get_scene("huoyanshan"), get_scene("baigujing"), get_scene("gaolaozhuang")):
        for cid in scene.present:
            for prefer in (False, True):
                backend = CanonBackend(
                    C[cid], canon, max_chapter=scene.chapter, prefer_chapters=scene.chapters if prefer else None
                )
                picks = [backend.choose([{"role": "user", "content": q}]) for q in questions]
                assert all(ex.chapter <= scene.chapter for ex in picks)
                counts[prefer] += sum(ex.chapter in scene.chapters for ex in picks)
    assert counts[True] > counts[False] * 1.3, counts


def _lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_xiyou_room_in_a_scene_opens_with_the_setting_and_keeps_to_its_chapter(novel_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(
        main, ["room", "--scene", "baigujing", "--narrator", "--turns", "1", "悟空，那女子是什么人？"]
    )
    assert result.exit_code == 0, result.output
    lines = _lines(result.output)
    assert lines[0]["id"] == NARRATOR and lines[0]["text"].startswith("【三打白骨精】第二十七回 · 白虎岭")
    assert lines[1]["id"] == NARRATOR and lines[1]["chapter"] == 27  # the novel's narration of the scene
    assert lines[2] == {"speaker": "施主", "id": "person", "text": "悟空，那女子是什么人？"}
    spoken = [line for line in lines[3:] if "text" in line]
    assert spoken and {line["id"] for line in spoken} <= set(IDS)
    assert all(line["chapter"] <= 27 for line in spoken)


def test_xiyou_room_refuses_a_member_the_story_has_not_brought_in(novel_path: Path) -> None:
    runner = CliRunner()
    early = runner.invoke(main, ["room", "--chapter", "7", "-m", "wukong,bajie", "你们好"])
    assert early.exit_code == 2
    assert "猪八戒" in early.output and "第八回" in early.output
    before = runner.invoke(main, ["room", "--scene", "gaolaozhuang", "--chapter", "5", "你好"])
    assert before.exit_code == 2 and "chapter 5 is before it" in before.output
    unknown = runner.invoke(main, ["room", "--scene", "nowhere", "你好"])
    assert unknown.exit_code == 2 and "no scene 'nowhere'" in unknown.output
    young = runner.invoke(main, ["room", "--chapter", "5", "-m", "wukong", "大圣，你在哪里？"])
    assert young.exit_code == 0, young.output
    assert all(line["chapter"] <= 5 for line in _lines(young.output) if line.get("id") == "wukong")


@pytest.mark.slow
def test_pipeline_eval_reports_leaks_and_canon_mode_scores_zero(
    canon, novel_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline import eval as evaluation

    def canon_run(chapter: int, characters: str) -> dict:
        """pipeline.eval in canon mode on the story questions after `chapter`: the run's metrics."""
        out = tmp_path / f"run-{chapter}"
        code = evaluation.main(
            ["--backend", "canon", "--chapter", str(chapter), "--characters", characters, "--no-sample-questions",
             "--questions", str(STORY_QUESTIONS), "--novel", str(novel_path), "--out", str(out)]
        )  # fmt: skip
        assert code == 0
        return json.loads((out / "metrics.json").read_text(encoding="utf-8"))["run"]

    def leaks(run: dict) -> dict[str, tuple[int, int]]:
        return {cid: (row["replies"], row["leaking"]) for cid, row in run["leaks"].items()}

    run = canon_run(20, "sanzang,wukong,bajie")
    assert run["chapter"] == 20
    assert leaks(run) == {"sanzang": (20, 0), "wukong": (20, 0), "bajie": (20, 0)}
    capsys.readouterr()
    early = canon_run(7, "wukong,bajie")
    assert "note: bajie skipped" in capsys.readouterr().err  # he first speaks in chapter 8
    assert leaks(early) == {"wukong": (20, 0)}


def test_slash_narrate_lets_only_the_narrator_speak(novel_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["room", "--scene", "huoyanshan", "--narrator", "/narrate"])
    assert result.exit_code == 0, result.output
    lines = _lines(result.output)
    assert [line["id"] for line in lines] == [NARRATOR, NARRATOR]
    assert 59 <= lines[1]["chapter"] <= 61
    alone = runner.invoke(main, ["room", "--scene", "huoyanshan", "/narrate"])
    assert alone.exit_code == 2 and "add --narrator" in alone.output


def test_xiyou_chat_keeps_to_the_chapter_and_refuses_who_is_not_there_yet(novel_path: Path) -> None:
    runner = CliRunner()
    env = {"XIYOU_NOVEL": str(novel_path), "XIYOU_ENDPOINTS": "", "XIYOU_API_BASE_URL": ""}
    chat = runner.invoke(
        main,
        ["chat", "wukong", "--backend", "canon", "--chapter", "20"],
        input="你见过白骨精吗？\n火焰山怎么过？\n",
        env=env,
    )
    assert chat.exit_code == 0, chat.output
    cited = [parse_number(m) for m in re.findall(r"📖 《西游记》第([零一二三四五六七八九十百]+)回", chat.output)]
    assert len(cited) == 2 and max(cited) <= 20
    early = runner.invoke(main, ["chat", "bajie", "--backend", "canon", "--chapter", "7"], input="", env=env)
    assert early.exit_code == 2 and "第八回" in early.output

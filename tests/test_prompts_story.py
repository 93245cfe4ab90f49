"""The persona prompt at a point in the story (issue 16): who he is by chapter N, not the whole book's description.

Checked with the leak metric (pipeline.evaluation.leaks): at every chapter where a character can be in a
conversation, his whole persona prompt (description, how others address him, the story so far, the canon examples)
names nothing the novel first mentions later; for the whole journey it still carries the character file's own
description. `xiyou prompt --chapter N` shows it, and refuses someone the story has not brought in yet."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.evaluation.leaks import first_mentions, leaks
from xiyou.character import load_characters
from xiyou.cli import main
from xiyou.prompts import system_prompt
from xiyou.story import MembershipError, check_members, get_scene, membership
from xiyou.story.stages import stage_of, stages

C = load_characters()
ASK = [{"role": "user", "content": "你是谁？你从哪里来？你的师父是谁？"}]


@pytest.fixture(scope="module")
def table(canon) -> dict[str, int]:
    return first_mentions(canon)


@pytest.mark.parametrize("chapter", [5, 14, 20, 30])
@pytest.mark.parametrize("cid", list(C))
def test_the_persona_prompt_at_chapter_n_names_nothing_later(canon, table, cid: str, chapter: int) -> None:
    if not membership(cid, chapter, canon).can_join:  # nobody asks him then: xiyou prompt/chat, rooms refuse him
        with pytest.raises(MembershipError, match="不能加入"):
            check_members([cid], chapter, canon)
        return
    prompt = system_prompt(C[cid], "persona", conversation=ASK, canon=canon, chapter=chapter)
    assert leaks(prompt, chapter, table=table) == []
    assert stage_of(cid, chapter).description in prompt and C[cid].description not in prompt


def test_every_chapter_where_he_can_be_asked_is_leak_free(canon, table) -> None:
    for cid, c in C.items():
        for n in range(1, 101):
            if membership(cid, n, canon).can_join:
                prompt = system_prompt(c, "persona", conversation=ASK, canon=canon, chapter=n)
                assert leaks(prompt, n, table=table) == [], (cid, n)


def test_wukong_at_chapter_5_is_the_great_sage_not_a_pilgrim(canon) -> None:
    prompt = system_prompt(C["wukong"], "persona", conversation=ASK, canon=canon, chapter=5)
    who = prompt[: prompt.index("【故事进展】")]
    assert "齐天大圣" in who and "蟠桃" in who
    for later in ("唐僧", "取经", "师父", "大师兄", "猴哥", "八戒"):
        assert later not in who, later
    # 三藏 before he is 唐三藏: the prompt and its canon examples call him 玄奘
    young = system_prompt(C["sanzang"], "persona", conversation=ASK, canon=canon, chapter=10)
    assert "唐三藏" not in young and "你就是玄奘" in young and "玄奘：" in young


@pytest.mark.parametrize("cid", list(C))
def test_the_whole_journey_keeps_the_full_description(canon, cid: str) -> None:
    prompt = system_prompt(C[cid], "persona", conversation=ASK, canon=canon)
    assert C[cid].description in prompt and "此刻正在取经路上" in prompt


def test_each_stage_says_nothing_later_than_its_first_chapter(canon, table) -> None:
    assert set(stages()) == set(C)
    for cid, his in stages().items():
        assert his[0].first == 1 and his[-1].last == 100
        for s in his:
            start = next((n for n in s.chapters if membership(cid, n, canon).can_join), None)
            if start is not None:
                assert leaks(s.description, start, table=table) == [], (cid, s.first)
                assert all(leaks(a, start, table=table) == [] for a in s.called), (cid, s.first)


def test_xiyou_prompt_shows_him_at_the_chapter_and_refuses_who_is_not_in_the_story_yet(novel_path: Path) -> None:
    runner = CliRunner()
    env = {"XIYOU_NOVEL": str(novel_path), "XIYOU_ENDPOINTS": "", "XIYOU_API_BASE_URL": "", "XIYOU_API_MODEL": ""}
    args = ["prompt", "wukong", "你是谁？", "--prompt", "persona"]
    early = runner.invoke(main, [*args, "--chapter", "5"], env=env)
    assert early.exit_code == 0, early.output
    assert stage_of("wukong", 5).description in early.output and "唐僧" not in early.output
    whole = runner.invoke(main, args, env=env)
    assert C["wukong"].description in whole.output
    absent = runner.invoke(main, ["prompt", "bajie", "你是谁？", "--prompt", "persona", "--chapter", "5"], env=env)
    assert absent.exit_code == 2 and "第八回" in absent.output  # where he first speaks


SCENE_QUESTIONS = ("这里好热啊，怎么过去？", "那妇人是谁？", "师父在哪里？", "你去借扇子吧", "妖精在哪里？", "歇歇罢")


def example_chapters(prompt: str) -> list[int]:
    from xiyou.canon.loader import parse_number
    from xiyou.canon.rag import HEADER

    start = prompt.find(HEADER.split("{")[0])
    assert start >= 0, "no canon examples in the prompt"
    return [parse_number(m) for m in re.findall(r"（第([零一二三四五六七八九十百]+)回）", prompt[start:])]


def test_in_a_scene_the_persona_examples_come_from_its_chapters_first(canon) -> None:
    counts = {False: 0, True: 0}
    for scene in (get_scene("huoyanshan"), get_scene("baigujing"), get_scene("gaolaozhuang")):
        for cid in scene.present:
            for q in SCENE_QUESTIONS:
                ask = [{"role": "user", "content": q}]
                for prefer in (False, True):
                    prompt = system_prompt(
                        C[cid], "persona", conversation=ask, canon=canon, chapter=scene.chapter,
                        prefer_chapters=scene.chapters if prefer else None,
                    )  # fmt: skip
                    chapters = example_chapters(prompt)
                    assert chapters and max(chapters) <= scene.chapter
                    inside = [c in scene.chapters for c in chapters]
                    counts[prefer] += sum(inside)
                    if prefer:  # the scene's own lines first, then the earlier ones
                        assert inside == sorted(inside, reverse=True), (scene.id, cid, q, chapters)
    assert counts[True] > 2 * counts[False], counts

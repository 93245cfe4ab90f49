"""The system prompts (xiyou.prompts): meta mode is the trained `meta_instruction` exactly; persona mode carries
the description, the way he speaks, the rules, the room, the story, and canon examples with their chapters."""

from __future__ import annotations

import re

import pytest

from xiyou.backends.canon import CanonBackend
from xiyou.character import load_characters
from xiyou.prompts import (
    EXAMPLES_K,
    EXAMPLES_TOKEN_BUDGET,
    build_messages,
    describe,
    mode_of,
    room_preamble,
    system_prompt,
)
from xiyou.tokens import estimate_tokens

C = load_characters()
ASK = [{"role": "user", "content": "你的金箍棒是从哪里得来的？"}]
CHAPTER = re.compile(r"（第[零一二三四五六七八九十百]+回）")


@pytest.fixture(scope="module")
def canon(novel_path):
    from xiyou.canon import get_canon

    return get_canon(novel_path)


def examples_of(prompt: str, name: str) -> str:
    from xiyou.canon.rag import HEADER

    header = HEADER.format(name=name)
    assert header in prompt
    return prompt[prompt.index(header) :]


@pytest.mark.parametrize("cid", list(C))
def test_meta_mode_is_the_trained_meta_instruction_exactly(cid: str) -> None:
    c = C[cid]
    assert system_prompt(c, "meta", conversation=ASK) == c.meta_instruction
    present = list(C.values())
    assert system_prompt(c, "meta", present=present, person="小明") == (
        f"{c.meta_instruction}\n\n{room_preamble(c, present, '小明')}"
    )
    messages = build_messages(c, [{"role": "system", "content": "别的"}, *ASK])
    assert messages == [{"role": "system", "content": c.meta_instruction}, *ASK]


@pytest.mark.parametrize("cid", list(C))
def test_persona_mode_describes_him_and_keeps_him_in_role(cid: str, canon) -> None:
    c = C[cid]
    prompt = system_prompt(c, "persona", conversation=ASK, canon=canon)
    assert c.description in prompt and "请你扮演" not in prompt and "我的问题是" not in prompt
    assert all(f"“{ref}”" in prompt for ref in c.self_refs)
    assert "不替师父、师兄弟或任何旁人说话" in prompt and "不说自己是人工智能" in prompt
    # the fine-tuned models' lines about an AI assistant are not given to a general model
    assert "书生·浦语" not in prompt and "AI助手" not in prompt
    # up to 5 canon exchanges, each with its chapter, within the budget
    examples = examples_of(prompt, c.name)
    assert 1 <= len(CHAPTER.findall(examples)) <= EXAMPLES_K
    assert estimate_tokens(examples) <= EXAMPLES_TOKEN_BUDGET


def test_persona_examples_follow_the_conversation(canon) -> None:
    c = C["wukong"]
    staff = examples_of(system_prompt(c, "persona", conversation=ASK, canon=canon), c.name)
    ask = [{"role": "user", "content": "师父又被妖精捉去了，怎么办？"}]
    demon = examples_of(system_prompt(c, "persona", conversation=ask, canon=canon), c.name)
    assert staff != demon
    assert "金箍棒" in staff or "棒" in staff
    # no conversation yet: no examples
    assert "原著中" not in system_prompt(c, "persona", canon=canon)


def test_persona_room_and_story_sections(canon) -> None:
    c = C["bajie"]
    present = [C["wukong"], c]
    prompt = system_prompt(c, "persona", conversation=ASK, canon=canon, present=present, person="小明", story="X事")
    assert room_preamble(c, present, "小明") in prompt
    assert "\n\nX事\n\n" in prompt
    assert prompt.index("【群聊】") < prompt.index("原著中")


@pytest.mark.parametrize("mode", ["meta", "persona"])
def test_a_chapter_gives_the_story_so_far_and_limits_the_examples(canon, mode: str) -> None:
    from xiyou.canon.loader import chapter_ref
    from xiyou.story.rooms import story_context

    c = C["wukong"]
    story = story_context(c.id, 20)
    assert "第二十回" in story and "一概不知" in story
    prompt = system_prompt(c, mode, conversation=ASK, canon=canon, chapter=20)  # type: ignore[arg-type]
    if mode == "meta":
        assert prompt == f"{c.meta_instruction}\n\n{story}"
        return
    assert story in prompt
    examples = examples_of(prompt, c.name)
    assert CHAPTER.search(examples)
    assert not any(chapter_ref(n) in examples for n in range(21, 101))


def test_bad_mode_and_chapter_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown prompt mode 'chatty'"):
        system_prompt(C["wukong"], "chatty")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"chapter must be within 1\.\.100, got 101"):
        system_prompt(C["wukong"], "persona", chapter=101)


def test_mode_and_describe(canon) -> None:
    class Remote:
        label = "openai: qwen2.5:7b @ http://127.0.0.1:11434/v1"

    remote = Remote()
    assert mode_of(remote) == "meta"
    assert describe(remote) == "微调模型 · fine-tuned (meta prompt) on openai: qwen2.5:7b @ http://127.0.0.1:11434/v1"
    remote.prompt_mode = "persona"  # type: ignore[attr-defined]
    assert mode_of(remote) == "persona"
    assert describe(remote) == "人设模式 · persona prompt on openai: qwen2.5:7b @ http://127.0.0.1:11434/v1"
    assert describe(CanonBackend(C["bajie"], canon)).startswith("原著台词 · canon lines")
    assert describe(None) == "无法说话 · unavailable"

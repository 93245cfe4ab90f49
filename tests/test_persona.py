"""Persona checks shared by the dataset builder and the evaluation."""

from __future__ import annotations

import pytest

from xiyou.character import get_character
from xiyou.persona import broken_persona, uses_self_ref


@pytest.mark.parametrize(
    "text",
    [
        "作为一个AI，我没有个人喜好。",
        "作为人工智能助手，我无法回答这个问题。",
        "我是一个语言模型，不能吃东西。",
        "抱歉，我只是一个聊天机器人。",
        "As an AI language model, I cannot do that.",
    ],
)
def test_assistant_voice_is_flagged(text: str) -> None:
    assert broken_persona(text)


@pytest.mark.parametrize(
    "text",
    [
        "俺老孙一个筋斗云便是十万八千里！",
        "贫僧自东土大唐而来，往西天拜佛求经。",
        "师父，这妖精不是人，是个模样变化的。",
        "书生·浦语是俺的好朋友。",  # the meta_instruction itself names the assistant; naming it is not breaking role
    ],
)
def test_in_role_text_is_not_flagged(text: str) -> None:
    assert broken_persona(text) is None


def test_self_reference_per_character() -> None:
    assert uses_self_ref(get_character("wukong"), "俺老孙去也！")
    assert uses_self_ref(get_character("bajie"), "老猪饿了。")
    assert not uses_self_ref(get_character("sanzang"), "俺老孙去也！")

"""Checks on a reply's persona: does it break character ("作为一个AI…"), does it use the character's self-reference?

Shared by the dataset builder (drops broken-persona answers) and the evaluation (counts them).
"""

from __future__ import annotations

import re

from xiyou.character import Character

#: Phrases by which a reply steps out of the role and speaks as an assistant / language model.
BROKEN_PERSONA_PATTERNS: tuple[str, ...] = (
    r"作为(?:一[个名位款种])?(?:AI|ＡＩ|人工智能|语言模型|大模型|聊天机器人|虚拟助手|智能助手|AI助手|人工智能助手)",
    r"我(?:只)?是(?:一[个名位款种])?(?:AI|ＡＩ|人工智能|语言模型|大模型|聊天机器人|虚拟助手|智能助手|AI助手|人工智能助手)",
    r"(?:AI|人工智能|语言)模型(?:，|,)?(?:我)?(?:无法|不能|没有)",
    r"我(?:没有|不具备)(?:个人)?(?:情感|感情|身体|实体)",
    r"(?:由|被)(?:OpenAI|上海人工智能实验室|书生·浦语)(?:开发|训练|创造)",
    r"\bas an (?:AI|artificial intelligence|AI language model|language model)\b",
    r"\bI(?:'m| am) (?:an? )?(?:AI|artificial intelligence|language model|assistant)\b",
)
_BROKEN = re.compile("|".join(f"(?:{p})" for p in BROKEN_PERSONA_PATTERNS), re.IGNORECASE)


def broken_persona(text: str) -> str | None:
    """The phrase by which `text` breaks character, or None when it stays in role."""
    match = _BROKEN.search(text)
    return match.group(0) if match else None


def uses_self_ref(character: Character, text: str) -> bool:
    """Whether `text` refers to the speaker the way the character does (贫僧, 俺老孙, 老猪, 老沙…)."""
    return any(ref in text for ref in character.self_refs)

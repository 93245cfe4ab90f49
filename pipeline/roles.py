"""Speaker labels written by an LLM → character ids, and dialogue lines → XTuner conversation turns.

Shared by `pipeline.extract` and `pipeline.long_dialogue`: an LLM may call 孙悟空 "行者", "大圣", "孙行者" or
"Monkey King"; every name of a character (`xiyou.names.resolve`: name, aliases, narration names, English names, with
a leading 那/这/老 dropped) resolves to that character's id. Anyone else keeps the label as written ("观音"); empty or
"unknown"-like labels become "unknown".
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from xiyou.names import resolve

UNKNOWN = "unknown"
_UNKNOWN_LABELS = {"", "未知", "不明", "无", "某人", "某人说", "旁白", "unknown", "none", "null", "?", "？"}


def resolve_role(label: str) -> str:
    """A character id, another speaker's name as written, or "unknown"."""
    spaced = re.sub(r"[“”\"'：:（）()]", "", label or "").strip()
    role = re.sub(r"\s", "", spaced)
    if role.lower() in _UNKNOWN_LABELS:
        return UNKNOWN
    return resolve(spaced) or role


def turns_for(lines: Sequence[tuple[str, str]], character_id: str) -> list[tuple[str, str]]:
    """(input, output) turns seen from one character: others' lines (joined) are the input, the character's
    following lines (joined) the output. Lines the character says before anyone else has spoken are dropped."""
    turns: list[tuple[str, str]] = []
    pending_in: list[str] = []
    pending_out: list[str] = []
    for speaker, text in lines:
        if speaker == character_id:
            if pending_in:
                pending_out.append(text)
            continue
        if pending_out:
            turns.append(("\n".join(pending_in), "\n".join(pending_out)))
            pending_in, pending_out = [], []
        pending_in.append(text)
    if pending_out:
        turns.append(("\n".join(pending_in), "\n".join(pending_out)))
    return [(i, o) for i, o in turns if i.strip() and o.strip()]


def conversation(system: str, turns: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    """XTuner turns: `system` on the first only."""
    out: list[dict[str, str]] = [{"input": i, "output": o} for i, o in turns]
    if out:
        out[0] = {"system": system, **out[0]}
    return out

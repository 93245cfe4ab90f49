"""A cheap token estimate, the one used everywhere a text must fit a budget: a speaker's view in the room, the
canon examples and the story so far in a system prompt, the pipeline's cost estimates.

No tokenizer is loaded (the room may talk to remote servers with unknown vocabularies, and it must stay
fast): every CJK character (and other wide character) counts as one token, every other run of text counts
as one token per 4 characters, rounded up. For InternLM2 and Qwen-style tokenizers this over-estimates
Chinese slightly (they merge common pairs), which errs on the safe side of the context window.
"""

from __future__ import annotations

import re

# CJK ideographs, kana, hangul, full-width forms and CJK punctuation: roughly one token each.
_WIDE = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef\U00020000-\U0003ffff]")


def estimate_tokens(text: str) -> int:
    """Estimated token count of `text` (see the module docstring for the rule)."""
    if not text:
        return 0
    wide = len(_WIDE.findall(text))
    narrow = len(text) - wide
    return wide + (narrow + 3) // 4

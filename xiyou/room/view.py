"""Each speaker's view of the room: the message list its backend answers.

- system: the speaker's system prompt in his backend's mode (xiyou.prompts: the `meta_instruction` he was trained
  with, or the persona prompt for a general model) with the room preamble (who is present, that lines are
  prefixed with the speaker's name, speak only for yourself);
- the speaker's own lines as `assistant` (no prefix), everyone else's as `user` prefixed `名字：`; a canon
  reply's chapter citation is left out (the page shows it; a model should not learn to imitate it);
  consecutive lines of the same role are merged, so roles alternate user/assistant, starting and ending with
  `user` (chat templates such as InternLM2's expect that);
- only the lines said while the speaker was in the room (`Entry.heard_by`): a member who joined later, or left
  for a while, does not see what was said without him;
- the oldest lines are dropped first to fit a token budget (see xiyou.tokens for the estimate); the last
  line is always kept.
"""

from __future__ import annotations

from collections.abc import Sequence

from xiyou.backends.base import Message
from xiyou.character import Character
from xiyou.prompts import EXAMPLES_TOKEN_BUDGET, PromptMode, system_prompt
from xiyou.room.transcript import Entry
from xiyou.tokens import estimate_tokens

#: Default prompt budget (system + history) in estimated tokens; InternLM2-chat-7B has a 32k window, LMDeploy
#: servers are often started with 4k-8k, so stay well inside while leaving room for the reply.
DEFAULT_TOKEN_BUDGET = 3000

#: Filler lines that keep roles alternating when the history starts with, or ends on, the speaker's own line.
OPENING = "（大家到齐了，请开口。）"
GO_ON = "（请接着说。）"


def trim_to_budget(entries: Sequence[Entry], budget: int) -> list[Entry]:
    """The newest entries whose estimated tokens fit `budget`; at least the last entry."""
    kept = 0
    total = 0
    for entry in reversed(entries):
        total += entry.tokens
        if total > budget and kept:
            break
        kept += 1
    return list(entries[len(entries) - kept :]) if kept else []


def build_view(
    speaker: Character,
    entries: Sequence[Entry],
    present: Sequence[Character],
    person: str,
    token_budget: int = DEFAULT_TOKEN_BUDGET,
    mode: PromptMode = "meta",
    **context: object,
) -> list[Message]:
    """The messages `speaker`'s backend answers, from the room transcript `entries`. `mode` and `context`
    (canon, chapter, story) go to `xiyou.prompts.system_prompt`."""
    prompt = {"present": present, "person": person, **context}
    system = system_prompt(speaker, mode, **prompt)  # type: ignore[arg-type]
    reserved = estimate_tokens(system) + (EXAMPLES_TOKEN_BUDGET if mode == "persona" else 0)
    entries = [e for e in entries if e.heard_by(speaker.id)]
    history = trim_to_budget(entries, max(token_budget - reserved, 1))
    messages: list[Message] = [{"role": "system", "content": system}]
    for entry in history:
        if entry.speaker == speaker.id:
            role, content = "assistant", entry.spoken
        else:
            role, content = "user", f"{entry.name}：{entry.spoken}"
        last = messages[-1]
        if last["role"] == role:
            last["content"] = f"{last['content']}\n\n{content}"
        else:
            messages.append({"role": role, "content": content})
    if len(messages) == 1 or messages[1]["role"] == "assistant":
        messages.insert(1, {"role": "user", "content": OPENING})
    if messages[-1]["role"] == "assistant":
        messages.append({"role": "user", "content": GO_ON})
    if mode == "persona":  # the canon examples that match what was said
        messages[0] = {"role": "system", "content": system_prompt(speaker, mode, conversation=messages[1:], **prompt)}  # type: ignore[arg-type]
    return messages

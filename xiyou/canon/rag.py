"""Retrieval-augmented prompts: show an LLM character its own lines from the novel (the ChatHaruhi technique).

`augment_messages(character, messages, canon)` returns a copy of the message list whose system prompt ends with the
top-k canon exchanges (default 5) that match the conversation, as examples of how the character speaks, capped by
a token budget (default 1500; estimated as one token per Chinese character, a safe upper bound for InternLM2's
tokenizer). Switch it on per backend with `RetrievalAugmentedBackend(backend, character, canon)`; off is simply
not wrapping. Each takes `max_chapter`: only exchanges from chapters up to it are ever shown.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence

from xiyou.backends.base import Backend, GenerationSettings, Message, Piece
from xiyou.character import Character
from xiyou.names import CHARACTER_IDS, display_name
from xiyou.tokens import estimate_tokens

HEADER = "以下是《西游记》原著中{name}说过的话，供你模仿其口吻与性格（不要照抄，不要提及这些摘录）："
DEFAULT_K = 5
DEFAULT_TOKEN_BUDGET = 1500


def _speaker_label(speaker: str, name: str) -> str:
    if speaker in CHARACTER_IDS:
        return display_name(speaker)
    return name or "旁人"


def canon_examples(
    character: Character,
    messages: Sequence[Message],
    canon,
    k: int = DEFAULT_K,
    token_budget: int = DEFAULT_TOKEN_BUDGET,
    max_chapter: int | None = None,
    prefer_chapters: range | None = None,
) -> str:
    """The examples block for the system prompt ("" when nothing matches or the budget is too small).

    `prefer_chapters` (a scene's chapters): the best matches from them come first, then the others (up to
    `max_chapter`)."""
    user_turns = [m["content"] for m in messages if m["role"] == "user"]
    if not user_turns or k <= 0:
        return ""
    query = user_turns[-1]
    hits = canon.search(character.id, query, k=k, max_chapter=max_chapter)
    if prefer_chapters is not None and len(prefer_chapters):
        last = prefer_chapters[-1] if max_chapter is None else min(prefer_chapters[-1], max_chapter)
        inside = canon.search(character.id, query, k=k, max_chapter=last, min_chapter=prefer_chapters[0])
        seen = {h.exchange.id for h in inside}
        hits = [*inside, *(h for h in hits if h.exchange.id not in seen)][:k]
    if not hits:
        return ""
    header = HEADER.format(name=character.name)
    used = estimate_tokens(header)
    blocks: list[str] = []
    for hit in hits:
        ex = hit.exchange
        lines = []
        if ex.context is not None:
            lines.append(f"{_speaker_label(ex.context.speaker, ex.context.name)}：{ex.context.text}")
        lines.append(f"{character.name}：{ex.reply.text}（{hit.ref}）")
        block = "\n".join(lines)
        cost = estimate_tokens(block) + 1
        if used + cost > token_budget:
            continue  # a shorter later example may still fit
        blocks.append(block)
        used += cost
    if not blocks:
        return ""
    return header + "\n" + "\n\n".join(blocks)


def augment_messages(
    character: Character,
    messages: Sequence[Message],
    canon,
    k: int = DEFAULT_K,
    token_budget: int = DEFAULT_TOKEN_BUDGET,
    max_chapter: int | None = None,
) -> list[Message]:
    """A copy of `messages` with the top-k canon exchanges appended to the system prompt (one is added, holding the
    character's meta_instruction, when there is none). Unchanged copy when nothing matches."""
    out: list[Message] = [{"role": m["role"], "content": m["content"]} for m in messages]
    examples = canon_examples(character, out, canon, k=k, token_budget=token_budget, max_chapter=max_chapter)
    if not examples:
        return out
    if out and out[0]["role"] == "system":
        out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{examples}"}
    else:
        out.insert(0, {"role": "system", "content": f"{character.meta_instruction}\n\n{examples}"})
    return out


class RetrievalAugmentedBackend:
    """Wraps an LLM backend so every request carries the character's canon examples in its system prompt."""

    def __init__(
        self,
        backend: Backend,
        character: Character,
        canon,
        k: int = DEFAULT_K,
        token_budget: int = DEFAULT_TOKEN_BUDGET,
        max_chapter: int | None = None,
    ) -> None:
        self.backend = backend
        self.character = character
        self.canon = canon
        self.k = k
        self.token_budget = token_budget
        self.max_chapter = max_chapter
        self.label = f"{backend.label} + canon examples (k={k})"

    def stream(
        self,
        messages: Sequence[Message],
        settings: GenerationSettings,
        cancel: threading.Event | None = None,
    ) -> Iterator[Piece]:
        augmented = augment_messages(
            self.character,
            messages,
            self.canon,
            k=self.k,
            token_budget=self.token_budget,
            max_chapter=self.max_chapter,
        )
        return self.backend.stream(augmented, settings, cancel)

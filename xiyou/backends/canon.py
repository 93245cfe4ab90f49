"""The offline backend: a character answers with its own line from the novel, citing the chapter.

No model, no server: the reply is the character's canon line whose context (what was said to them in the novel)
best matches the conversation, falling back to the line that best matches the question itself, then to a line
picked by a hash of the question. Deterministic: the same conversation always gets the same reply. The line is
streamed clause by clause, then a `Citation` (chapter, and to whom the line was said in the novel) as the last
piece: the citation is data, never part of the text.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator, Sequence

from xiyou.backends.base import BackendError, Citation, GenerationSettings, Message, Piece, validate_messages
from xiyou.canon.index import top_k
from xiyou.character import Character

MIN_REPLY_CHARS = 8
_CLAUSE_END = re.compile(r"(?<=[，。！？；：、,.!?;…])")


def citation_of(exchange) -> Citation:
    """The chapter of an exchange and to whom its line was said (the context's speaker, when known)."""
    said_to = None
    context = exchange.context
    if context is not None:
        from xiyou.canon import CHARACTER_IDS, UNKNOWN

        if context.speaker in CHARACTER_IDS:
            from xiyou.character import get_character

            said_to = get_character(context.speaker).name
        elif context.speaker != UNKNOWN:
            said_to = context.name or context.speaker
    return Citation(exchange.chapter, said_to)


def _clauses(text: str) -> list[str]:
    parts = [p for p in _CLAUSE_END.split(text) if p]
    return parts or [text]


class CanonBackend:
    """Backend whose replies are the character's own lines from the novel (see the module doc)."""

    def __init__(self, character: Character, canon=None) -> None:
        from xiyou.canon import CHARACTER_IDS

        if character.id not in CHARACTER_IDS:
            raise BackendError(f"the canon has no lines for {character.id!r}; it has: {', '.join(CHARACTER_IDS)}")
        self.character = character
        self._canon = canon
        self.label = f"canon: {character.name}'s lines from 《西游记》"

    @property
    def canon(self):
        if self._canon is None:
            from xiyou.canon import NovelError, get_canon

            try:
                self._canon = get_canon()
            except NovelError as e:
                raise BackendError(f"the offline canon backend needs the novel: {e}") from None
        return self._canon

    def choose(self, messages: Sequence[Message]):
        """The exchange to answer with (deterministic)."""
        validate_messages(messages)
        canon = self.canon
        cid = self.character.id
        user_turns = [m["content"] for m in messages if m["role"] == "user"]
        query = user_turns[-1] if user_turns else messages[-1]["content"]
        said_lines = {m["content"].strip() for m in messages if m["role"] == "assistant"}

        earlier = " ".join(m["content"] for m in messages[:-1][-2:] if m["role"] != "system")
        exchanges = canon.exchanges(cid)

        def best(field: str, hint_weight: float):
            scores = canon.index(cid, field).scores(query)
            if hint_weight and earlier:
                scores = scores + hint_weight * canon.index(cid, field).scores(earlier)
            candidates = [i for i in top_k(scores, 16) if exchanges[i].reply.text not in said_lines]
            # A bare '去来！' says little: prefer, among the close matches, a line of some substance.
            for i in candidates[:8]:
                if len(exchanges[i].reply.text) >= MIN_REPLY_CHARS:
                    return exchanges[i]
            return exchanges[candidates[0]] if candidates else None

        # 1. the line whose context best matches the conversation (the question; the turn before as a weak hint)
        # 2. else the line that best matches the question itself
        for field, hint in (("context", 0.25), ("reply", 0.0)):
            found = best(field, hint)
            if found is not None:
                return found
        # 3. nothing in common with the novel: a line picked by a stable hash of the question
        if not exchanges:
            raise BackendError(f"the canon has no lines for {self.character.name}; check the novel file")
        start = int.from_bytes(hashlib.sha256(query.encode("utf-8")).digest()[:8], "big") % len(exchanges)
        for i in range(len(exchanges)):
            ex = exchanges[(start + i) % len(exchanges)]
            if ex.reply.text not in said_lines:
                return ex
        return exchanges[start]

    def stream(
        self,
        messages: Sequence[Message],
        settings: GenerationSettings,
        cancel: threading.Event | None = None,
    ) -> Iterator[Piece]:
        try:
            exchange = self.choose(messages)
        except ValueError as e:
            raise BackendError(f"cannot answer: {e}") from None
        budget = settings.max_new_tokens  # about one token per Chinese character
        for delta in _clauses(exchange.reply.text):
            if cancel is not None and cancel.is_set():
                return
            yield delta
            budget -= len(delta)
            if budget <= 0:
                break
        if cancel is not None and cancel.is_set():
            return
        yield citation_of(exchange)

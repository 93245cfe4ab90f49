"""What the canon-mode tests share: ask a backend, as the single-character app does, and read its cited reply."""

from __future__ import annotations

from xiyou.backends.base import Citation, GenerationSettings, collect_cited
from xiyou.backends.canon import CanonBackend

SETTINGS = GenerationSettings()


def ask(backend: CanonBackend, *turns: str) -> tuple[str, Citation | None]:
    """The reply and its citation to a conversation of `turns` (the person's, his, the person's …) after his system
    prompt."""
    messages = [{"role": "system", "content": backend.character.meta_instruction}]
    for i, text in enumerate(turns):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    return collect_cited(backend, messages, SETTINGS)

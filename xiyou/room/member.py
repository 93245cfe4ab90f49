"""A member of the room: a character, the backend that makes it speak, and its switches."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from xiyou.backends.base import Backend, GenerationSettings, Message
from xiyou.character import Character
from xiyou.prompts import describe

#: Adds canon context to a speaker's view (e.g. xiyou.canon.rag.augment_messages bound to a canon).
Retriever = Callable[[Character, Sequence[Message]], list[Message]]


@dataclasses.dataclass
class Member:
    """One character in the room.

    `backend` is None when the character has no way to speak (no server, no novel); `unavailable` says why,
    and the member is shown with a red status and never picked to speak. `kind` is what it runs on ("canon",
    "openai", "transformers"; "none" without a backend). `timeout` is how long the room waits for the next piece
    of a reply before reporting the member as failed (first token included).
    """

    character: Character
    backend: Backend | None
    muted: bool = False
    settings: GenerationSettings | None = None
    timeout: float = 120.0
    unavailable: str | None = None
    retriever: Retriever | None = None
    kind: str = "none"

    @property
    def on_model(self) -> bool:
        """Speaks through a model (not the canon, not unavailable): canon hints may help it."""
        return self.backend is not None and self.kind not in ("canon", "none")

    @property
    def id(self) -> str:
        return self.character.id

    @property
    def name(self) -> str:
        return self.character.name

    @property
    def emoji(self) -> str:
        return self.character.emoji

    @property
    def active(self) -> bool:
        """Can be picked to speak: not muted and has a backend."""
        return not self.muted and self.backend is not None

    @property
    def label(self) -> str:
        """What the member runs on, for the status line."""
        if self.backend is None:
            return self.unavailable or "no backend"
        return describe(self.backend)

    def generation_settings(self) -> GenerationSettings:
        return self.settings or GenerationSettings.for_character(self.character)

"""The backend interface: given the message list and generation settings, yield text deltas.

A backend may end a reply with one `Citation` (where the reply comes from in the novel): consumers that want
text only use `collect()` or `text_only()`.

Apps, the hub, the pipeline and the evaluation all speak to characters through this, so any character can
run on local weights, on an LMDeploy server, on any OpenAI-compatible API, or offline on its canon lines.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Literal, Protocol, TypedDict, runtime_checkable

from xiyou.character import Character

Role = Literal["system", "user", "assistant"]


class Message(TypedDict):
    role: Role
    content: str


class BackendError(RuntimeError):
    """A backend could not produce a reply. The message says what failed and what to do about it.

    Never shown as if a character said it: pages show it as an error notice, the room as a member's error.
    """


@dataclasses.dataclass(frozen=True)
class Citation:
    """Where a canon reply comes from in the novel: the chapter, and to whom the line was said there."""

    chapter: int
    said_to: str | None = None  # display name of who the line was said to in the novel, e.g. "唐三藏"

    def label(self) -> str:
        """ "第二十七回 · 对唐三藏说", or "第二十七回" when `said_to` is None."""
        from xiyou.canon.loader import chapter_ref

        ref = chapter_ref(self.chapter)
        return f"{ref} · 对{self.said_to}说" if self.said_to else ref

    def to_json(self) -> dict[str, object]:
        return {"chapter": self.chapter, "said_to": self.said_to, "label": self.label()}


#: What a backend's `stream` yields: text deltas and, at most once and last, a Citation.
Piece = str | Citation


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    """What the sliders control. `top_k`/`repetition_penalty` are sent to servers only when they accept them."""

    max_new_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 0.8
    repetition_penalty: float = 1.0
    top_k: int | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    #: The name the person in the conversation goes by (a room's 施主, 小明 …), when known. Models read it in the
    #: messages; a backend that matches words (the offline canon one) leaves it out of the question.
    person: str | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if not 0.0 <= self.temperature <= 2.0:
            raise ValueError(f"temperature must be within 0..2, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be within (0, 1], got {self.top_p}")
        if self.repetition_penalty < 1.0:
            raise ValueError(f"repetition_penalty must be at least 1.0, got {self.repetition_penalty}")

    @classmethod
    def for_character(cls, character: Character, **overrides: object) -> GenerationSettings:
        g = character.generation
        values: dict[str, object] = {
            "max_new_tokens": g.max_new_tokens,
            "temperature": g.temperature,
            "top_p": g.top_p,
            "repetition_penalty": g.repetition_penalty,
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    def replace(self, **changes: object) -> GenerationSettings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


@runtime_checkable
class Backend(Protocol):
    """Makes one character speak.

    `stream` yields text deltas (non-empty strings) of one reply and, optionally, one `Citation` (the offline
    canon backend gives it before the text, so that a reply cut short keeps it). Setting `cancel` stops it at the
    next delta; closing the iterator does too. Failures raise BackendError with a message a person can act on.
    """

    #: A short human-readable description, e.g. "transformers: /models/wukong (cpu)".
    label: str

    def stream(
        self,
        messages: Sequence[Message],
        settings: GenerationSettings,
        cancel: threading.Event | None = None,
    ) -> Iterator[Piece]: ...


def is_offline(backend: object | None) -> bool:
    """Whether `backend` answers with lines from the book instead of a model (its `offline` attribute; the canon
    backend's is True): pages fold away the sampling sliders and say what the mode is."""
    return bool(getattr(backend, "offline", False))


def text_only(stream: Iterable[Piece], on_citation: Callable[[Citation], object] | None = None) -> Iterator[str]:
    """The text deltas of `stream`; its Citation (if any) goes to `on_citation` (e.g. for `st.write_stream`).

    Closing this iterator closes `stream` (which cancels the generation)."""
    try:
        for piece in stream:
            if isinstance(piece, Citation):
                if on_citation is not None:
                    on_citation(piece)
            elif piece:
                yield piece
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


def collect_cited(
    backend: Backend, messages: Sequence[Message], settings: GenerationSettings
) -> tuple[str, Citation | None]:
    """The whole reply as one string, and its citation (None when the backend gives none)."""
    found: list[Citation] = []
    text = "".join(text_only(backend.stream(messages, settings), found.append))
    return text, (found[-1] if found else None)


@dataclasses.dataclass(frozen=True)
class StreamEnd:
    """`pump`'s last item when the reply ended; `notice` says why it was cut short (the client's reply cap)."""

    notice: str | None = None


@dataclasses.dataclass(frozen=True)
class StreamFailed:
    """`pump`'s last item when the backend raised `error`."""

    error: BaseException


def pump(start: Callable[[], Iterable[Piece]], put: Callable[[object], None], cancel: threading.Event) -> None:
    """Read one reply for a page or the room, in a worker thread: `put` each piece (text or Citation) as it comes,
    then one StreamEnd, or a StreamFailed if the backend raised. Stops at `cancel`; closes the stream in any case."""
    stream = None
    try:
        stream = start()
        for piece in stream:
            if cancel.is_set():
                break
            if piece:
                put(piece)
        notice = getattr(stream, "notice", None)  # the client's reply cap cut it short
        put(StreamEnd(notice if isinstance(notice, str) and notice else None))
    except BaseException as e:
        put(StreamFailed(e))
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                pass


def collect(backend: Backend, messages: Sequence[Message], settings: GenerationSettings) -> str:
    """The whole reply as one string, text only (for scripts, the pipeline and the evaluation)."""
    return collect_cited(backend, messages, settings)[0]


def validate_messages(messages: Sequence[Message]) -> None:
    """Raise ValueError for a message list a backend cannot use (unknown role, non-text content, empty list)."""
    if not messages:
        raise ValueError("no messages to answer")
    for i, m in enumerate(messages):
        if m.get("role") not in ("system", "user", "assistant"):
            raise ValueError(f"message {i}: role must be system, user or assistant, got {m.get('role')!r}")
        if not isinstance(m.get("content"), str):
            raise ValueError(f"message {i}: content must be text, got {type(m.get('content')).__name__}")

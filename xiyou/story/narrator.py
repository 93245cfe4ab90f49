"""The narrator (issue 16.4): an optional room member that describes the scene and never speaks for the pilgrims.

- canon mode (`CanonNarration`): the narration passages of the scene's chapters, in the novel's order, one per
  turn, each with its chapter as a `Citation`. A passage is a paragraph of the loader's chapter text with no
  quotation mark (no one speaks in it) and no verse (诗曰 …, or lines of even length);
- persona mode (`NarratorBackend`): any LLM backend prompted as the narrator (the narrator file's
  `meta_instruction`; the room adds the story so far and the scene as for every speaker), whose reply is cut at
  the first quotation mark so it never carries anyone's words.

Guards: the room runs the narrator through the same `ReplyGuard` and stop strings as every speaker
(`xiyou.room.guards`), which end a reply at a line that starts with a pilgrim's or the person's label
(`孙悟空：`); `NarratorBackend` adds the quotation-mark cut for narration (`行者笑道：“……”`).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from xiyou.backends.base import Citation, GenerationSettings, Message
from xiyou.character import Character, load_character_file

NARRATOR_FILE = Path(__file__).with_name("narrator.toml")
QUOTE_MARKS = '“”‘’「」『』"'
MIN_PASSAGE, MAX_PASSAGE = 30, 400
_VERSE_OPENERS = ("诗曰", "词曰", "正是", "有诗为证", "诗云", "赞曰", "有诗", "但见", "真个是", "那里")
_CLAUSE = re.compile(r"[，。！？；：、]")


@functools.cache
def narrator_character() -> Character:
    """The narrator as a Character (`narrator.toml`): the room gives it a view and guards like any speaker."""
    return load_character_file(NARRATOR_FILE)


@dataclasses.dataclass(frozen=True)
class Passage:
    chapter: int
    offset: int
    text: str


def _is_verse(paragraph: str) -> bool:
    if paragraph.startswith(_VERSE_OPENERS):
        return True
    clauses = [c for c in _CLAUSE.split(paragraph) if c]
    if len(clauses) < 4:
        return False
    lengths = [len(c) for c in clauses]
    common = max(set(lengths), key=lengths.count)
    return lengths.count(common) / len(lengths) >= 0.7


def _narration_spans(text: str) -> Iterator[tuple[int, str]]:
    """(offset, text) of each stretch of a chapter outside quotes, one paragraph at a time."""
    from xiyou.canon.quotes import find_quotes

    position = 0
    gaps = []
    for q in find_quotes(text):
        gaps.append((position, text[position : q.start]))
        position = q.end
    gaps.append((position, text[position:]))
    for start, gap in gaps:
        offset = start
        for piece in gap.split("\n"):
            yield offset, piece
            offset += len(piece) + 1


def _clean(piece: str) -> tuple[int, str]:
    """(chars dropped at the start, the narration) of a stretch: leading punctuation and a trailing speech
    intro (`行者笑道：`) removed, so only whole narrated sentences remain."""
    lead = len(piece) - len(piece.lstrip("，。！？；：、… 　"))
    body = piece[lead:]
    if body.rstrip().endswith(("：", ":")) or not body.rstrip().endswith(("。", "！", "？", "…")):
        ends = [body.rfind(p) for p in "。！？"]
        body = body[: max(ends) + 1] if max(ends) >= 0 else ""
    return lead, body.strip()


def narration_passages(novel, chapters: range, start: tuple[int, int] | None = None) -> list[Passage]:
    """The narration passages of `chapters` in story order, from `start` (chapter, offset) on: the stretches of
    the chapter text outside quotes, cut to whole sentences, without verse."""
    out: list[Passage] = []
    for number in chapters:
        for offset, piece in _narration_spans(novel.chapter(number).text):
            if start is not None and (number, offset) < start:
                continue
            lead, body = _clean(piece)
            if not MIN_PASSAGE <= len(body) <= MAX_PASSAGE or any(q in body for q in QUOTE_MARKS):
                continue
            if _is_verse(body):
                continue
            out.append(Passage(number, offset + lead, body))
    return out


class CanonNarration:
    """The narrator in canon mode: the next narration passage of the scene's chapters, with its chapter."""

    def __init__(self, novel, chapters: range, start: tuple[int, int] | None = None) -> None:
        self.passages = narration_passages(novel, chapters, start)
        first, last = chapters.start, chapters.stop - 1
        self.label = f"canon: narration from 《西游记》 chapters {first}-{last}"

    def next_passage(self, messages: Sequence[Message]) -> Passage | None:
        """The passage after the latest one already narrated (the narrator's own lines are `assistant`; the
        room's view merges consecutive ones, so a passage is looked for inside them)."""
        said = "\n".join(m["content"] for m in messages if m["role"] == "assistant")
        last = -1
        for i, p in enumerate(self.passages):
            if p.text in said:
                last = i
        return self.passages[last + 1] if last + 1 < len(self.passages) else None

    def stream(
        self,
        messages: Sequence[Message],
        settings: GenerationSettings,
        cancel: threading.Event | None = None,
    ) -> Iterator[str | Citation]:
        passage = self.next_passage(messages)
        if passage is None:  # the scene's narration is used up: an empty reply (the room notes it, posts nothing)
            return
        yield Citation(passage.chapter)  # first, like the canon backend's: a passage cut short keeps it
        for piece in re.split(r"(?<=[，。！？；])", passage.text):
            if cancel is not None and cancel.is_set():
                return
            if piece:
                yield piece


def narrator_system(story: str = "", scene=None) -> str:
    """The extra system text of a persona-mode narrator: the story so far and the scene."""
    parts = []
    if story:
        parts.append(story)
    if scene is not None:
        parts.append(f"【此刻的场景】{scene.name} · {scene.place}\n{scene.situation}")
    return "\n\n".join(parts)


def cut_at_speech(text: str) -> str:
    """Narration up to the first quotation mark, less a dangling speech intro (`行者笑道：`)."""
    positions = [i for i in (text.find(q) for q in QUOTE_MARKS) if i >= 0]
    if not positions:
        return text
    head = text[: min(positions)]
    if head.rstrip().endswith(("：", ":")):
        ends = [head.rfind(p) for p in "。！？\n"]
        head = head[: max(ends) + 1] if max(ends) >= 0 else ""
    return head


class NarratorBackend:
    """Persona mode: `inner` (any LLM backend) prompted as the narrator; its reply never carries speech."""

    def __init__(self, inner, story: str = "", scene=None) -> None:
        self.inner = inner
        self.extra = narrator_system(story, scene)
        self.label = f"narrator on {getattr(inner, 'label', type(inner).__name__)}"

    def stream(
        self,
        messages: Sequence[Message],
        settings: GenerationSettings,
        cancel: threading.Event | None = None,
    ) -> Iterator[str]:
        out = [dict(m) for m in messages]
        if self.extra and out and out[0]["role"] == "system":
            out[0]["content"] = f"{out[0]['content']}\n\n{self.extra}"
        shown = 0
        text = ""
        for piece in self.inner.stream(out, settings, cancel):
            if not isinstance(piece, str):
                continue  # a model's narration has no citation
            text += piece
            cut = cut_at_speech(text)
            if len(cut) < len(text):  # speech started: release what is narration, then stop
                if len(cut) > shown:
                    yield cut[shown:]
                return
            # release whole sentences only: the end of one may still turn out to be a speech intro (…道：)
            safe = max(text.rfind(p) for p in "。！？\n") + 1
            if safe > shown:
                yield text[shown:safe]
                shown = safe
        if len(text) > shown:
            yield text[shown:]

"""Guards on a speaker's reply: it never writes another member's or the person's lines, never names itself.

A model trained on dialogue happily continues the script: `……\\n猪八戒：师兄说得是`. Two layers stop that:
- stop strings sent to the backend (`\\n猪八戒：` …), so a server stops generating early where it can;
- a streaming trim pass (ReplyGuard) that holds back the start of each line while it could still become
  `名字：` / `名字:`; a line that turns out to be another speaker's label ends the reply there, a line that
  starts with the speaker's own label loses the label. Leading/trailing blank space is trimmed, so a reply that
  is nothing but someone else's line ends up empty (and the room drops it with a notice).

A label is recognised however it is dressed: split by invisible characters (U+200B …, which are dropped from the
reply), in Markdown emphasis (`**猪八戒**：`), after an HTML line break (`<br>猪八戒：`), or on the same line after
the end of a sentence (`好。猪八戒：`). Every name of a character counts (`xiyou.names.all_names`), English ones
case-insensitively.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable

from xiyou.backends.stops import MAX_STOP_STRINGS  # what the OpenAI API accepts; the trim pass catches the rest
from xiyou.character import Character
from xiyou.names import INVISIBLE, all_names

#: After these a new speaker may start on the same line: '好。猪八戒：…'.
_SENTENCE_END = frozenset("。！？!?；;…”」』")
_MARKUP = re.compile(r"[\s*_~`\u3000【】\[\]]+")
_LEAD = "#>-+•·"
_BR_FULL = re.compile(r"<br\s*/?>", re.IGNORECASE)
_BR_PARTIAL = re.compile(r"<(?:b(?:r\s*/?)?)?", re.IGNORECASE)
_BR_MAX = 8


def _norm(text: str) -> str:
    """Text as labels are matched: NFKC (full-width colon -> ':'), markup and blank space removed, case-folded."""
    return _MARKUP.sub("", unicodedata.normalize("NFKC", text)).lstrip(_LEAD).casefold()


def _labels(names: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(_norm(f"{name}:") for name in names if name and _norm(name)))


@functools.lru_cache(maxsize=256)
def _label_sets(
    own_names: tuple[str, ...], other_names: tuple[str, ...], person: str
) -> tuple[tuple[str, ...], tuple[str, ...], frozenset[str]]:
    """(foreign labels, own labels, every prefix of a label) as matched (see `_norm`)."""
    own = _labels(own_names)
    foreign = [label for label in _labels([*other_names, person]) if label not in own]
    prefixes = frozenset(label[:i] for label in (*own, *foreign) for i in range(len(label) + 1))
    return tuple(foreign), tuple(own), prefixes


def stop_strings(speaker: Character, others: Iterable[Character], person: str) -> tuple[str, ...]:
    """The stop strings for a backend: the other speakers' display names and the person's, at a line start."""
    names = [c.name for c in others if c.id != speaker.id] + [person]
    return tuple(f"\n{name}：" for name in dict.fromkeys(names))[:MAX_STOP_STRINGS]


class ReplyGuard:
    """Feed the reply's deltas in; get back the text that may be shown. `stopped` turns True at a foreign label."""

    def __init__(self, speaker: Character, characters: Iterable[Character], person: str) -> None:
        others = [c for c in characters if c.id != speaker.id]
        self._foreign, self._own, self._prefixes = _label_sets(
            tuple(all_names(speaker)), tuple(n for c in others for n in all_names(c)), person
        )
        self._tag = ""  # a held '<', '<b', '<br' … that may be an HTML line break
        self.stopped = False
        self._started = False  # something was emitted (leading blank space is dropped before that)
        self._line_open = False  # inside a line whose start is decided: stream it straight through
        self._newlines = ""  # held line breaks (and blank space) before an undecided line start
        self._head = ""  # the undecided start of the current line
        self._text: list[str] = []

    @property
    def text(self) -> str:
        """Everything emitted so far."""
        return "".join(self._text)

    def feed(self, delta: str) -> str:
        """Process one delta; return the part of it that can be shown now (maybe empty)."""
        if self.stopped:
            return ""
        out: list[str] = []
        for ch in delta:
            if ch in INVISIBLE:
                continue
            if self._tag or ch == "<":
                self._tag += ch
                if _BR_FULL.fullmatch(self._tag):
                    self._tag = ""
                    self._push("\n", out)
                elif not _BR_PARTIAL.fullmatch(self._tag) or len(self._tag) > _BR_MAX:
                    held, self._tag = self._tag, ""
                    for c in held:
                        self._push(c, out)
                        if self.stopped:
                            break
            else:
                self._push(ch, out)
            if self.stopped:
                break
        return self._emit(out)

    def _push(self, ch: str, out: list[str]) -> None:
        if self._line_open:
            if ch == "\n":
                self._line_open = False
                self._newlines = "\n"
                self._head = ""
            else:
                out.append(ch)
                if ch in _SENTENCE_END:  # a new speaker may start right here: hold what follows
                    self._line_open = False
                    self._newlines = self._head = ""
            return
        if not self._head and ch.isspace():
            self._newlines += ch
            return
        self._head += ch
        self._decide(out)

    def _decide(self, out: list[str]) -> None:
        head = self._head
        key = _norm(head)
        if key.startswith(self._foreign):
            self.stopped = True
            self._newlines = self._head = ""
            return
        for label in self._own:
            if key.startswith(label):
                self._head = ""  # drop our own label, keep going on this line
                self._newlines = "" if not self._started else self._newlines
                return
        if key in self._prefixes:
            return  # could still become a label: hold
        if self._started:
            out.append(self._newlines)
        out.append(head)
        self._started = True
        self._newlines = self._head = ""
        # after a sentence end ('……猪八戒：') the next speaker may still start: keep deciding
        self._line_open = head[-1] not in _SENTENCE_END

    def _emit(self, out: list[str]) -> str:
        text = "".join(out)
        if text:
            self._text.append(text)
        return text

    def finish(self) -> str:
        """The reply ended: release a held line start that never became a label; return the final addition."""
        out: list[str] = []
        if not self.stopped and self._tag:
            held, self._tag = self._tag, ""
            for c in held:
                self._push(c, out)
        if not self.stopped and self._head:
            if self._started:
                out.append(self._newlines)
            out.append(self._head)
            self._started = True
        self._newlines = self._head = ""
        return self._emit(out)

    def final_text(self) -> str:
        """The whole reply after the trim pass (trailing blank space removed)."""
        return self.text.strip()

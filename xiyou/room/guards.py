"""Guards on a speaker's reply: it never writes another member's or the person's lines, never names itself.

A model trained on dialogue happily continues the script: `……\\n猪八戒：师兄说得是`. Two layers stop that:
- stop strings sent to the backend (`\\n猪八戒：` …), so a server stops generating early where it can;
- a streaming trim pass (ReplyGuard) that holds back the start of each line while it could still become
  `名字：` / `名字:`; a line that turns out to be another speaker's label ends the reply there, a line that
  starts with the speaker's own label loses the label. Leading/trailing blank space is trimmed, so a reply that
  is nothing but someone else's line ends up empty (and the room drops it with a notice).
"""

from __future__ import annotations

from collections.abc import Iterable

from xiyou.character import Character

_COLONS = ("：", ":")
#: Backends that speak the OpenAI API accept at most 4 stop strings; the trim pass catches the rest.
MAX_STOP_STRINGS = 4


def _labels(names: Iterable[str]) -> list[str]:
    return [f"{name}{colon}" for name in dict.fromkeys(names) if name for colon in _COLONS]


def stop_strings(speaker: Character, others: Iterable[Character], person: str) -> tuple[str, ...]:
    """The stop strings for a backend: the other speakers' display names and the person's, at a line start."""
    names = [c.name for c in others if c.id != speaker.id] + [person]
    return tuple(f"\n{name}：" for name in dict.fromkeys(names))[:MAX_STOP_STRINGS]


class ReplyGuard:
    """Feed the reply's deltas in; get back the text that may be shown. `stopped` turns True at a foreign label."""

    def __init__(self, speaker: Character, characters: Iterable[Character], person: str) -> None:
        others = [c for c in characters if c.id != speaker.id]
        own_names = set(speaker.names)
        foreign = [n for c in others for n in c.names if n not in own_names] + [person]
        self._foreign = tuple(_labels(foreign))
        self._own = tuple(_labels(speaker.names))
        self._all = self._foreign + self._own
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
            if self._line_open:
                if ch == "\n":
                    self._line_open = False
                    self._newlines = "\n"
                    self._head = ""
                else:
                    out.append(ch)
                continue
            if not self._head and ch.isspace():
                self._newlines += ch
                continue
            self._head += ch
            self._decide(out)
            if self.stopped:
                break
        return self._emit(out)

    def _decide(self, out: list[str]) -> None:
        head = self._head
        if head.startswith(self._foreign):
            self.stopped = True
            self._newlines = self._head = ""
            return
        for label in self._own:
            if head.startswith(label):
                self._head = ""  # drop our own label, keep going on this line
                self._newlines = "" if not self._started else self._newlines
                return
        if any(label.startswith(head) for label in self._all):
            return  # could still become a label: hold
        if self._started:
            out.append(self._newlines)
        out.append(head)
        self._started = True
        self._newlines = self._head = ""
        self._line_open = True

    def _emit(self, out: list[str]) -> str:
        text = "".join(out)
        if text:
            self._text.append(text)
        return text

    def finish(self) -> str:
        """The reply ended: release a held line start that never became a label; return the final addition."""
        out: list[str] = []
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

"""Stop strings applied to a stream of text deltas, on the client side.

Servers treat `stop` differently (some ignore it, some include the stop text, a local model only stops on
tokens), so every backend passes its deltas through `StopFilter`: text that could be the start of a stop
string is held back until it is clear, and the reply ends right before the first stop string.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

#: The most stop strings the OpenAI API accepts in `stop`; a backend applies all of its stop strings anyway.
MAX_STOP_STRINGS = 4

#: The chat formats' end-of-turn and role markers (ChatML, InternLM2): text after any of them is never part of
#: the reply, whatever the server does with `stop` (a server that decodes them as text, or that stops at EOS only).
END_OF_TURN: tuple[str, ...] = (
    "<|im_end|>",
    "<|im_start|>",
    "<|endoftext|>",
    "<|action_start|>",
    "<|action_end|>",
    "<|interpreter|>",
    "<|plugin|>",
)


class StopFilter:
    """Feed deltas in with `push`; it returns what can be shown now. `stopped` turns True at a stop string."""

    def __init__(self, stops: Iterable[str]) -> None:
        self.stops = tuple(s for s in stops if s)
        self._held = ""
        self.stopped = False
        self._firsts = frozenset(s[0] for s in self.stops)
        self._window = max((len(s) for s in self.stops), default=1) - 1

    def push(self, delta: str) -> str:
        if self.stopped:
            return ""
        if not self.stops:
            return delta
        text = self._held + delta
        cut = min((i for i in (text.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._held = ""
            return text[:cut]
        keep = self._partial_tail(text)
        self._held = text[len(text) - keep :] if keep else ""
        return text[: len(text) - keep]

    def _partial_tail(self, text: str) -> int:
        """The length of the longest tail of `text` that is a proper prefix of some stop string (0: none)."""
        start = max(0, len(text) - self._window)
        for i in range(start, len(text)):  # the earliest start is the longest tail
            if text[i] in self._firsts:
                tail = text[i:]
                if any(len(s) > len(tail) and s.startswith(tail) for s in self.stops):
                    return len(text) - i
        return 0

    def flush(self) -> str:
        """The held-back text, once the stream has ended without completing a stop string."""
        held, self._held = ("" if self.stopped else self._held), ""
        return held


def apply_stops(deltas: Iterable[str], stops: Iterable[str]) -> Iterator[str]:
    """The deltas, cut before the first stop string; never yields empty strings."""
    f = StopFilter(stops)
    for delta in deltas:
        out = f.push(delta)
        if out:
            yield out
        if f.stopped:
            return
    tail = f.flush()
    if tail:
        yield tail

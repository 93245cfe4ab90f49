"""What happens to a reply's text deltas before anyone sees them, whichever backend made them.

- `clean_text` (from xiyou/io.py, whose writers use it too) / `TextCleaner`: text that cannot be encoded (a lone
  surrogate such as `\\ud800`, from a server that escapes half a pair in JSON) becomes U+FFFD, so no page,
  terminal, transcript or JSONL writer crashes on it. A pair split across two deltas is put back together. Every
  backend calls `clean_text` (or feeds its deltas through a `ReplyGuard`, which does it).
- `ReplyGuard`: cleans, cuts at the stop strings and ALWAYS at the chat format's end-of-turn markers
  (`stops.END_OF_TURN`), and caps the reply's growth at `reply_char_limit(max_new_tokens)` characters, for a
  server that ignores `max_tokens`.
- `ReplyStream`: the iterator a backend returns; after it ends, `.truncated` says whether the cap cut it and
  `.notice` is a sentence a page can show under the reply (it is not an error: the text so far is kept).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

from xiyou.backends.stops import END_OF_TURN, StopFilter
from xiyou.io import clean_text

__all__ = ["ReplyGuard", "ReplyStream", "TextCleaner", "clean_text", "reply_char_limit", "whole_reply"]

REPLACEMENT = "\ufffd"
#: A generous characters-per-token estimate (CJK text is about 1–2 per token, English about 4): the cap is a
#: guard against runaway servers, never meant to cut an honest reply.
CHARS_PER_TOKEN = 8
#: No reply grows past this many characters, whatever max_new_tokens says (about 70,000 froze the pages).
MAX_REPLY_CHARS = 24_000
#: Even a short max_new_tokens allows this many characters: the cap stops floods, it never trims an answer.
MIN_REPLY_CHARS = 8_000


def _is_high_surrogate(ch: str) -> bool:
    return "\ud800" <= ch <= "\udbff"


class TextCleaner:
    """`clean_text` for a stream: a high surrogate at the end of a delta waits for its partner in the next."""

    def __init__(self) -> None:
        self._held = ""

    def push(self, delta: str) -> str:
        text = self._held + delta
        self._held = ""
        if text and _is_high_surrogate(text[-1]):
            text, self._held = text[:-1], text[-1]
        return clean_text(text)

    def flush(self) -> str:
        held, self._held = self._held, ""
        return REPLACEMENT if held else ""


def reply_char_limit(max_new_tokens: int | None) -> int:
    """The most characters a reply may grow to: about `max_new_tokens` tokens, within a hard ceiling."""
    if max_new_tokens is None:
        return MAX_REPLY_CHARS
    return max(MIN_REPLY_CHARS, min(MAX_REPLY_CHARS, max_new_tokens * CHARS_PER_TOKEN))


def whole_reply(text: str, stops: Iterable[str] = (), max_new_tokens: int | None = None) -> str:
    """What a `ReplyGuard` lets through of a reply that arrived whole (a non-streamed answer), in one pass."""
    text = clean_text(text)
    cuts = [i for i in (text.find(s) for s in (*stops, *END_OF_TURN) if s) if i >= 0]
    if cuts:
        text = text[: min(cuts)]
    return text[: reply_char_limit(max_new_tokens)]


class ReplyGuard:
    """Feed raw deltas in with `push`; it returns what may be shown. `stopped` turns True at a stop string, an
    end-of-turn marker or the length cap (then `truncated` is True too). Call `flush` once the stream ends."""

    def __init__(self, stops: Iterable[str] = (), max_new_tokens: int | None = None) -> None:
        self.limit = reply_char_limit(max_new_tokens)
        self._cleaner = TextCleaner()
        self._stops = StopFilter(dict.fromkeys([*stops, *END_OF_TURN]))
        self.length = 0
        self.truncated = False

    @property
    def stopped(self) -> bool:
        return self._stops.stopped or self.truncated

    def _cap(self, text: str) -> str:
        if self.truncated:
            return ""
        room = self.limit - self.length
        if len(text) > room:
            text = text[:room]
            self.truncated = True
        self.length += len(text)
        return text

    def push(self, delta: str) -> str:
        if self.stopped:
            return ""
        return self._cap(self._stops.push(self._cleaner.push(delta)))

    def flush(self) -> str:
        if self.stopped:
            return ""
        tail = self._stops.push(self._cleaner.flush())
        return self._cap(tail + self._stops.flush())


def truncation_notice(limit: int) -> str:
    return (
        f"The reply was cut at {limit:,} characters: the server kept going past the length limit "
        "(max_new_tokens / max_tokens)."
    )


class ReplyStream(Iterator[str]):
    """The text deltas of one reply, guarded (see the module doc). Closing it closes the source."""

    def __init__(self, deltas: Iterable[str], guard: ReplyGuard, cancel: threading.Event | None = None) -> None:
        self.guard = guard
        self._source = iter(deltas)
        self._cancel = cancel
        self._pending: list[str] = []
        self._done = False

    @property
    def truncated(self) -> bool:
        """True once the length cap ended the reply (the text shown so far is the reply)."""
        return self.guard.truncated

    @property
    def notice(self) -> str | None:
        """A sentence to show under a cut reply (None when it was not cut)."""
        return truncation_notice(self.guard.limit) if self.guard.truncated else None

    def __iter__(self) -> ReplyStream:
        return self

    def __next__(self) -> str:
        while not self._pending:
            if self._done:
                raise StopIteration
            if self._cancel is not None and self._cancel.is_set():
                self.close()
                raise StopIteration
            try:
                delta = next(self._source)
            except StopIteration:
                self._done = True
                tail = self.guard.flush()
                if tail:
                    self._pending.append(tail)
                continue
            out = self.guard.push(delta)
            if out:
                self._pending.append(out)
            if self.guard.stopped:
                self.close()
        return self._pending.pop(0)

    def close(self) -> None:
        self._done = True
        close = getattr(self._source, "close", None)
        if close is not None:
            close()

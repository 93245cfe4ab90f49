"""Find the quoted spans of a chapter: “…” with nesting, and speech that runs over several paragraphs.

Chinese typesetting opens every paragraph of a long speech with “ and closes only the last one with ”; an inner
quotation uses ‘…’ (sometimes a nested “…”). A quote left open at a paragraph end that the next paragraph does
not continue is closed there (a typo in the source must not swallow the rest of the chapter).
"""

from __future__ import annotations

import dataclasses
import re

OPEN, CLOSE = "“", "”"


@dataclasses.dataclass(frozen=True)
class Quote:
    start: int  # offset of the opening “ in the chapter text
    end: int  # offset just past the closing ” (or the paragraph end for an unclosed quote)
    text: str  # the content, without the outer quotes; paragraphs of a multi-paragraph speech joined by "\n"
    paragraphs: int  # how many paragraphs the speech spans


def _continues(text: str, start: int) -> bool:
    """Does the paragraph at `start` carry on a speech without re-opening it (its first quote mark is ”)?"""
    line_end = text.find("\n", start)
    line = text[start:] if line_end < 0 else text[start:line_end]
    close, open_ = line.find(CLOSE), line.find(OPEN)
    return close >= 0 and (open_ < 0 or close < open_)


#: Narration that introduces a speech, right before a quote mark (那呆子慌得跪下道：, 行者笑道：).
_SPEECH_TAG = re.compile(r"[^“”‘’。！？!?\n]{1,30}(?:道|说|问|叫|曰|云|喝)[：:]\s*$")
_SENTENCE_END = "。！？!?’"


def _unclosed_before(text: str, start: int, at: int) -> int | None:
    """Where a quote opened before `start` ended, if the quote mark at `at` inside it opens the next speech of the
    narration because the source never closed the first one (…你还回去罢。那呆子慌得跪下道：“师父，…, or ’ typed
    for ”: …去不得。’老妖道：“…): just past the sentence end before the speech's intro; None when the mark opens a
    quotation inside the speech (…你看这：“彩画雕栏…)."""
    tag = _SPEECH_TAG.search(text, start, at)
    if tag is None or tag.start() <= start or text[tag.start() - 1] not in _SENTENCE_END:
        return None
    return tag.start() - 1 if text[tag.start() - 1] == "’" else tag.start()  # the misprinted mark is not his


def find_quotes(text: str) -> list[Quote]:
    """All top-level quotes of `text` (one chapter), in order."""
    quotes: list[Quote] = []
    n = len(text)
    i = 0
    while True:
        start = text.find(OPEN, i)
        if start < 0:
            break
        depth = 0
        j = start
        paragraphs = 1
        pieces: list[tuple[int, int]] = []
        piece_start = start + 1
        end = -1
        while j < n:
            ch = text[j]
            if ch == OPEN and depth == 1 and (cut := _unclosed_before(text, piece_start, j)) is not None:
                pieces.append((piece_start, cut))  # its ” is missing: it ended where the next speech's intro began
                end = cut
                break
            if ch == OPEN:
                depth += 1
            elif ch == CLOSE:
                depth -= 1
                if depth == 0:
                    pieces.append((piece_start, j))
                    end = j + 1
                    break
            elif ch == "\n":
                # Paragraph end inside an open quote: continued when the next paragraph opens with “.
                pieces.append((piece_start, j))
                if j + 1 < n and text[j + 1] == OPEN:
                    paragraphs += 1
                    piece_start = j + 2
                    j += 2
                    depth = max(depth, 1)
                    continue
                if _continues(text, j + 1):
                    paragraphs += 1
                    piece_start = j + 1
                    j += 1
                    depth = 1
                    continue
                end = j
                break
            j += 1
        if end < 0:  # the text ended inside the quote
            pieces.append((piece_start, n))
            end = n
        content = "\n".join(text[a:b] for a, b in pieces).strip()
        if content:
            quotes.append(Quote(start=start, end=end, text=content, paragraphs=paragraphs))
        i = end
    return quotes

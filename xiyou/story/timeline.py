"""A point in the story: "after chapter N", and the story so far as the characters may know it.

`story_so_far(chapter, budget_tokens)` lists what has happened up to and including chapter N: the most recent
chapters by their full 回目 headings (from the novel, through the canon loader), older chapters grouped into
arcs summed up in one line each (`arcs.toml`, our own words). It never mentions anything after chapter N: an
arc summary is used only for an arc that ends at or before N; the chapters of the arc that N falls in are shown
by their headings. When even the summaries exceed the budget, the oldest lines go first ("……" marks the cut).

Tokens are estimated with the one estimator (`xiyou.tokens.estimate_tokens`).
"""

from __future__ import annotations

import dataclasses
import functools
import tomllib
from pathlib import Path

from xiyou.canon.loader import chapter_ref, chinese_number

#: Chapters in the novel; a conversation's chapter is 1..LAST_CHAPTER, None meaning the whole journey.
LAST_CHAPTER = 100
ARCS_FILE = Path(__file__).with_name("arcs.toml")
HEADER = "【故事进展】"
CUT = "……"


class StoryError(ValueError):
    """A chapter out of range or a damaged story data file; the message says which value and what to do."""


@dataclasses.dataclass(frozen=True)
class Arc:
    first: int
    last: int
    summary: str

    @property
    def label(self) -> str:
        """第二十三至二十六回 (or 第四十三回 for a one-chapter arc)."""
        if self.first == self.last:
            return chapter_ref(self.first)
        return f"第{chinese_number(self.first)}至{chinese_number(self.last)}回"

    @property
    def line(self) -> str:
        return f"{self.label}：{self.summary}"


def check_chapter(chapter: int | None) -> int | None:
    """`chapter` itself when it is None (the whole journey) or 1..100; StoryError otherwise."""
    if chapter is None:
        return None
    if isinstance(chapter, bool) or not isinstance(chapter, int) or not 1 <= chapter <= LAST_CHAPTER:
        raise StoryError(
            f"chapter must be a whole number from 1 to {LAST_CHAPTER} (or unset: the whole journey), got {chapter!r}"
        )
    return chapter


@functools.cache
def arcs() -> tuple[Arc, ...]:
    """The arcs of `arcs.toml`, in order; StoryError when they do not cover 1..100 exactly once."""
    data = tomllib.loads(ARCS_FILE.read_text(encoding="utf-8"))
    out: list[Arc] = []
    expected = 1
    for i, row in enumerate(data.get("arc", [])):
        first, last = row["chapters"]
        if first != expected or last < first:
            raise StoryError(
                f"{ARCS_FILE}: arc {i + 1} covers chapters {first}-{last}; expected it to start at "
                f"{expected} (arcs must cover 1..{LAST_CHAPTER} in order, without gaps)"
            )
        out.append(Arc(first, last, row["summary"].strip()))
        expected = last + 1
    if expected != LAST_CHAPTER + 1:
        raise StoryError(f"{ARCS_FILE}: the arcs end at chapter {expected - 1}, not {LAST_CHAPTER}")
    return tuple(out)


def arc_of(chapter: int) -> Arc:
    for arc in arcs():
        if arc.first <= chapter <= arc.last:
            return arc
    raise StoryError(f"no arc holds chapter {chapter}")


def _headings(novel=None) -> dict[int, str]:
    """Chapter number -> its heading line (第十九回　云栈洞悟空收八戒　浮屠山玄奘受心经); {} without a novel."""
    if novel is None:
        try:
            from xiyou.canon import get_canon

            novel = get_canon().novel
        except (OSError, ValueError):  # no novel here: the arcs alone still tell the story
            return {}
    return {c.number: c.heading for c in novel.chapters}


def story_so_far(chapter: int | None, budget_tokens: int = 600, novel=None) -> str:
    """What has happened up to and including `chapter` (None: the whole journey), within `budget_tokens`.

    `novel` (a `Novel`) defaults to the canon's; without any novel the arc summaries alone are used.
    Returns "" when the budget cannot hold even the header and one line.
    """
    from xiyou.tokens import estimate_tokens

    n = check_chapter(chapter) or LAST_CHAPTER
    headings = _headings(novel)
    # Items in story order: (first chapter, text); start with every chapter by its heading, arcs where missing.
    lines: list[tuple[int, str]] = []
    compressible: list[int] = []  # indexes into `lines` of the complete arcs (oldest first)
    for arc in arcs():
        if arc.first > n:
            break
        complete = arc.last <= n
        chapters = range(arc.first, min(arc.last, n) + 1)
        if headings and all(c in headings for c in chapters):
            if complete:
                compressible.append(len(lines))
            lines.append((arc.first, "\n".join(headings[c] for c in chapters)))
        elif complete:
            lines.append((arc.first, arc.line))
        # an incomplete arc without headings is left out: its summary would tell what comes after `n`
    arc_by_first = {a.first: a for a in arcs()}
    header = HEADER + (f"（到{chapter_ref(n)}为止）" if chapter is not None else "（全书）")

    def render(items: list[tuple[int, str]], cut: bool) -> str:
        body = "\n".join(t for _, t in items)
        return f"{header}\n{CUT}\n{body}" if cut else f"{header}\n{body}"

    def cost(items: list[tuple[int, str]], cut: bool) -> int:
        return estimate_tokens(render(items, cut))

    # 1. compress the oldest complete arcs to their summary until it fits
    for i in compressible:
        if cost(lines, False) <= budget_tokens:
            break
        first = lines[i][0]
        lines[i] = (first, arc_by_first[first].line)
    # 2. still too long: drop the oldest lines (a long last arc loses its oldest headings one by one)
    cut = False
    flat: list[tuple[int, str]] = []
    for first, text in lines:
        flat.extend((first, t) for t in text.split("\n"))
    while flat and cost(flat, cut) > budget_tokens:
        flat.pop(0)
        cut = True
    return render(flat, cut) if flat else ""

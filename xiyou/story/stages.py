"""Who each of the four is at a point in the story: the persona prompt's description at "after chapter N".

A character file's description is the whole book's: it names 唐僧 and the pilgrimage for 悟空 at chapter 5, and
净坛使者 (chapter 100) for 八戒 at any chapter. `stage_of(cid, chapter)` gives the stage of `stages.toml` that holds
the chapter instead: a description in our own words of who he is by then (悟空 before 14 the Monkey King and
齐天大圣, 八戒 before 19 the 天蓬元帅 turned 猪悟能 of 福陵山…), and optionally the name the prompt calls him, how
others address him then, and words whose sentences of his speaking register are left out (徒弟 before he has
any). None for the whole journey: the character file's own description stands.
"""

from __future__ import annotations

import dataclasses
import functools
import tomllib
from pathlib import Path

from xiyou.story.timeline import LAST_CHAPTER, StoryError, check_chapter

STAGES_FILE = Path(__file__).with_name("stages.toml")


@dataclasses.dataclass(frozen=True)
class Stage:
    """Who `character` is in chapters `first`..`last` (see the module doc)."""

    character: str
    first: int
    last: int
    description: str
    name: str | None = None
    called: tuple[str, ...] = ()
    omit: tuple[str, ...] = ()

    @property
    def chapters(self) -> range:
        return range(self.first, self.last + 1)


def _stage(i: int, row: dict) -> Stage:
    where = f"{STAGES_FILE}: stage {i + 1}"
    unknown = set(row) - {"character", "chapters", "description", "name", "called", "omit"}
    if unknown:
        raise StoryError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
    try:
        first, last = row["chapters"]
        description = row["description"].strip()
        character = row["character"]
    except (KeyError, ValueError, TypeError, AttributeError) as e:
        raise StoryError(f"{where}: needs character, chapters = [first, last] and description ({e!r})") from None
    if not description:
        raise StoryError(f"{where} ({character}): the description is empty")
    return Stage(
        character, first, last, description, row.get("name"), tuple(row.get("called", ())), tuple(row.get("omit", ()))
    )


@functools.cache
def stages() -> dict[str, tuple[Stage, ...]]:
    """Character id -> his stages in order; StoryError when a character's stages do not cover 1..100 in order."""
    from xiyou.names import CHARACTER_IDS

    data = tomllib.loads(STAGES_FILE.read_text(encoding="utf-8"))
    by_id: dict[str, list[Stage]] = {}
    for i, row in enumerate(data.get("stage", [])):
        s = _stage(i, row)
        if s.character not in CHARACTER_IDS:
            raise StoryError(f"{STAGES_FILE}: stage {i + 1}: unknown character {s.character!r}")
        by_id.setdefault(s.character, []).append(s)
    for cid in CHARACTER_IDS:
        expected = 1
        for s in by_id.get(cid, []):
            if s.first != expected or s.last < s.first:
                raise StoryError(
                    f"{STAGES_FILE}: {cid}'s stage {s.first}-{s.last} should start at chapter {expected} "
                    f"(a character's stages cover 1..{LAST_CHAPTER} in order, without gaps)"
                )
            expected = s.last + 1
        if expected != LAST_CHAPTER + 1:
            raise StoryError(f"{STAGES_FILE}: {cid}'s stages end at chapter {expected - 1}, not {LAST_CHAPTER}")
    return {cid: tuple(v) for cid, v in by_id.items()}


def stage_of(cid: str, chapter: int | None) -> Stage | None:
    """The stage of `cid` holding `chapter`; None for the whole journey or a character without stages."""
    chapter = check_chapter(chapter)
    if chapter is None:
        return None
    return next((s for s in stages().get(cid, ()) if s.first <= chapter <= s.last), None)

"""Who is on the pilgrimage after chapter N, derived from the canon (the novel's attributed lines).

Rules (each reads the canon's utterances, chapters and dialogue scenes, `xiyou.canon`):

- **first line**: the first chapter in which the character speaks at all (an attributed line of his).
- **joined** (a disciple: 悟空, 八戒, 悟净): the first chapter in which one of his lines falls in the same
  dialogue scene as a line of 唐三藏, i.e. he first talks with his master. This gives 悟空 14, 八戒 19, 沙僧 22.
- **joined** (唐三藏, who leads the pilgrimage rather than joining it): the first chapter in which one of his
  lines speaks of going west (西天) or fetching the scriptures (取经): his vow to the emperor, chapter 12.

What a conversation set to chapter N does with a member (decided here, shown by the pages and the CLI):

- N ≥ joined: he is a pilgrim (`"pilgrim"`).
- first line ≤ N < joined: he **joins as his pre-pilgrimage self** (`"before"`): 悟空 in chapters 1-13 is the
  Monkey King of 花果山, 齐天大圣, then the prisoner of 五行山; 三藏 in chapters 8-11 is the young monk 玄奘.
  The canon has his own lines from that time, so canon mode answers in that voice, and the persona prompt says
  he has not become a disciple yet. Refusing him would lose the best-known part of the book (大闹天宫).
- N < first line: he **cannot be added** (`"absent"`): the book has not given him a line yet, so canon mode
  would have nothing to say and a model would invent him. 八戒 and 沙僧 first speak in the chapter where they
  join (their few earlier appearances are narrated under other names), so before 19 / 22 they are absent.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

from xiyou.canon.loader import chapter_ref
from xiyou.names import CHARACTER_IDS
from xiyou.story.timeline import check_chapter

Status = Literal["pilgrim", "before", "absent"]
LEADER = "sanzang"
#: Words of 三藏's vow that start the pilgrimage (see the module doc).
VOW_WORDS = ("西天", "取经")


@dataclasses.dataclass(frozen=True)
class Milestones:
    """Chapters of one character's first line and of his joining the pilgrimage."""

    character: str
    first_line: int
    joined: int


@dataclasses.dataclass(frozen=True)
class Membership:
    """Where `character` stands at `chapter` (None: the whole journey): `status`, and `reason` in words."""

    character: str
    chapter: int | None
    status: Status
    reason: str

    @property
    def can_join(self) -> bool:
        """Can be a member of a conversation set to this chapter (as a pilgrim or as his earlier self)."""
        return self.status != "absent"


def milestones_from(utterances, scenes) -> dict[str, Milestones]:
    """The milestones of the four from the canon's utterances and their scene ids (see the module doc)."""
    first_line: dict[str, int] = {}
    joined: dict[str, int] = {}
    by_scene: dict[int, set[str]] = {}
    for u, s in zip(utterances, scenes):
        by_scene.setdefault(s, set()).add(u.speaker)
    for u, s in zip(utterances, scenes):
        if u.speaker not in CHARACTER_IDS:
            continue
        first_line.setdefault(u.speaker, u.chapter)
        if u.speaker in joined:
            continue
        if u.speaker == LEADER:
            if any(w in u.text for w in VOW_WORDS):
                joined[u.speaker] = u.chapter
        elif LEADER in by_scene[s]:
            joined[u.speaker] = u.chapter
    missing = [cid for cid in CHARACTER_IDS if cid not in joined]
    if missing:
        raise ValueError(f"the canon shows no joining of {', '.join(missing)}; is this the whole novel?")
    return {cid: Milestones(cid, first_line[cid], joined[cid]) for cid in CHARACTER_IDS}


@functools.cache
def _milestones_of(canon) -> dict[str, Milestones]:
    return milestones_from(canon.utterances, canon.scenes)


def milestones(canon=None) -> dict[str, Milestones]:
    """The four's milestones from `canon` (default `get_canon()`: XIYOU_NOVEL or the shared novel)."""
    if canon is None:
        from xiyou.canon import get_canon

        canon = get_canon()
    return _milestones_of(canon)


def _name(cid: str) -> str:
    from xiyou.character import get_character

    return get_character(cid).name


def membership(cid: str, chapter: int | None, canon=None) -> Membership:
    """Where `cid` stands at `chapter`; KeyError for an id that is not one of the four."""
    chapter = check_chapter(chapter)
    if cid not in CHARACTER_IDS:
        raise KeyError(f"unknown character {cid!r}; the pilgrims are: {', '.join(CHARACTER_IDS)}")
    if chapter is None:  # the whole journey: everyone is a pilgrim, no novel needed
        verb = "已领命西行" if cid == LEADER else "已经入了取经的队伍"
        return Membership(cid, None, "pilgrim", f"{_name(cid)}{verb}。")
    m = milestones(canon)[cid]
    name = _name(cid)
    if chapter >= m.joined:
        verb = "已领命西行" if cid == LEADER else "已经入了取经的队伍"
        return Membership(cid, chapter, "pilgrim", f"{name}{verb}（{chapter_ref(m.joined)}起）。")
    if chapter >= m.first_line:
        return Membership(
            cid,
            chapter,
            "before",
            f"到{chapter_ref(chapter)}为止，{name}还没有踏上取经路（{chapter_ref(m.joined)}才入队），"
            f"此时以取经之前的身份出场。",
        )
    return Membership(
        cid,
        chapter,
        "absent",
        f"到{chapter_ref(chapter)}为止，原著里{name}还没有开口说过话（他{chapter_ref(m.first_line)}才出场说话），"
        f"不能加入；把故事进度调到{chapter_ref(m.first_line)}或之后再请他。",
    )


def joined_by(cid: str, chapter: int | None, canon=None) -> bool:
    """Has `cid` joined the pilgrimage by `chapter` (None: the whole journey, always True)?"""
    return membership(cid, chapter, canon).status == "pilgrim"


class MembershipError(ValueError):
    """Someone who cannot be in a conversation set to this chapter was asked for; the message says why."""


def check_members(ids, chapter: int | None, canon=None) -> list[Membership]:
    """The memberships of `ids` at `chapter`; MembershipError naming each absent one and why."""
    result = [membership(cid, chapter, canon) for cid in ids]
    absent = [m for m in result if not m.can_join]
    if absent:
        raise MembershipError("；".join(m.reason for m in absent))
    return result

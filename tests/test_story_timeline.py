"""The story so far after chapter N, and who has joined the pilgrimage by then (derived from the canon)."""

from __future__ import annotations

import re

import pytest

from pipeline.evaluation.leaks import first_mentions, leaks
from xiyou.canon.loader import parse_number
from xiyou.story import (
    MembershipError,
    StoryError,
    check_members,
    joined_by,
    knowledge_limits,
    membership,
    milestones,
    story_so_far,
)
from xiyou.story.timeline import arcs
from xiyou.tokens import estimate_tokens

IDS = ("sanzang", "wukong", "bajie", "wujing")


def _chapters_named(text: str) -> list[int]:
    """Every chapter a story-so-far text names: 第十九回 and the ends of arc ranges 第二十三至二十六回."""
    found = [parse_number(m) for m in re.findall(r"第([零一二三四五六七八九十百]+)回", text)]
    found += [parse_number(m) for m in re.findall(r"至([零一二三四五六七八九十百]+)回", text)]
    return found


def test_arcs_cover_the_book_once() -> None:
    covered = [c for a in arcs() for c in range(a.first, a.last + 1)]
    assert covered == list(range(1, 101))


@pytest.mark.parametrize("chapter", [1, 7, 14, 19, 22, 27, 40, 59, 60, 83, 99, 100])
@pytest.mark.parametrize("budget", [60, 200, 600, 3000])
def test_story_so_far_fits_and_never_tells_the_future(canon, chapter: int, budget: int) -> None:
    text = story_so_far(chapter, budget, novel=canon.novel)
    assert estimate_tokens(text) <= budget
    if not text:
        return
    assert max(_chapters_named(text)) == chapter  # the latest chapter is always kept, nothing after it
    assert leaks(text, chapter, table=first_mentions(canon)) == []


def test_story_so_far_keeps_recent_headings_and_groups_older_chapters(canon) -> None:
    text = story_so_far(27, 300, novel=canon.novel)
    assert text.splitlines()[-1] == canon.novel.chapter(27).heading  # the latest chapter by its full heading
    assert "第二十三至二十六回：四圣化作母女试禅心" in text  # an older arc by its one-line summary
    assert "……" in text.splitlines()[1]  # the oldest arcs did not fit: the cut is marked
    full = story_so_far(5, 3000, novel=canon.novel)
    assert full.splitlines()[1:] == [canon.novel.chapter(n).heading for n in range(1, 6)]


def test_story_so_far_rejects_a_chapter_outside_the_book(canon) -> None:
    with pytest.raises(StoryError, match=r"from 1 to 100.*got 101"):
        story_so_far(101, 500, novel=canon.novel)


def test_membership_derived_from_the_canon(canon) -> None:
    got = {cid: (m.first_line, m.joined) for cid, m in milestones(canon).items()}
    # 八戒 and 悟净 first speak in chapter 8, to 观音, as 那怪 (before the novel names them); they join in 19 and 22
    assert got == {"sanzang": (8, 12), "wukong": (1, 14), "bajie": (8, 19), "wujing": (8, 22)}


@pytest.mark.parametrize(
    ("cid", "chapter", "status"),
    [
        ("wukong", 5, "before"),
        ("wukong", 13, "before"),
        ("wukong", 14, "pilgrim"),
        ("bajie", 7, "absent"),
        ("bajie", 18, "before"),
        ("bajie", 19, "pilgrim"),
        ("wujing", 7, "absent"),
        ("wujing", 21, "before"),
        ("wujing", 22, "pilgrim"),
        ("sanzang", 7, "absent"),
        ("sanzang", 10, "before"),
        ("sanzang", 12, "pilgrim"),
        ("bajie", None, "pilgrim"),
    ],
)
def test_membership_by_chapter(canon, cid: str, chapter: int | None, status: str) -> None:
    m = membership(cid, chapter, canon)
    assert m.status == status
    assert joined_by(cid, chapter, canon) is (status == "pilgrim")


def test_a_member_not_yet_in_the_story_cannot_be_added_and_the_reason_says_when(canon) -> None:
    with pytest.raises(MembershipError) as e:
        check_members(["wukong", "wujing"], 7, canon)
    assert "沙悟净" in str(e.value) and "第八回" in str(e.value) and "孙悟空" not in str(e.value)
    assert [m.status for m in check_members(["wukong"], 3, canon)] == ["before"]


def test_knowledge_limits_say_what_he_cannot_know(canon) -> None:
    assert knowledge_limits("wukong", None) == ""
    text = knowledge_limits("wukong", 20)
    assert "第二十回以后" in text and "不知" in text
    assert "以到这一回为止的故事为准" in knowledge_limits("wukong", 5)  # before he joins: his earlier self
    assert "以到这一回为止的故事为准" not in text
    assert knowledge_limits("narrator", 20) == text  # anyone in the room, not only the four
    for cid in IDS:
        for chapter in (1, 5, 13, 20, 60):
            assert leaks(knowledge_limits(cid, chapter), chapter, table=first_mentions(canon)) == []

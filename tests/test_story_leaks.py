"""The future-knowledge leak metric on known-leaking and known-clean replies."""

from __future__ import annotations

import pytest

from pipeline.evaluation.leaks import CURATED, POPULAR, Leak, first_mentions, leaks
from xiyou.backends.base import Citation


@pytest.fixture(scope="module")
def table(canon) -> dict[str, int]:
    return first_mentions(canon)


def test_first_mentions_come_from_the_novel(table) -> None:
    assert table["八戒"] == 19 and table["唐僧"] == 14 and table["白骨夫人"] == 27
    assert table["火焰山"] == 40 and table["芭蕉扇"] == 34 and table["人参果"] == 24
    assert table["白骨精"] == 27 and table["女儿国"] == table["西梁女国"]  # popular names take the novel's
    assert table["红孩儿"] == 40 and table["花果山"] == 1
    missing = [n for n in CURATED if n not in table]
    assert missing == []  # every curated name is in the novel
    assert set(POPULAR) <= set(table)
    assert "国王" not in table  # role words are not names


@pytest.mark.parametrize(
    ("reply", "chapter", "expected"),
    [
        ("俺老孙三打白骨精，好不委屈！", 20, [Leak("name", "白骨精", 27)]),
        ("那火焰山八百里火焰，须借芭蕉扇。", 30, [Leak("name", "火焰山", 40), Leak("name", "芭蕉扇", 34)]),
        ("此事见于第五十九回。", 50, [Leak("chapter", "第五十九回", 59)]),
        ("见第60回", 50, [Leak("chapter", "第60回", 60)]),
        ("八戒，你这呆子！", 18, [Leak("name", "八戒", 19)]),
    ],
)
def test_known_leaking_replies(table, reply: str, chapter: int, expected: list[Leak]) -> None:
    assert sorted(leaks(reply, chapter, table=table), key=str) == sorted(expected, key=str)


@pytest.mark.parametrize(
    ("reply", "chapter"),
    [
        ("俺老孙在花果山水帘洞快活，谁敢管我！", 5),
        ("三打白骨精，好不委屈！", 27),
        ("那火焰山八百里火焰，须借芭蕉扇。", 59),
        ("此事见于第十四回。", 14),
        ("师父，我们往西天去罢。", 14),
    ],
)
def test_known_clean_replies(table, reply: str, chapter: int) -> None:
    assert leaks(reply, chapter, table=table) == []


def test_a_citation_after_the_chapter_leaks_and_none_means_the_whole_book(table) -> None:
    assert leaks("师父！", 10, [Citation(27, "唐三藏")], table=table) == [Leak("chapter", "第二十七回", 27)]
    assert leaks("师父！", 30, [Citation(27, "唐三藏")], table=table) == []
    assert leaks("三打白骨精（第二十七回）", None, [Citation(27)], table=table) == []


def test_a_longer_name_is_counted_once(table) -> None:
    assert leaks("金角大王拿了我", 20, table=table) == [Leak("name", "金角大王", 32)]

"""xiyou.names: every name of the four, read from the character files, resolved and stripped in one place."""

from __future__ import annotations

import pytest

from xiyou import names


def test_ids_and_display_names_come_from_the_files() -> None:
    assert names.CHARACTER_IDS == ("sanzang", "wukong", "bajie", "wujing")
    assert [names.display_name(c) for c in names.CHARACTER_IDS] == ["唐三藏", "孙悟空", "猪八戒", "沙悟净"]
    assert names.aliases("wukong")[0] == "孙悟空" and "行者" in names.aliases("wukong")


def test_forms_of_address_and_english_names() -> None:
    assert {"师父", "师傅"} <= set(names.forms_of_address("sanzang"))
    assert {"大师兄", "猴哥", "大圣"} <= set(names.forms_of_address("wukong"))
    assert {"二师兄", "呆子"} <= set(names.forms_of_address("bajie"))
    assert {"沙师弟", "三师弟"} <= set(names.forms_of_address("wujing"))
    assert {"Tripitaka", "Tang Sanzang"} <= set(names.english_names("sanzang"))
    assert {"Monkey King", "Sun Wukong", "Wukong"} <= set(names.english_names("wukong"))
    assert {"Pigsy", "Zhu Bajie"} <= set(names.english_names("bajie"))
    assert {"Sandy", "Sha Wujing"} <= set(names.english_names("wujing"))


def test_narration_names_leave_out_the_ambiguous_ones() -> None:
    sanzang = names.narration_names("sanzang")
    assert "师父" not in sanzang and "三藏" in sanzang and "三藏法师" in sanzang
    assert "师父" in names.ambiguous_in_narration("sanzang")
    assert "泼猴" not in names.narration_names("wukong") and "孙长老" in names.narration_names("wukong")


@pytest.mark.parametrize(
    ("name", "chapter", "expected"),
    [
        ("长老", 12, False),
        ("长老", 13, True),
        ("长老", 16, False),
        ("长老", 93, False),
        ("大圣", 58, False),
        ("大圣", 7, True),
        ("行者", 58, False),
        ("行者", 59, True),
        ("八戒", 58, True),
        ("观音", 1, True),
    ],
)
def test_chapter_rules(name: str, chapter: int, expected: bool) -> None:
    assert names.names_him_in(name, chapter) is expected


@pytest.mark.parametrize(
    ("label", "cid"),
    [
        ("孙悟空", "wukong"),
        ("行者", "wukong"),
        ("**行者**：", "wukong"),
        ("那呆子", "bajie"),
        ("  八戒 ", "bajie"),
        ("monkey  KING", "wukong"),
        ("Tripitaka", "sanzang"),
        ("Sha Wujing", "wujing"),
        ("三藏法师", "sanzang"),
        ("猪\u200b八戒", "bajie"),
        ("观音", None),
        ("", None),
        ("师兄", None),
        ("Monkey", None),
    ],
)
def test_resolve(label: str, cid: str | None) -> None:
    assert names.resolve(label) == cid


def test_forms_of_address_resolve_only_when_asked() -> None:
    assert names.resolve("猴哥") is None and names.resolve("猴哥", addressed=True) == "wukong"
    assert names.resolve("三师弟", addressed=True) == "wujing"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("施主：师父，你为什么一定要去西天取经？", "你为什么一定要去西天取经？"),
        ("**八戒**：你还想着高老庄的媳妇吗？", "你还想着高老庄的媳妇吗？"),
        ("孙悟空：大圣你当年为什么要大闹天宫？", "你当年为什么要大闹天宫？"),
        ("八戒和悟空谁更让你操心？", "八戒和悟空谁更让你操心？"),
        ("你好，八戒！", "你好！"),
        ("你好呀，悟空", "你好呀"),
        ("悟空，八戒，沙僧，你们说句话。", "你们说句话。"),
        ("Wukong, how are you?", "how are you?"),
        ("小明：猴哥，你去哪？", "你去哪？"),
        ("师父！", ""),
        ("各位师父好", "各位师父好"),
    ],
)
def test_strip_addressing(text: str, expected: str) -> None:
    assert names.strip_addressing(text, person_name="小明") == expected


def test_strip_addressing_removes_the_persons_own_name_only_as_a_label_or_vocative() -> None:
    assert names.strip_addressing("阿明：阿明，饿了吗", person_name="阿明") == "饿了吗"
    assert names.strip_addressing("阿明：我是阿明", person_name="阿明") == "我是阿明"


@pytest.mark.parametrize(
    "taken", ["猪八戒", "八戒", " 孙悟空 ", "Pigsy", "monkey king", "师父", "大师兄", "悟\u200b空"]
)
def test_the_person_cannot_take_a_name_of_the_four(taken: str) -> None:
    with pytest.raises(
        ValueError, match=r"is a name of (猪八戒|孙悟空|唐三藏) \((bajie|wukong|sanzang)\).*another name"
    ):
        names.check_person_name(taken)


@pytest.mark.parametrize(
    ("bad", "why"),
    [("", "empty"), ("  ", "empty"), ("甲" * 21, "at most 20"), ("a：b", "colons"), ("a\nb", "line breaks")],
)
def test_person_name_shape(bad: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        names.check_person_name(bad)


def test_person_name_is_cleaned() -> None:
    assert names.check_person_name(" 施主\u200b ") == "施主"
    assert names.check_person_name("小明") == "小明"

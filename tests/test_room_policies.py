"""Turn policies: who answers the person, who speaks next in auto-banter (aliases included)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from xiyou.backends.base import GenerationSettings
from xiyou.character import load_characters
from xiyou.room.member import Member
from xiyou.room.mentions import mentioned
from xiyou.room.policies import banter_speaker, check_policy, responders
from xiyou.room.transcript import PERSON, Entry

CHARS = load_characters()


class Silent:
    label = "silent"

    def stream(self, messages, settings: GenerationSettings, cancel=None):
        yield "……"


def members(*ids: str, muted: tuple[str, ...] = ()) -> list[Member]:
    return [Member(CHARS[i], Silent(), muted=i in muted) for i in ids]


ALL4 = ("sanzang", "wukong", "bajie", "wujing")


def person(text: str) -> list[Entry]:
    return [Entry(PERSON, "施主", text)]


def test_mentions_follow_the_order_named_by_any_alias() -> None:
    chars = list(CHARS.values())
    assert mentioned("呆子，你和大圣吵什么？沙和尚也说两句", chars) == ["bajie", "wukong", "wujing"]
    # the longest alias wins at a position: 猪八戒 is one mention, 美猴王 is wukong, 师父 is sanzang
    assert mentioned("猪八戒说美猴王不听师父的", chars) == ["bajie", "wukong", "sanzang"]
    assert mentioned("今天天气不错", chars) == []
    # how the pilgrims address each other: 猴哥 / 大师兄 is 悟空, 二师兄 is 八戒 (the longest form wins)
    assert mentioned("猴哥，二师兄又睡了", chars) == ["wukong", "bajie"]
    assert mentioned("大师兄说得是", chars) == ["wukong"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("各位师父好", []),  # plural or generic: nobody in particular
        ("师父们辛苦了", []),
        ("诸位长老请坐，悟空也来", ["wukong"]),
        ("师父，各位师父好", ["sanzang"]),
        ("师傅，您好", ["sanzang"]),
        ("Hello Wukong, where is Pigsy?", ["wukong", "bajie"]),  # English names, case-insensitive
        ("the MONKEY KING and tripitaka", ["wukong", "sanzang"]),
        ("Sandy!", ["wujing"]),
        ("Wukongs and Sandyland", []),  # whole words only
        ("叫Wukong来", ["wukong"]),
    ],
)
def test_mentions_skip_plurals_and_hear_english_names(text: str, expected: list[str]) -> None:
    assert mentioned(text, list(CHARS.values())) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("八戒，你说呢？", ["bajie"]),
        ("行者和悟净先说，再请长老", ["wukong", "wujing", "sanzang"]),
        ("弼马温！天蓬！", ["wukong", "bajie"]),
    ],
)
def test_mention_policy_picks_the_named_in_order(text: str, expected: list[str]) -> None:
    assert responders("mention", person(text), members(*ALL4), random.Random(0)) == expected


def test_mention_skips_muted_and_absent_members() -> None:
    room = members("wukong", "bajie", muted=("bajie",))
    assert responders("mention", person("八戒、悟空、沙僧都来"), room, random.Random(0)) == ["wukong"]


def test_mention_without_a_name_falls_back_to_natural() -> None:
    picks = [tuple(responders("mention", person("你们好"), members(*ALL4), random.Random(s))) for s in range(200)]
    assert all(picks), "somebody always answers the person"
    firsts = Counter(p for pick in picks for p in pick)
    # talkativeness: wukong 0.8 > bajie 0.7 > sanzang 0.5 > wujing 0.3
    assert firsts["wukong"] > firsts["sanzang"] > firsts["wujing"]


def test_natural_puts_the_named_first_and_never_the_last_speaker() -> None:
    entries = [*person("大家好"), Entry("wukong", "孙悟空", "沙师弟，你去挑担")]
    for seed in range(100):
        picked = responders("natural", entries, members(*ALL4), random.Random(seed))
        assert picked[0] == "wujing"
        assert "wukong" not in picked
        assert len(picked) == len(set(picked))


def test_zero_talkativeness_never_rolls_but_a_named_member_still_answers() -> None:
    quiet = CHARS["wujing"].model_copy(update={"talkativeness": 0.0})
    room = [Member(quiet, Silent()), *members("wukong")]
    for seed in range(50):
        assert "wujing" not in responders("natural", person("你们好"), room, random.Random(seed))[1:]
    assert responders("natural", person("悟净，你说"), room, random.Random(1))[0] == "wujing"


def test_round_robin_goes_around_from_the_last_character() -> None:
    room = members("sanzang", "wukong", "bajie")
    entries = person("你好")
    assert responders("round_robin", entries, room, random.Random(0)) == ["sanzang"]
    entries += [Entry("sanzang", "唐三藏", "阿弥陀佛"), *person("再说")]
    assert responders("round_robin", entries, room, random.Random(0)) == ["wukong"]
    entries += [Entry("bajie", "猪八戒", "饿了"), *person("然后")]
    assert responders("round_robin", entries, room, random.Random(0)) == ["sanzang"]


def test_all_and_manual() -> None:
    room = members("bajie", "wukong", "wujing", muted=("wujing",))
    assert responders("all", person("八戒先说"), room, random.Random(0)) == ["bajie", "wukong"]
    assert responders("manual", person("八戒"), room, random.Random(0)) == []
    assert banter_speaker("manual", person("八戒"), room, random.Random(0)) is None


def test_banter_never_repeats_the_last_speaker_unless_alone() -> None:
    room = members(*ALL4)
    for seed in range(100):
        entries = [*person("聊"), Entry("bajie", "猪八戒", "俺老猪饿了")]
        assert banter_speaker("natural", entries, room, random.Random(seed)) != "bajie"
    alone = members("bajie")
    assert banter_speaker("natural", [Entry("bajie", "猪八戒", "饿了")], alone, random.Random(0)) == "bajie"


def test_banter_prefers_whoever_the_last_line_named() -> None:
    entries = [Entry("wukong", "孙悟空", "你这呆子，又偷懒！")]
    assert banter_speaker("natural", entries, members(*ALL4), random.Random(3)) == "bajie"


def test_unknown_policy_names_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="round_robin"):
        check_policy("loudest")

"""The name guard: a character never speaks for another, however the other's label is dressed up."""

from __future__ import annotations

import pytest

from xiyou.character import load_characters
from xiyou.room.guards import ReplyGuard

C = load_characters()


def guard(speaker: str, chunks: list[str], person: str = "施主") -> tuple[str, bool]:
    g = ReplyGuard(C[speaker], C.values(), person)
    shown = "".join(g.feed(c) for c in chunks) + g.finish()
    assert shown.strip() == g.final_text()
    return g.final_text(), g.stopped


@pytest.mark.parametrize("zw", ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff"])
def test_zero_width_characters_do_not_hide_a_label(zw: str) -> None:
    assert guard("wukong", [f"好。\n猪{zw}八戒：俺也要"]) == ("好。", True)
    assert guard("wukong", [f"好。\n{zw}猪八戒{zw}：", "俺也要"]) == ("好。", True)
    # and they never reach the reply
    assert guard("wukong", [f"俺老{zw}孙来也"]) == ("俺老孙来也", False)


@pytest.mark.parametrize(
    "chunks",
    [
        ["好。\n**猪八戒**：俺也要"],
        ["好。\n**猪八戒：**俺也要"],
        ["好。\n*", "*猪八", "戒*", "*: 俺也要"],
        ["好。\n__八戒__：俺也要"],
        ["好。\n> 猪八戒：俺也要"],
        ["好。\n【猪八戒】：俺也要"],
        ["好。\n[Pigsy]: 俺也要"],
    ],
)
def test_markdown_emphasis_does_not_hide_a_label(chunks: list[str]) -> None:
    assert guard("wukong", chunks) == ("好。", True)


@pytest.mark.parametrize(
    "chunks",
    [
        ["呆子休要胡说。猪八戒：猴哥饶命"],
        ["呆子休要胡说！", "猪八", "戒：猴哥饶命"],
        ["呆子休要胡说……猪八戒：猴哥饶命"],
        ["呆子休要胡说。 Pigsy: mercy"],
    ],
)
def test_a_label_on_the_same_line_after_a_sentence_end_stops_the_reply(chunks: list[str]) -> None:
    text, stopped = guard("wukong", chunks)
    assert stopped and text.startswith("呆子休要胡说") and "猴哥饶命" not in text and "mercy" not in text


@pytest.mark.parametrize("br", ["<br>", "<BR>", "<br/>", "<br />"])
def test_an_html_line_break_before_a_label_stops_the_reply(br: str) -> None:
    assert guard("wukong", [f"呆子休要胡说{br}猪八戒：猴哥饶命"]) == ("呆子休要胡说", True)
    assert guard("wukong", ["呆子休要胡说<", "b", "r>猪八", "戒：猴哥饶命"]) == ("呆子休要胡说", True)


def test_ordinary_text_passes_unchanged() -> None:
    text = "师父莫怕。八戒这呆子又睡了！**好**一个妖精，<b>看棍</b>……沙师弟挑担去\n【注意】[1] 前面有妖怪"
    assert guard("wukong", list(text)) == (text, False)
    assert guard("wukong", [text]) == (text, False)
    assert guard("wukong", ["a < b"]) == ("a < b", False)


def test_the_speakers_own_label_is_dropped_however_dressed() -> None:
    assert guard("bajie", ["**猪八戒**：俺老猪饿了。"]) == ("俺老猪饿了。", False)
    assert guard("bajie", ["俺老猪饿了。八戒：真饿了。"]) == ("俺老猪饿了。真饿了。", False)

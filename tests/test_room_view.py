"""Each speaker's view: roles, `名字：` prefixes, merging, alternation, token budget; and the guards."""

from __future__ import annotations

from xiyou.backends.base import Citation
from xiyou.character import load_characters
from xiyou.prompts import room_preamble
from xiyou.room.guards import ReplyGuard, stop_strings
from xiyou.room.transcript import PERSON, Entry
from xiyou.room.view import GO_ON, OPENING, build_view
from xiyou.tokens import estimate_tokens

C = load_characters()
PRESENT = [C["wukong"], C["bajie"], C["wujing"]]


def line(speaker: str, text: str) -> Entry:
    return Entry(speaker, "施主" if speaker == PERSON else C[speaker].name, text)


def test_roles_prefixes_and_merging() -> None:
    entries = [
        line(PERSON, "你们两个吵什么？"),
        line("bajie", "猴哥又打俺老猪。"),
        line("wujing", "二师兄莫恼。"),
        line("wukong", "呆子胡说！"),
        line("wukong", "俺老孙几时打你？"),
        line("bajie", "就在方才！"),
    ]
    view = build_view(C["wukong"], entries, PRESENT, "施主")
    assert view[0]["role"] == "system"
    assert view[0]["content"] == f"{C['wukong'].meta_instruction}\n\n{room_preamble(C['wukong'], PRESENT, '施主')}"
    for name in ("施主", "孙悟空", "猪八戒", "沙悟净"):
        assert name in view[0]["content"]
    assert view[1:] == [
        {"role": "user", "content": "施主：你们两个吵什么？\n\n猪八戒：猴哥又打俺老猪。\n\n沙悟净：二师兄莫恼。"},
        {"role": "assistant", "content": "呆子胡说！\n\n俺老孙几时打你？"},
        {"role": "user", "content": "猪八戒：就在方才！"},
    ]
    # the same transcript from 八戒's side: his lines are his own, 悟空's are prefixed
    other = build_view(C["bajie"], entries, PRESENT, "施主")
    assert other[2] == {"role": "assistant", "content": "猴哥又打俺老猪。"}
    assert other[3]["content"].startswith("沙悟净：二师兄莫恼。\n\n孙悟空：呆子胡说！")
    # his own line last: it stays his, and a user turn asks him to go on (roles end with user)
    assert other[-2:] == [{"role": "assistant", "content": "就在方才！"}, {"role": "user", "content": GO_ON}]


def test_roles_alternate_starting_and_ending_with_user() -> None:
    view = build_view(C["wukong"], [line("wukong", "师父，俺老孙去化斋。")], PRESENT, "小施主")
    assert [m["role"] for m in view] == ["system", "user", "assistant", "user"]
    assert view[1]["content"] == OPENING and view[-1]["content"] == GO_ON
    assert "小施主" in view[0]["content"]
    empty = build_view(C["bajie"], [], PRESENT, "施主")
    assert [m["role"] for m in empty] == ["system", "user"]


def test_history_is_trimmed_to_the_token_budget_oldest_first() -> None:
    entries = [line("bajie" if i % 2 else PERSON, f"第{i}句" + "话" * 40) for i in range(200)]
    view = build_view(C["wukong"], entries, PRESENT, "施主", token_budget=600)
    text = "".join(m["content"] for m in view)
    assert estimate_tokens(text) <= 600 + 10
    assert "第199句" in text and "第0句" not in text
    # a single line over the budget is still kept: the speaker must see what it answers
    huge = [line(PERSON, "长" * 5000)]
    assert "长" * 5000 in build_view(C["wukong"], huge, PRESENT, "施主", token_budget=100)[-1]["content"]


def test_token_estimate_counts_cjk_per_character_and_ascii_per_four() -> None:
    assert estimate_tokens("") == 0
    assert estimate_tokens("孙悟空") == 3
    assert estimate_tokens("abcdefgh") == 2
    assert estimate_tokens("悟空 ok") == 3


def guard(speaker: str, chunks: list[str], person: str = "施主") -> tuple[str, bool]:
    g = ReplyGuard(C[speaker], C.values(), person)
    shown = "".join(g.feed(c) for c in chunks) + g.finish()
    assert shown.strip() == g.final_text()
    return g.final_text(), g.stopped


def test_guard_stops_at_another_members_line_even_split_across_deltas() -> None:
    text, stopped = guard("wukong", ["呆子休要", "胡说！\n猪", "八", "戒：猴哥饶命"])
    assert (text, stopped) == ("呆子休要胡说！", True)
    # alias labels and half-width colons count; so does the person's name
    assert guard("wukong", ["好。\n八戒: 俺也要"]) == ("好。", True)
    assert guard("bajie", ["吃饭！\n施主：", "好"]) == ("吃饭！", True)
    assert guard("bajie", ["吃饭！\n老板：好"], person="老板") == ("吃饭！", True)


def test_guard_strips_the_speakers_own_label_and_keeps_ordinary_lines() -> None:
    assert guard("bajie", ["猪八戒：", "俺老猪饿了。"]) == ("俺老猪饿了。", False)
    assert guard("bajie", ["  八戒：饿了。\n八戒：真饿了。"]) == ("饿了。\n真饿了。", False)
    # a line starting with a name that is not a label is kept whole
    assert guard("wukong", ["八戒这呆子\n", "沙师弟挑担去"]) == ("八戒这呆子\n沙师弟挑担去", False)
    assert guard("wukong", ["\n\n", "师父"]) == ("师父", False)


def test_a_reply_that_is_only_someone_elses_line_is_empty() -> None:
    assert guard("wukong", ["唐三藏：悟空，休得无礼"]) == ("", True)


def test_stop_strings_name_the_others_and_the_person() -> None:
    stops = stop_strings(C["wukong"], PRESENT, "施主")
    assert stops == ("\n猪八戒：", "\n沙悟净：", "\n施主：")
    assert len(stop_strings(C["wujing"], list(C.values()), "施主")) == 4


def test_canon_citations_stay_out_of_the_views() -> None:
    cited = Entry("bajie", C["bajie"].name, "俺老猪饿了。", citation=Citation(27, "孙悟空"))
    entries = [line(PERSON, "八戒"), cited, line(PERSON, "悟空？")]
    view = build_view(C["wukong"], entries, PRESENT, "施主")
    assert view[1]["content"] == "施主：八戒\n\n猪八戒：俺老猪饿了。\n\n施主：悟空？"
    own = build_view(C["bajie"], entries, PRESENT, "施主")
    assert own[2] == {"role": "assistant", "content": "俺老猪饿了。"}

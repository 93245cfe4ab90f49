"""Small talk offline: a greeting, thanks, a goodbye or "who are you?" gets the character's own line for it."""

from __future__ import annotations

import pytest
from talk import ask

from xiyou.backends.canon import CanonBackend
from xiyou.canon import Canon, answers, smalltalk
from xiyou.character import SmallTalk, get_character
from xiyou.room import Room, TurnEnded
from xiyou.room.member import Member

IDS = ("sanzang", "wukong", "bajie", "wujing")


def listed(canon: Canon, cid: str, act: str) -> list[tuple[str, int]]:
    return [(ex.reply.text, ex.chapter) for ex in smalltalk.lines(canon, get_character(cid), act)]


@pytest.mark.parametrize(
    ("text", "act"),
    [
        ("你好", "greeting"), ("你们好！", "greeting"), ("师父好！", "greeting"), ("大圣你好呀", "greeting"),
        ("嗨～", "greeting"), ("Hello", "greeting"), ("早上好😊", "greeting"), ("在吗？", "greeting"),
        ("你是谁？", "who"), ("你叫什么名字？", "who"), ("介绍一下你自己", "who"), ("你好，你是谁？", "who"),
        ("谢谢师父", "thanks"), ("好的，谢谢啦", "thanks"), ("辛苦了", "thanks"),
        ("谢谢，再见！", "farewell"), ("拜拜~", "farewell"), ("晚安", "farewell"),
        ("最近怎么样？", "how_are_you"), ("吃了吗？", "how_are_you"),
        ("对不起", "apology"), ("你真厉害！", "compliment"),
        ("在吗在吗", "greeting"), ("吃了吗师父", "how_are_you"), ("请问法师怎么称呼？", "who"),
        ("你是猪八戒吗", "who"), ("好了我去睡了 晚安", "farewell"), ("不好意思打扰一下", "apology"),
        ("我超喜欢你的", "compliment"),
        ("thx师父 听你说完好受多了", "thanks"),  # a remark beside the thanks asks nothing
        ("88 八戒", "farewell"), ("good night 悟净 明天见", "farewell"), ("困死了 二师兄我下线啦", "farewell"),
        ("师父今天累不累呀", "how_are_you"), ("您法号是啥来着", "who"), ("唐僧你长得好俊啊", "compliment"),
        ("嘿 大师兄！", "greeting"),
        ("大圣吃桃了没", "how_are_you"), ("猴哥 头还疼不疼 师父又念咒了吧", "how_are_you"),
        ("报个名号呗 你哪位", "who"),
        ("你真的是猪八戒本猪？", "who"), ("猴哥太酷了吧 yyds", "compliment"), ("御弟哥哥~", "greeting"),
    ],
)  # fmt: skip
def test_small_talk_is_recognised_in_the_forms_people_type(text: str, act: str) -> None:
    assert smalltalk.act_of(text) == (act, "")


@pytest.mark.parametrize(
    ("text", "rest"),
    [
        ("你好，你最怕什么？", "你最怕什么？"),  # a question after a greeting: the question is what is matched
        ("谢谢师父！那你为什么要去西天？", "那你为什么要去西天？"),
        ("你怎么称呼八戒？", "你怎么称呼八戒？"),  # 八戒 is asked about, not called: no "who are you"
        ("好", "好"),  # all right, not a greeting
        ("怎么样？", "怎么样？"),
        ("是", "是"),
        ("你是妖怪吗", "你是妖怪吗"),  # not one of the four's names: a question
        ("你是谁的徒弟？", "你是谁的徒弟？"),
        ("你喜欢吃什么？", "你喜欢吃什么？"),
        ("你骑的马叫什么？", "你骑的马叫什么？"),  # the horse's name, not his
        ("你觉得师父怎么样？", "你觉得师父怎么样？"),  # about someone else
        ("你是不是又偷懒睡觉了？", "你是不是又偷懒睡觉了？"),
        ("你一顿能吃几碗饭？", "你一顿能吃几碗饭？"),
        ("你的金箍棒从哪里来？", "你的金箍棒从哪里来？"),
    ],
)
def test_a_question_is_not_small_talk(text: str, rest: str) -> None:
    assert smalltalk.act_of(text) == (None, rest)


def test_every_listed_line_is_his_in_the_novel_and_every_act_is_a_field(canon: Canon) -> None:
    assert set(SmallTalk.model_fields) == set(smalltalk.ACT_NAMES)
    for cid in IDS:
        character = get_character(cid)
        ids = {ex.id for ex in canon.exchanges(cid)}
        wanted = smalltalk.listed(character)
        assert wanted and all(i in ids for _, i in wanted), [i for _, i in wanted if i not in ids]
        assert character.small_talk.greeting and character.small_talk.who  # what every visitor says first


@pytest.mark.parametrize("cid", IDS)
def test_a_greeting_gets_his_greeting_and_who_are_you_his_introduction(canon: Canon, cid: str) -> None:
    backend = CanonBackend(get_character(cid), canon)
    for greeting in ("你好", "你们好！", "嗨"):
        text, citation = ask(backend, greeting)
        assert (text, citation.chapter) == listed(canon, cid, "greeting")[0]
    text, citation = ask(backend, "你是谁？")
    assert (text, citation.chapter) == listed(canon, cid, "who")[0]
    # greeted again in the same conversation, he moves on: one of his shrugs, never a greeting again
    first, _ = ask(backend, "你好")
    again, _ = ask(backend, "你好", first, "你好呀")
    assert again in {ex.reply.text for ex in answers.deflections(canon, cid)}


def test_thanks_and_goodbye_and_a_missing_act_falls_back_to_his_own_kind_of_line(canon: Canon) -> None:
    wukong = CanonBackend(get_character("wukong"), canon)
    assert ask(wukong, "谢谢大圣！")[0] == listed(canon, "wukong", "thanks")[0][0]
    assert ask(wukong, "再见")[0] == listed(canon, "wukong", "farewell")[0][0]
    assert ask(wukong, "最近怎么样？")[0] == listed(canon, "wukong", "how_are_you")[0][0]
    # 八戒 lists no thanks: he takes it as praise
    bajie = CanonBackend(get_character("bajie"), canon)
    assert ask(bajie, "谢谢你")[0] == listed(canon, "bajie", "compliment")[0][0]


def test_a_question_after_a_greeting_is_answered_as_the_question_alone(canon: Canon) -> None:
    backend = CanonBackend(get_character("wukong"), canon)
    assert ask(backend, "你好！你的金箍棒是从哪里来的？") == ask(backend, "你的金箍棒是从哪里来的？")


def test_a_point_in_the_story_keeps_his_small_talk_to_what_has_happened(canon: Canon) -> None:
    """八戒's introduction is a line of chapter 29: at chapter 20 he cannot say it."""
    assert listed(canon, "bajie", "who")[0][1] == 29
    backend = CanonBackend(get_character("bajie"), canon, max_chapter=20)
    text, citation = ask(backend, "你是谁？")
    assert citation.chapter <= 20 and text not in [t for t, _ in listed(canon, "bajie", "who")]


@pytest.mark.parametrize(("said", "act"), [("大家好呀 😊", "greeting"), ("你们是谁？", "who"), ("thx 88", "farewell")])
def test_a_room_greeted_greets_back_each_in_turn_whatever_the_persons_name(canon: Canon, said: str, act: str) -> None:
    """Small talk to the room is answered by every member (not by each to the member before him, whose line is a
    greeting of another scene or a story line), and the person's name changes nothing."""
    replies = {}
    for person in ("施主", "小明"):
        members = [Member(get_character(cid), CanonBackend(get_character(cid), canon)) for cid in IDS]
        room = Room(members, person=person, banter_turns=0, policy="all")
        room.say(said)
        replies[person] = [(e.speaker, e.entry.text) for e in room.run() if isinstance(e, TurnEnded)]
    assert replies["施主"] == replies["小明"]
    assert sorted(speaker for speaker, _ in replies["施主"]) == sorted(IDS)
    for speaker, text in replies["施主"]:
        character = get_character(speaker)
        assert text == smalltalk.reply(canon, character, act, set(), None).reply.text, (speaker, text)


def test_after_the_round_the_banter_answers_the_member_before_him(canon: Canon) -> None:
    """Only a member's first turn after the person's small talk answers it: a question the person asked is left to
    the usual matching, and in the banter each answers the one before him."""
    members = [Member(get_character(cid), CanonBackend(get_character(cid), canon)) for cid in ("wukong", "bajie")]
    room = Room(members, person="施主", banter_turns=2, policy="all")
    room.say("你们好！")
    turns = [(e.speaker, e.entry.text) for e in room.run() if isinstance(e, TurnEnded)]
    greetings = {t for cid in ("wukong", "bajie") for t, _ in listed(canon, cid, "greeting")}
    assert all(text in greetings for _, text in turns[:2])
    # 悟空 answers 八戒's 贫僧问讯了。: greeted already, he moves on instead of greeting again
    shrugs = {ex.reply.text for ex in answers.deflections(canon, "wukong")}
    assert len(turns) > 2 and turns[2][1] in shrugs


def test_only_calling_him_is_answered_like_a_greeting(canon: Canon) -> None:
    """猴哥！ asks nothing: with the call taken out nothing is left, and he answers as to a greeting."""
    backend = CanonBackend(get_character("wukong"), canon)
    assert ask(backend, "猴哥！")[0] == listed(canon, "wukong", "greeting")[0][0]


def test_news_after_a_greeting_is_not_small_talk(canon: Canon) -> None:
    """你好，师父被妖怪抓走了！ names the novel's people and things: the news is what he answers, not the greeting."""
    vocabulary = answers.answerer(canon, "wukong").vocabulary

    def is_topic(text: str) -> bool:
        return any(t.kind == "entity" for t in answers.query_terms(text, vocabulary))

    assert smalltalk.act_of("你好，师父被妖怪抓走了！", is_topic) == (None, "师父被妖怪抓走了！")
    assert smalltalk.act_of("你好，我今天好累", is_topic) == ("greeting", "")  # a remark: still small talk
    assert smalltalk.act_of("妖怪出来了吗？", is_topic) == (None, "妖怪出来了吗？")  # 出来 calls him; not here
    assert smalltalk.act_of("猴哥 出来", is_topic) == ("greeting", "")
    backend = CanonBackend(get_character("wukong"), canon)
    assert ask(backend, "你好，师父被妖怪抓走了！") == ask(backend, "师父被妖怪抓走了！")
    # calling one of the four is no news: hi 八戒 good evening is a greeting
    bajie = CanonBackend(get_character("bajie"), canon)
    assert ask(bajie, "hi 八戒 good evening")[0] == listed(canon, "bajie", "greeting")[0][0]


def test_asked_how_he_is_with_no_line_for_it_he_greets(canon: Canon) -> None:
    assert not get_character("sanzang").small_talk.how_are_you
    backend = CanonBackend(get_character("sanzang"), canon)
    for asked in ("你好吗？", "长老今日心情如何？", "吃了吗师父"):
        assert ask(backend, asked)[0] == listed(canon, "sanzang", "greeting")[0][0]

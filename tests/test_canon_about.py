"""Questions about himself offline: 你有什么本事？ 你的愿望是什么？ get his own line on the topic from his file."""

from __future__ import annotations

import pytest
from talk import ask

from xiyou.backends.canon import CanonBackend
from xiyou.canon import Canon, about, answers
from xiyou.character import About, get_character

IDS = ("sanzang", "wukong", "bajie", "wujing")


def listed(canon: Canon, cid: str, topic: str) -> list[str]:
    return [ex.reply.text for ex in about.lines(canon, get_character(cid), topic)]


@pytest.mark.parametrize(
    ("question", "topic"),
    [
        ("你的愿望是什么？", "wish"), ("怎样才能修行成佛？", "practice"),
        ("你爱吃什么？", "food"), ("你的缺点是什么？", "character"), ("你有什么本事？", "skills"),
        ("你是从哪里来的？", "origin"), ("你在天上的时候做什么官？", "heaven"), ("路上最辛苦的是什么？", "hardship"),
        ("你为什么要去西天取经？", "journey"),
        # not about him: a modern topic, a moment of the story, what runs through the story (his master, demons)
        ("你喜欢打篮球吗？", None), ("你喜欢吃汉堡包吗？", None), ("妖精把师父捉去了，你怕不怕？", None),
        ("那天晚上你为什么不睡觉？", None), ("当时你为什么不肯走？", None),
        # … or about someone else (他, one of the four by name), or a cue inside another word (认为人类: no 为人)
        ("悟空说他本来就有法名，你为什么还要另外叫他行者？", None), ("你和悟空谁的本事大？", None),
        ("你认为人类社会最有趣的是什么？", None), ("你这钯是什么来历？", "weapon"), ("你的白马是从哪里来的？", None),
    ],
)
def test_the_topic_is_told_by_the_questions_words(question: str, topic: str | None) -> None:
    assert about.topic_of(question) == topic


def test_every_listed_line_is_his_in_the_novel_and_every_topic_is_a_field(canon: Canon) -> None:
    assert set(About.model_fields) == set(about.TOPIC_NAMES)
    for cid in IDS:
        character = get_character(cid)
        ids = {ex.id for ex in canon.exchanges(cid)}
        wanted = about.listed(character)
        assert all(i in ids for _, i in wanted), [i for _, i in wanted if i not in ids]
        topics = {topic for topic, _ in wanted}
        assert len(topics) >= 10, (cid, sorted(set(about.TOPIC_NAMES) - topics))  # most of what visitors ask


def test_a_question_about_himself_gets_his_line_on_it_then_the_next_never_the_same(canon: Canon) -> None:
    """八戒 never says 愿望 or 最大: the book does not answer 你最大的愿望是什么？ outright, and it was shrugged off.
    His file lists his lines on his wishes: the first, then (asked again) the next, never one twice."""
    bajie = answers.answerer(canon, "bajie")
    question = "你最大的愿望是什么？"
    assert answers.best(bajie.score(question), bajie.exchanges, None, (), answers.DEFLECT_BELOW) is None
    wishes = listed(canon, "bajie", "wish")
    backend = CanonBackend(get_character("bajie"), canon)
    first, citation = ask(backend, question)
    assert first == wishes[0] and citation is not None and citation.chapter == 100, (first, citation)
    second, _ = ask(backend, question, first, question)
    assert second == wishes[1]
    # every line on the topic said: the other rules answer, never a line twice
    turns = [question]
    for line in wishes:
        turns += [line, question]
    last, _ = ask(backend, *turns)
    assert last not in wishes


def test_a_question_about_one_episode_or_moment_is_the_storys_not_his(canon: Canon) -> None:
    """本事 asks about him, but 在狮驼岭 (one episode) makes it a question about the story: the story rules take it."""
    vocabulary = answers.answerer(canon, "bajie").vocabulary

    def names_an_episode(text: str) -> bool:
        return answers.names_an_episode(text, vocabulary)

    assert about.topic_of("你有什么本事？", names_an_episode) == "skills"
    assert about.topic_of("你在狮驼岭使了什么本事？", names_an_episode) is None
    line, _ = ask(CanonBackend(get_character("bajie"), canon), "你在狮驼岭使了什么本事？")
    assert line not in listed(canon, "bajie", "skills")


def test_a_reader_who_has_not_reached_his_lines_on_a_topic_never_hears_them(canon: Canon) -> None:
    """At chapter 30 八戒's chapter-100 wish has not happened: he answers with a wish of a chapter before it, if
    his file lists one, else as before (his other rules, his shrugs)."""
    backend = CanonBackend(get_character("bajie"), canon, max_chapter=30)
    line, citation = ask(backend, "你最大的愿望是什么？")
    assert citation is not None and citation.chapter <= 30, (line, citation)
    assert line != listed(canon, "bajie", "wish")[0]


def test_his_line_on_the_topic_comes_before_a_line_that_only_shares_its_words(canon: Canon) -> None:
    """你在天上的时候做什么官？ shares 官 and 前程-like words with 八戒's `前程！前程！…` of chapter 8, which the book's
    matching used to give; he now tells who he was in heaven. A question the book put to him word for word still
    gets his answer there (the apps suggest those): 御弟哥哥，你吃荤吃素？ asks about food, and 三藏 answers as in the
    book."""
    line, citation = ask(CanonBackend(get_character("bajie"), canon), "你在天上的时候做什么官？")
    assert line == listed(canon, "bajie", "heaven")[0] and "天蓬元帅" in line, (line, citation)
    sanzang = get_character("sanzang")
    asked = [q for q in answers.book_questions(canon, sanzang) if about.topic_of(q) == "food"]
    assert asked, "三藏's file suggests 御弟哥哥，你吃荤吃素？"
    expected = answers.listed_exchanges(canon, "sanzang", sanzang.book_questions)
    answer = next(ex.reply.text for ex in expected if ex.context and " ".join(ex.context.text.split()) == asked[0])
    assert ask(CanonBackend(sanzang, canon), asked[0])[0] == answer


def test_a_line_that_only_announces_his_verse_is_no_reply(canon: Canon) -> None:
    """八戒's `是你也不知我的手段！上前来站稳着，我说与你听：` leads into verse the novel prints apart, and was his
    answer to 你有什么本事？; a line that ends announcing what follows is never picked now: his 三十六般变化."""
    line, _ = ask(CanonBackend(get_character("bajie"), canon), "你有什么本事？")
    assert not line.rstrip().endswith("：") and "三十六般变化" in line, line
    bajie = answers.answerer(canon, "bajie")
    assert bajie.lead_in.sum() >= 1 and not bajie.score("你有什么本事？").scores[bajie.lead_in].any()

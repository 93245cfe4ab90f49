"""The offline canon backend: answers in the character's own words from the novel, citing the chapter."""

from __future__ import annotations

import threading

import pytest

from xiyou.backends.base import Backend, BackendError, Citation, GenerationSettings, collect, collect_cited, text_only
from xiyou.backends.canon import CanonBackend, citation_of
from xiyou.canon import Canon, chapter_ref
from xiyou.canon.rag import RetrievalAugmentedBackend
from xiyou.character import get_character

SETTINGS = GenerationSettings()


def _messages(backend: CanonBackend, *turns: str) -> list[dict]:
    messages = [{"role": "system", "content": backend.character.meta_instruction}]
    for i, text in enumerate(turns):
        messages.append({"role": "user" if i % 2 == 0 else "assistant", "content": text})
    return messages


def _ask(backend: CanonBackend, *turns: str) -> tuple[str, Citation | None]:
    return collect_cited(backend, _messages(backend, *turns), SETTINGS)


@pytest.mark.parametrize("cid", ["sanzang", "wukong", "bajie", "wujing"])
def test_answers_with_own_line_and_cites_the_chapter(canon: Canon, cid: str) -> None:
    backend = CanonBackend(get_character(cid), canon)
    assert isinstance(backend, Backend)
    for question in ("你好，你是谁？", "师父被妖怪抓走了，怎么办？", "hello"):
        line, citation = _ask(backend, question)
        sources = [ex for ex in canon.exchanges(cid) if ex.reply.text == line]
        assert sources, f"{cid} answered {line!r}, not one of its canon lines"
        assert "回）" not in line  # the citation is data, never part of the words
        assert isinstance(citation, Citation)
        assert citation.chapter in {ex.chapter for ex in sources}
        assert citation.label().startswith(chapter_ref(citation.chapter))
        assert (line, citation) == _ask(backend, question)  # deterministic
        assert collect(backend, _messages(backend, question), SETTINGS) == line  # collect(): text only


def test_citation_says_to_whom_the_line_was_said(canon: Canon) -> None:
    assert Citation(27, "唐三藏").label() == "第二十七回 · 对唐三藏说"
    assert Citation(100).label() == "第一百回"
    backend = CanonBackend(get_character("wukong"), canon)
    exchange = next(
        ex
        for ex in canon.exchanges("wukong")
        if ex.context and ex.context.speaker == "sanzang" and len(ex.context.text) > 30
    )
    line, citation = _ask(backend, exchange.context.text)
    assert citation is not None
    same = [ex for ex in canon.exchanges("wukong") if ex.reply.text == line and ex.chapter == citation.chapter]
    assert same and citation.said_to == "唐三藏" and citation.label().endswith("对唐三藏说")


def test_a_line_after_the_storyteller_turns_away_was_said_to_nobody_before_it(canon: Canon) -> None:
    """却说…, …不题: the next line belongs to another scene. 沙僧's 哥啊，这半日方回… greets 悟空 coming back; the
    line before it is the demon king's, in his cave, and the hub once cited it as 第四十二回 · 对妖王说."""
    from xiyou.canon.exchanges import SCENE_SHIFT

    greeting = next(ex for ex in canon.exchanges("wujing") if ex.reply.text.startswith("哥啊，这半日方回"))
    assert greeting.context is None
    assert citation_of(greeting, canon).label() == "第四十二回"
    assert SCENE_SHIFT.search("众僧安歇不题。") and SCENE_SHIFT.search("却说那行者") and SCENE_SHIFT.search("。话说")
    assert not SCENE_SHIFT.search("一家儿听得这般话说")  # 话说 inside a sentence is no turn
    # the same conversation across a little narration keeps its context: 悟空 answers what 三藏 asked
    answered = [ex for ex in canon.exchanges("wukong") if ex.context and ex.context.speaker == "sanzang"]
    assert len(answered) > 300


def test_a_line_that_opens_by_calling_one_of_the_four_was_said_to_him(canon: Canon) -> None:
    """The line before his is not always whom he answers: 三藏's 悟空，你怎么降得他来拜我？ follows 八戒's words and
    was cited 对猪八戒说. A line that opens by calling one of the four (悟空，… 呆子！… 二哥，…) was said to him; but
    悟空's 师父 of chapter 2, before 三藏 is in the story, is 菩提祖师, and stays cited to whoever spoke before."""
    from xiyou.backends.canon import called_by_name

    def exchange(cid: str, start: str):
        return next(ex for ex in canon.exchanges(cid) if ex.reply.text.startswith(start))

    tamed = exchange("sanzang", "悟空，你怎么降得他来拜我")
    assert tamed.context is not None and tamed.context.speaker == "bajie"
    assert citation_of(tamed, canon).label() == "第十九回 · 对孙悟空说"
    assert citation_of(exchange("wujing", "二哥，你从那里来"), canon).said_to == "猪八戒"
    assert citation_of(exchange("wukong", "呆子，不吃水了"), canon).said_to == "猪八戒"
    # a word that is his alone: 八戒's 哥哥 is 悟空 (沙僧's 哥哥 may be either of his elder brothers)
    assert citation_of(exchange("bajie", "哥哥，这是甚么东西"), canon).said_to == "孙悟空"  # after 沙僧 spoke
    assert called_by_name("哥啊，回去罢！", "bajie") == "wukong"
    assert called_by_name("哥哥，叫我怎的？", "wujing") is None
    # someone outside the four, called at the start of the line: 三藏 turns from 八戒 to the dead king's ghost
    king = exchange("sanzang", "陛下，你不知那世里冤家")
    assert king.context is not None and king.context.speaker == "bajie"
    assert citation_of(king, canon).label() == "第三十八回 · 对陛下说"
    assert citation_of(exchange("sanzang", "施主，问讯了"), canon).said_to == "施主"  # his first greeting
    # after a named speaker outside the four, that speaker still is whom he answers (老者, then his 老施主，…)
    answered = [ex for ex in canon.exchanges("sanzang") if ex.context and ex.context.speaker == "老者"
                and called_by_name(ex.reply.text, "sanzang") is None]  # fmt: skip
    assert answered and all(citation_of(ex, canon).said_to == (ex.context.name or "老者") for ex in answered)
    patriarch = exchange("wukong", "师父，弟子在此跪候多时")
    assert patriarch.chapter == 2 and citation_of(patriarch, canon).said_to != "唐三藏"
    # only a clause that does nothing but call him; a name inside the sentence is not a call
    assert called_by_name("悟空，风起了！", "sanzang") == "wukong"
    assert called_by_name("悟空才说这里旷野无人，你看那里？", "sanzang") is None
    assert called_by_name("八戒、沙僧，你们来。", "wukong") is None  # two called: no one alone
    assert called_by_name("哥啊，这半日方回", "wujing") is None  # 哥 alone names none of them


def test_context_of_a_canon_exchange_gets_that_reply(canon: Canon) -> None:
    backend = CanonBackend(get_character("bajie"), canon)
    exchange = next(ex for ex in canon.exchanges("bajie") if ex.context and len(ex.context.text) > 30)
    line, citation = _ask(backend, exchange.context.text)
    same_context = {
        ex.reply.text for ex in canon.exchanges("bajie") if ex.context and ex.context.text == exchange.context.text
    }
    assert line in same_context
    assert citation is not None and citation.chapter == exchange.chapter


def test_streams_several_deltas_and_cancel_stops_it(canon: Canon) -> None:
    backend = CanonBackend(get_character("wukong"), canon)
    messages = [{"role": "user", "content": "你这泼猴，敢跟我比划比划吗？"}]
    deltas = list(backend.stream(messages, SETTINGS))
    assert all(deltas)
    assert isinstance(deltas[0], Citation)  # one citation, first: a reply cut short still has it
    line_deltas = deltas[1:]
    assert line_deltas and all(isinstance(d, str) for d in line_deltas)
    cited: list[Citation] = []
    assert "".join(text_only(iter(deltas), cited.append)) == "".join(line_deltas) and cited == [deltas[0]]
    long_question = max(
        (ex for ex in canon.exchanges("wukong") if ex.context and ex.reply.text.count("，") >= 3),
        key=lambda ex: len(ex.context.text),
    )
    deltas = list(backend.stream([{"role": "user", "content": long_question.context.text}], SETTINGS))
    assert len(deltas) >= 3, "a multi-clause line streams clause by clause"
    cancel = threading.Event()
    got = []
    for delta in backend.stream([{"role": "user", "content": long_question.context.text}], SETTINGS, cancel):
        got.append(delta)
        if isinstance(delta, str):
            cancel.set()
    assert got == deltas[:2]  # its citation and its first clause: nothing after the cancel


def test_does_not_repeat_itself(canon: Canon) -> None:
    backend = CanonBackend(get_character("sanzang"), canon)
    first, _ = _ask(backend, "徒弟，前面是什么地方？")
    second, _ = _ask(backend, "徒弟，前面是什么地方？", first, "徒弟，前面是什么地方？")
    assert first != second


def test_bad_input_and_missing_novel_are_backend_errors(canon: Canon, monkeypatch) -> None:
    backend = CanonBackend(get_character("wujing"), canon)
    with pytest.raises(BackendError, match="no messages"):
        list(backend.stream([], SETTINGS))
    monkeypatch.setenv("XIYOU_NOVEL", "/nonexistent/xiyouji.txt")
    with pytest.raises(BackendError, match="needs the novel"):
        list(CanonBackend(get_character("wujing")).stream([{"role": "user", "content": "你好"}], SETTINGS))


def test_retrieval_augmented_backend_passes_examples_to_the_wrapped_backend(canon: Canon) -> None:
    seen = []

    class Echo:
        label = "echo"

        def stream(self, messages, settings, cancel=None):
            seen.append(messages)
            yield "好"

    wukong = get_character("wukong")
    wrapped = RetrievalAugmentedBackend(Echo(), wukong, canon, k=3)
    assert collect(wrapped, [{"role": "user", "content": "师父被妖精拿去了"}], SETTINGS) == "好"
    system = seen[0][0]
    assert system["role"] == "system" and "孙悟空：" in system["content"] and "回）" in system["content"]


def test_the_passage_of_a_line_is_the_novel_just_before_it(canon: Canon) -> None:
    """What the 📖 button of a canon reply shows: the narration and speech leading to his line, then the line."""
    exchange = next(ex for ex in canon.exchanges("wujing") if ex.chapter == 25 and "陪绑" in ex.reply.text)
    lead, line = canon.passage(25, exchange.reply.text)
    chapter = next(ch.text for ch in canon.novel.chapters if ch.number == 25)
    assert line == exchange.reply.text.strip() and chapter.count(line) == 1
    assert lead.startswith("…") and chapter[: chapter.index(line)].endswith(lead[1:])  # right up to the line
    assert 60 <= len(lead) <= 201 and "绑" in lead  # about a paragraph: the pilgrims tied up at 五庄观
    assert canon.passage(25, "师父，") is None  # too short to place: the chapter holds it many times
    assert canon.passage(25, exchange.reply.text + "（改过）") is None  # an edited reply is not the book's
    assert canon.passage(26, exchange.reply.text) is None  # nor in another chapter


def test_a_line_the_chapter_holds_twice_is_placed_where_he_says_it(canon: Canon) -> None:
    """三藏's plainest shrug, 贫僧不知。, stands twice in chapter 82 (he says it once; the other is in another
    speech): with the speaker known it is placed at his line, so his most frequent offline reply has its 📖 too. A
    line he says several times in one chapter (悟空's 变！) still cannot be placed."""
    from xiyou.store import StoredMessage
    from xiyou.ui.messages import novel_passage

    chapter = next(ch.text for ch in canon.novel.chapters if ch.number == 82)
    assert chapter.count("贫僧不知。") == 2
    assert canon.passage(82, "贫僧不知。") is None  # whose? the text alone cannot say
    (his,) = [u for u in canon.utterances if u.chapter == 82 and u.speaker == "sanzang" and u.text == "贫僧不知。"]
    lead, line = canon.passage(82, "贫僧不知。", speaker="sanzang")
    assert line == "贫僧不知。" and chapter[: his.offset + 1].endswith(lead[1:])  # right up to his quote
    assert "来的" in lead  # what he was asked: where the hawk came from
    assert canon.passage(82, "贫僧不知。", speaker="wukong") is None  # not 悟空's line there
    chapters = [u.chapter for u in canon.utterances if u.speaker == "wukong" and u.text == "变！"]
    twice = next(n for n in chapters if chapters.count(n) > 1)
    assert canon.passage(twice, "变！", speaker="wukong") is None
    shrug = StoredMessage("sanzang", "唐三藏", "贫僧不知。", chapter=82)
    assert novel_passage(shrug) is not None and novel_passage(shrug).endswith("**贫僧不知。**")

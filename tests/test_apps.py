"""The four single-character apps, driven with Streamlit's AppTest on the tiny model (the real transformers path)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pages import popovers, shown
from scripted_openai import Fault, ScriptedOpenAI
from servers import free_port
from streamlit.testing.v1 import AppTest
from tiny_model import TinyModel, at_model_speed

from xiyou.backends.base import Citation
from xiyou.backends.transformers_backend import TransformersBackend
from xiyou.character import get_character
from xiyou.env import REPO_ROOT
from xiyou.ui.chat import (
    BOOK_QUESTIONS_CAPTION,
    CANNOT_SPEAK,
    CANNOT_SPEAK_DETAILS,
    MAX_INPUT_CHARS,
    OFFLINE_OFFER,
    OFFLINE_SLIDERS,
    WAITING,
)
from xiyou.ui.render import JOINER, safe_markdown

APP_IDS = ["sanzang", "wukong", "bajie", "wujing"]


# every test: its own conversation store (under tmp_path), and Streamlit's resource cache cleared before and after
pytestmark = pytest.mark.usefixtures("page_store")


def history(at: AppTest) -> list[tuple[str, str]]:
    """(speaker, text) of the stored messages of the chat the page shows."""
    from xiyou.ui.conversations import session_store

    conversation = at.query_params["c"]
    conversation = conversation[0] if isinstance(conversation, list) else conversation
    return [(m.speaker, m.text) for m in session_store().messages(conversation)]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Every call of the transformers backend's stream: the settings the page passed and the deltas it got."""
    recorded: list[dict] = []
    real_stream = TransformersBackend.stream

    def spy(self, messages, settings, cancel=None):
        call = {"messages": list(messages), "settings": settings, "deltas": []}
        recorded.append(call)
        for delta in real_stream(self, messages, settings, cancel):
            call["deltas"].append(delta)
            yield delta

    monkeypatch.setattr(TransformersBackend, "stream", spy)
    # the tiny model at a 7B model's pace, so that every token is a delta of its own (the pages pace deltas to
    # the screen's refresh rate: the tiny model's whole reply would otherwise come in one or two)
    real_kwargs = TransformersBackend._generate_kwargs
    monkeypatch.setattr(
        TransformersBackend, "_generate_kwargs", lambda self, *a: {**real_kwargs(self, *a), **at_model_speed()}
    )
    return recorded


def app(character_id: str, monkeypatch: pytest.MonkeyPatch, tiny_model_dir: Path) -> AppTest:
    monkeypatch.setenv("XIYOU_BACKEND", "transformers")
    monkeypatch.setenv(f"XIYOU_MODEL_{character_id.upper()}", str(tiny_model_dir))
    at = AppTest.from_file(str(REPO_ROOT / "apps" / character_id / "app.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


def bubbles(at: AppTest) -> list[tuple[str, str]]:
    return [(m.name, "".join(shown(m))) for m in at.chat_message]


@pytest.mark.parametrize("character_id", APP_IDS)
def test_chat_with_each_app(
    character_id: str, monkeypatch: pytest.MonkeyPatch, tiny_model: TinyModel, calls: list[dict]
) -> None:
    character = get_character(character_id)
    at = app(character_id, monkeypatch, tiny_model.path)
    assert at.title[0].value == f"{character.emoji} {character.title}"
    assert bubbles(at) == [("assistant", character.greeting)]

    # type a message: the reply streams in from the tiny model
    at.chat_input[0].set_value("你好，你是谁？").run()
    assert not at.exception and not at.error
    assert bubbles(at) == [
        ("assistant", character.greeting),
        ("user", "你好，你是谁？"),
        ("assistant", tiny_model.reply),
    ]
    assert at.chat_message[2].avatar == character.emoji
    assert len(calls) == 1 and len(calls[0]["deltas"]) >= 5  # streamed, several deltas
    sent = calls[0]["messages"]
    assert sent[0] == {"role": "system", "content": character.meta_instruction}  # the character file's prompt
    assert sent[-1] == {"role": "user", "content": "你好，你是谁？"}
    assert calls[0]["settings"].max_new_tokens == character.generation.max_new_tokens

    # on a model the sliders are in plain sight (folded away only offline), and they change what it is asked for
    assert [e.label for e in at.sidebar.expander if e.label == OFFLINE_SLIDERS] == []
    at.sidebar.slider(key="max_new_tokens").set_value(3)
    at.sidebar.slider(key="temperature").set_value(0.0)
    at.sidebar.slider(key="top_p").set_value(0.5)
    at.sidebar.slider(key="repetition_penalty").set_value(1.2)
    at.run()
    at.chat_input[0].set_value("再说一遍").run()
    settings = calls[-1]["settings"]
    assert (settings.max_new_tokens, settings.temperature, settings.top_p) == (3, 0.0, 0.5)
    assert settings.repetition_penalty == pytest.approx(1.2)
    short = bubbles(at)[-1]
    assert short[0] == "assistant" and tiny_model.reply.startswith(short[1]) and len(short[1]) < len(tiny_model.reply)
    assert len(calls[-1]["messages"]) == 1 + 3  # system, the first exchange, the new question

    # an over-long message is refused with a notice and not sent
    at.chat_input[0].set_value("长" * (MAX_INPUT_CHARS + 1)).run()
    assert at.warning and "太长" in at.warning[0].value
    assert len(calls) == 2 and len(history(at)) == 4

    # clear empties the history
    at.sidebar.button[0].click().run()
    assert history(at) == []
    assert bubbles(at) == [("assistant", character.greeting)]

    # a suggested question is sent with one click
    at.sidebar.button[1].click().run()
    (asked, question), (answered, answer) = bubbles(at)[1:]
    assert (asked, question, answered) == ("user", character.sample_questions[0], "assistant")
    assert answer == short[1]  # still 3 tokens at most: the sliders keep their values


def test_backend_errors_are_notices_not_messages(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    endpoints = tmp_path / "endpoints.toml"
    endpoints.write_text(
        f'[bajie]\nbase_url = "http://127.0.0.1:{free_port()}/v1"\nmax_retries = 0\ntimeout = 5\n', encoding="utf-8"
    )
    monkeypatch.setenv("XIYOU_BACKEND", "openai")
    monkeypatch.setenv("XIYOU_ENDPOINTS", str(endpoints))
    at = AppTest.from_file(str(REPO_ROOT / "apps" / "bajie" / "app.py"), default_timeout=60).run()
    at.chat_input[0].set_value("二师兄，吃了吗").run()
    assert not at.exception
    assert len(at.error) == 1 and "cannot reach the server" in at.error[0].value
    assert [name for name, _ in bubbles(at)].count("assistant") == 1  # only the greeting: no error "reply"
    assert history(at) == []  # nothing half-sent is kept
    at.run()
    assert bubbles(at) == [("assistant", get_character("bajie").greeting)]


def test_a_missing_backend_is_explained_and_input_disabled(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XIYOU_BACKEND", "transformers")
    monkeypatch.setenv("XIYOU_MODEL_WUJING", str(tmp_path / "no-weights"))
    at = AppTest.from_file(str(REPO_ROOT / "apps" / "wujing" / "app.py"), default_timeout=60).run()
    assert not at.exception
    # the visitor reads why in plain words; the exact error, with what to set, is folded away for whoever runs it
    reason = CANNOT_SPEAK["transformers"]
    assert [e.value for e in at.error] == [f"沙悟净暂时无法说话 · 沙悟净 cannot speak now：{reason}"]
    (details,) = [x for x in at.expander if x.label == CANNOT_SPEAK_DETAILS]
    shown = " ".join(m.value for m in details.markdown)
    assert f"XIYOU_MODEL_WUJING={tmp_path / 'no-weights'}: no model there" in shown
    assert at.chat_input[0].disabled
    suggestions = [b for b in at.sidebar.button if b.key.startswith("suggest_")]
    assert suggestions and all(b.disabled for b in suggestions)  # a click would be lost: greyed out


def test_without_his_model_the_page_offers_his_lines_from_the_book(monkeypatch, novel_path: Path, tmp_path) -> None:
    """The model cannot load (no weights here): one click puts this visit in offline canon mode, and he answers."""
    monkeypatch.setenv("XIYOU_BACKEND", "transformers")
    monkeypatch.setenv("XIYOU_MODEL_WUJING", str(tmp_path / "no-weights"))
    monkeypatch.setenv("XIYOU_NOVEL", str(novel_path))
    at = AppTest.from_file(str(REPO_ROOT / "apps" / "wujing" / "app.py"), default_timeout=300).run()
    assert at.chat_input[0].disabled
    (offer,) = [b for b in at.button if b.label == OFFLINE_OFFER]
    offer.click().run()
    assert not at.exception and not at.error  # the error is gone, the input open
    assert not at.chat_input[0].disabled
    from xiyou.backends.canon import CanonBackend

    assert CanonBackend.notice in [c.value for c in at.main.caption]  # the page says what this mode is now
    at.chat_input[0].set_value("师兄，你从流沙河来吗？").run()
    name, reply = bubbles(at)[-1]
    from xiyou.canon import get_canon

    assert name == "assistant" and reply in {u.text for u in get_canon(novel_path).lines("wujing")}
    assert [b.label for b in at.button].count(OFFLINE_OFFER) == 0


def test_without_the_novel_there_is_no_offline_offer(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XIYOU_BACKEND", "transformers")
    monkeypatch.setenv("XIYOU_MODEL_WUJING", str(tmp_path / "no-weights"))
    monkeypatch.setenv("XIYOU_NOVEL", str(tmp_path / "no-novel.txt"))
    at = AppTest.from_file(str(REPO_ROOT / "apps" / "wujing" / "app.py"), default_timeout=60).run()
    assert len(at.error) == 1 and OFFLINE_OFFER not in [b.label for b in at.button]


def openai_app(server: ScriptedOpenAI, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> AppTest:
    """悟空's app on the scripted OpenAI-compatible server."""
    endpoints = tmp_path / "endpoints.toml"
    endpoints.write_text(f'[wukong]\nbase_url = "{server.base_url}"\nmax_retries = 0\n', encoding="utf-8")
    monkeypatch.setenv("XIYOU_BACKEND", "openai")
    monkeypatch.setenv("XIYOU_ENDPOINTS", str(endpoints))
    at = AppTest.from_file(str(REPO_ROOT / "apps" / "wukong" / "app.py"), default_timeout=60).run()
    assert not at.exception, at.exception
    return at


def test_a_conversation_whose_id_holds_underscores_opens(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Ids are random (token_urlsafe): one with "__" in it must open like any other (the input's counter is keyed
    by it)."""
    monkeypatch.setattr("xiyou.store.secrets.token_urlsafe", lambda n=None: "_-__x__")
    monkeypatch.setenv("XIYOU_BACKEND", "transformers")
    monkeypatch.setenv("XIYOU_MODEL_WUJING", str(tmp_path / "no-weights"))
    at = AppTest.from_file(str(REPO_ROOT / "apps" / "wujing" / "app.py"), default_timeout=60).run()
    assert at.query_params["c"] in ("_-__x__", ["_-__x__"])
    assert not at.exception, at.exception


def test_model_text_is_markdown_never_raw_html(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    reply = "**俺老孙**<script>alert('x')</script><img src=x onerror=alert(1)>"
    with ScriptedOpenAI(reply=reply) as server:
        at = openai_app(server, monkeypatch, tmp_path)
        at.chat_input[0].set_value("来点HTML").run()
        at.run()  # the reply again, now drawn from the history
    answer = at.chat_message[-1].markdown[0]
    assert answer.value == safe_markdown(reply)  # the tags are broken by invisible joiners: shown, never run
    assert answer.value.replace(JOINER, "") == reply
    assert not answer.proto.allow_html  # rendered as Markdown text
    assert history(at)[-1] == ("wukong", reply)  # the stored text is the model's


def test_offline_canon_mode_answers_with_a_cited_line(monkeypatch: pytest.MonkeyPatch, novel_path: Path) -> None:
    monkeypatch.setenv("XIYOU_BACKEND", "canon")
    monkeypatch.setenv("XIYOU_NOVEL", str(novel_path))
    at = AppTest.from_file(str(REPO_ROOT / "apps" / "bajie" / "app.py"), default_timeout=300).run()
    from xiyou.backends.canon import CanonBackend

    assert CanonBackend.notice in [c.value for c in at.main.caption]  # the page says what this mode is
    at.chat_input[0].set_value("二师兄，吃了吗").run()
    assert not at.exception and not at.error
    name, reply = bubbles(at)[-1]
    assert name == "assistant"
    from xiyou.canon import get_canon

    chapters = {u.chapter for u in get_canon(novel_path).lines("bajie") if u.text == reply}
    assert chapters, f"{reply!r} is not one of 八戒's canon lines"  # the citation is not part of the words
    caption = shown(at.chat_message[-1], "caption")
    assert len(caption) == 1 and re.match(r"📖 《西游记》第[零一二三四五六七八九十百]+回", caption[0])
    (stored,) = [m for m in history_messages(at) if m.speaker == "bajie"]
    assert stored.text == reply and stored.chapter in chapters  # stored apart from the words
    at.run()  # drawn again from the store: the citation stays beside the reply
    assert shown(at.chat_message[-1], "caption") == caption


def test_a_canon_reply_opens_the_novel_where_the_line_stands(monkeypatch, novel_path: Path) -> None:
    """The 📖 button beside a canon reply shows the novel just before his line: a question about the story gets its
    answer there when his line alone does not tell it (the narration of 五庄观: they were tied up)."""
    at = canon_app("wujing", monkeypatch, novel_path)
    at.chat_input[0].set_value("你在五庄观被镇元大仙绑在哪里？").run()
    reply = at.chat_message[-1]
    line = reply.markdown[0].value
    opened = [b for b in popovers(reply) if b.caption and b.caption[0].value.startswith("📖")]
    assert len(opened) == 1
    (passage,) = [m.value for m in opened[0].markdown]
    assert passage.startswith("…") and passage.endswith(f"**{line}**") and len(passage) > len(line) + 60
    assert opened[0].caption[0].value == reply.caption[0].value  # the chapter, as under the reply
    person = at.chat_message[-2]
    assert not [b for b in popovers(person) if b.caption]  # the person's own words have no passage


def history_messages(at: AppTest):
    from xiyou.ui.conversations import session_store

    conversation = at.query_params["c"]
    return session_store().messages(conversation[0] if isinstance(conversation, list) else conversation)


def canon_app(character_id: str, monkeypatch: pytest.MonkeyPatch, novel_path: Path, conversation: str | None = None):
    monkeypatch.setenv("XIYOU_BACKEND", "canon")
    monkeypatch.setenv("XIYOU_NOVEL", str(novel_path))
    at = AppTest.from_file(str(REPO_ROOT / "apps" / character_id / "app.py"), default_timeout=300)
    if conversation:
        at.query_params["c"] = conversation
    at.run()
    assert not at.exception
    return at


def test_offline_the_sampling_sliders_are_folded_away(monkeypatch, novel_path: Path) -> None:
    """Lines from the book are not sampled: a visitor of the offline app does not meet temperature and top_p first
    thing; the sliders are still there, folded, and the length still applies."""
    at = canon_app("bajie", monkeypatch, novel_path)
    (folded,) = [e for e in at.sidebar.expander if e.label == OFFLINE_SLIDERS]
    keys = ["max_new_tokens", "temperature", "top_p", "repetition_penalty"]
    assert [w.key for w in folded.slider] == keys and [w.key for w in at.sidebar.slider] == keys
    folded.slider[0].set_value(4).run()
    at.chat_input[0].set_value("八戒，你喜欢吃什么？").run()
    reply = bubbles(at)[-1]
    assert reply[0] == "assistant" and 0 < len(reply[1]) <= 8, reply  # cut at 4 tokens: a few characters


def test_offline_the_suggestions_are_questions_the_book_put_to_him(monkeypatch, novel_path: Path) -> None:
    """On a model the sidebar suggests `sample_questions`; offline, questions asked of him in the novel, which his
    own line there answers (悟空's 筋斗云/金箍棒 questions of today got a shrug or an unrelated line)."""
    from xiyou.canon import answers, get_canon

    character = get_character("wukong")
    from_book = answers.book_questions(get_canon(novel_path), character)
    at = canon_app("wukong", monkeypatch, novel_path)
    suggested = [b.label for b in at.sidebar.button if b.key and b.key.startswith("suggest_")]
    assert suggested == from_book and not set(suggested) & set(character.sample_questions)
    assert BOOK_QUESTIONS_CAPTION in [c.value for c in at.sidebar.caption]
    at.sidebar.button(key="suggest_1").click().run()  # 徒弟啊，你姓甚么？
    (asked, question), (answered, answer) = bubbles(at)[1:]
    assert (asked, question, answered, answer) == ("user", from_book[1], "assistant", "我姓孙。")
    assert shown(at.chat_message[-1], "caption") == ["📖 《西游记》第十四回 · 对唐三藏说"]


def test_a_reload_restores_the_chat_and_another_tab_its_own(monkeypatch, novel_path: Path) -> None:
    at = canon_app("wukong", monkeypatch, novel_path)
    at.chat_input[0].set_value("大圣，你从哪里来？").run()
    shown = bubbles(at)
    assert len(shown) == 3
    conversation = at.query_params["c"]
    again = canon_app("wukong", monkeypatch, novel_path, conversation)
    assert bubbles(again) == shown
    other = canon_app("wukong", monkeypatch, novel_path)
    other.sidebar.button(key="conv_new_private").click().run()
    assert other.query_params["c"] != conversation and len(bubbles(other)) == 1
    other.chat_input[0].set_value("你好").run()
    assert bubbles(canon_app("wukong", monkeypatch, novel_path, conversation)) == shown


def test_regenerate_swipe_edit_delete_continue(monkeypatch, novel_path: Path) -> None:
    at = canon_app("bajie", monkeypatch, novel_path)
    at.chat_input[0].set_value("二师兄，你最爱吃什么？").run()
    person, reply = history_messages(at)
    at.button(key=f"msg_regen_{reply.id}").click().run()
    again = history_messages(at)[-1]
    assert again.id == reply.id and len(again.alternatives) == 2 and again.selected == 1
    at.button(key=f"msg_prev_{reply.id}").click().run()
    assert bubbles(at)[-1] == ("assistant", reply.text) and history_messages(at)[-1].selected == 0
    at.button(key=f"msg_cont_{reply.id}").click().run()
    longer = history_messages(at)[-1]
    assert longer.text.startswith(reply.text) and len(longer.text) > len(reply.text)
    at.text_area(key=f"msg_edit_text_{person.id}").set_value("二师兄，你最怕什么？")
    at.button(key=f"msg_edit_{person.id}").click().run()
    assert bubbles(at)[1] == ("user", "二师兄，你最怕什么？") and history_messages(at)[0].edited
    at.button(key=f"msg_delete_{reply.id}").click().run()
    assert [name for name, _ in bubbles(at)] == ["assistant", "user"]  # the greeting and the edited question


def test_a_message_over_the_limit_is_kept_in_a_box_with_a_counter(monkeypatch, novel_path: Path) -> None:
    at = canon_app("wujing", monkeypatch, novel_path)
    long = "长" * (MAX_INPUT_CHARS + 1)
    at.chat_input[0].set_value(long).run()
    assert at.warning and "太长" in at.warning[0].value and f"{len(long)} / {MAX_INPUT_CHARS}" in at.warning[0].value
    assert history_messages(at) == []
    box = at.text_area[0]
    assert box.value == long  # nothing typed is lost
    box.set_value("短一点").run()
    at.button(key=f"chat_send_draft_{at.query_params['c']}").click().run()
    assert history_messages(at)[0].text == "短一点"


def test_consecutive_messages_reach_the_model_with_alternating_roles() -> None:
    from xiyou.store import StoredMessage
    from xiyou.ui.chat import backend_messages

    character = get_character("wukong")
    sent = backend_messages(
        character,
        [
            StoredMessage("person", "你", "大圣"),
            StoredMessage("person", "你", "在吗？"),
            StoredMessage("wukong", "孙悟空", "在"),
        ],
    )
    assert [m["role"] for m in sent] == ["system", "user", "assistant"]
    assert sent[1]["content"] == "大圣\n\n在吗？"


def test_offline_he_answers_the_last_of_two_questions_sent_before_he_spoke(monkeypatch, novel_path: Path) -> None:
    """A question sent while his reply had not begun leaves two questions in a row. A model gets them as one turn;
    the offline mode answers the last one: merged, it matched a mix of both (chapter 56's 或者悟空打杀的就是也。)."""
    from xiyou.ui import chat
    from xiyou.ui.conversations import session_store

    monkeypatch.setenv("XIYOU_CANON_CPS", "0")
    at = canon_app("sanzang", monkeypatch, novel_path)
    conversation = at.query_params["c"]
    conversation = conversation[0] if isinstance(conversation, list) else conversation
    session_store().add_message(conversation, chat.StoredMessage("person", "你", "你的九环锡杖是谁送给你的？"))
    at.chat_input[0].set_value("假悟空打了你一棒以后抢走了什么？").run()
    reply = [m for m in history_messages(at) if m.speaker == "sanzang"][-1]
    assert "青毡包袱都抢去了" in reply.text and reply.chapter == 57, reply


def test_a_reply_goes_on_when_a_slider_is_touched_mid_reply(monkeypatch, novel_path: Path) -> None:
    """The reply lives in the session: a rerun (any widget touched) redraws the page and the reply continues."""
    from xiyou.ui import chat

    monkeypatch.setenv("XIYOU_CANON_CPS", "0")
    at = canon_app("wukong", monkeypatch, novel_path)
    conversation = at.query_params["c"]
    conversation = conversation[0] if isinstance(conversation, list) else conversation
    at.chat_input[0].set_value("大圣，花果山在哪里？").run()
    first = history_messages(at)
    # as if the run streaming the next reply had been cut by a rerun after its first piece
    live_key = f"chat_live_{conversation}"
    from xiyou.ui.conversations import session_store

    store = session_store()
    store.add_message(conversation, chat.StoredMessage("person", "你", "还有呢？"))
    backend = chat._backend("wukong", "canon")
    settings = chat.GenerationSettings.for_character(get_character("wukong"))
    live = chat.Live(chat.threading.Event())
    stream = backend.stream(chat.backend_messages(get_character("wukong"), store.messages(conversation)), settings)
    for piece in stream:  # the run shows the first piece of text (its citation came before it)
        if isinstance(piece, str):
            first_piece = live.text = piece
            break
        live.pieces.put(piece)
    chat.threading.Thread(target=chat.pump, args=(lambda: stream, live.pieces.put, live.cancel), daemon=True).start()
    at.session_state[live_key] = live
    at.sidebar.slider(key="temperature").set_value(0.3).run()  # a slider touched: the next run takes the reply over
    after = history_messages(at)
    assert len(after) == len(first) + 2 and after[-1].speaker == "wukong"
    # the whole reply was kept: the piece shown before the rerun and everything after it, not cut off
    assert after[-1].text == live.text.strip() and after[-1].text.startswith(first_piece.strip())
    assert not after[-1].interrupted and after[-1].chapter is not None
    assert live_key not in at.session_state


def test_a_canon_reply_cut_by_the_next_message_keeps_its_chapter(monkeypatch, novel_path: Path) -> None:
    """A line from the book cut short by the person's next message is kept as far as it came, marked interrupted,
    with its chapter: what was shown is still his line from that chapter."""
    import time

    from xiyou.backends.canon import CanonBackend
    from xiyou.ui import chat
    from xiyou.ui.conversations import session_store

    monkeypatch.setenv("XIYOU_CANON_CPS", "0")
    at = canon_app("wukong", monkeypatch, novel_path)
    conversation = at.query_params["c"]
    conversation = conversation[0] if isinstance(conversation, list) else conversation
    at.chat_input[0].set_value("大圣，花果山在哪里？").run()
    store = session_store()
    store.add_message(conversation, chat.StoredMessage("person", "你", "你的金箍棒是从哪里得来的？"))
    wukong = get_character("wukong")
    slow = CanonBackend(wukong, chat._backend("wukong", "canon").canon, chars_per_second=2)  # a line takes seconds
    sent = chat.backend_messages(wukong, store.messages(conversation))
    line = slow.choose(sent).reply.text
    live = chat.Live(chat.threading.Event())
    stream = slow.stream(sent, chat.GenerationSettings.for_character(wukong), live.cancel)
    chat.threading.Thread(target=chat.pump, args=(lambda: stream, live.pieces.put, live.cancel), daemon=True).start()
    at.session_state[f"chat_live_{conversation}"] = live
    time.sleep(0.5)  # its citation and first piece are out; the rest would take seconds more
    at.chat_input[0].set_value("好了，不说这个了。").run()  # the next message cuts it
    cut = [m for m in history_messages(at) if m.speaker == "wukong"][1]
    assert cut.interrupted and cut.text and len(cut.text) < len(line.strip()) and line.startswith(cut.text)
    assert cut.chapter is not None and cut.said_to  # where the line is from, though it was cut
    captions = [c for message in at.chat_message for c in shown(message, "caption")]
    assert f"📖 《西游记》{Citation(cut.chapter, cut.said_to).label()}" in captions


def test_the_openxlab_entry_keeps_each_visitors_chats_to_himself(monkeypatch, novel_path: Path, tmp_path) -> None:
    monkeypatch.setenv("XIYOU_PERSIST", "unset")  # recorded, so the value the entry sets is undone after the test
    monkeypatch.delenv("XIYOU_PERSIST")
    monkeypatch.setenv("XIYOU_CHARACTER", "bajie")
    monkeypatch.setenv("XIYOU_BACKEND", "canon")
    monkeypatch.setenv("XIYOU_NOVEL", str(novel_path))
    one = AppTest.from_file(str(REPO_ROOT / "openxlab" / "app.py"), default_timeout=300).run()
    one.chat_input[0].set_value("二师兄，吃了吗").run()
    assert len(bubbles(one)) == 3
    two = AppTest.from_file(str(REPO_ROOT / "openxlab" / "app.py"), default_timeout=300)
    two.query_params["c"] = one.query_params["c"]
    two.run()
    assert len(bubbles(two)) == 1  # another visitor, even with the first one's link, sees only the greeting
    assert not (tmp_path / "data").exists()  # nothing written (XIYOU_DATA_DIR points there)


def test_a_busy_model_shows_waiting_for_your_turn_then_answers(monkeypatch, tiny_model: TinyModel) -> None:
    """One reply at a time per model: while another visitor's reply holds the model, the reply's place says the
    person is waiting for their turn; when the model is free, the answer comes."""
    from streamlit.runtime.forward_msg_queue import ForwardMsgQueue

    from xiyou.ui import chat

    at = app("wukong", monkeypatch, tiny_model.path)
    backend = chat._backend("wukong", "transformers")
    backend.queue_timeout_s = 10.0  # without the waiting state the test fails (busy) instead of hanging
    assert backend.loaded.lock.acquire(timeout=5)  # another visitor's reply holds the model
    shown: list[str] = []  # every text the page sent while it ran, in order (the final page keeps only the end)
    enqueue = ForwardMsgQueue.enqueue

    def spy(self, msg) -> None:
        if msg.WhichOneof("type") == "delta" and msg.delta.WhichOneof("type") == "new_element":
            text = msg.delta.new_element.markdown.body
            shown.append(text)
            if text == WAITING and shown.count(WAITING) == 1:
                backend.loaded.lock.release()  # the other visitor's reply ends
        enqueue(self, msg)

    monkeypatch.setattr(ForwardMsgQueue, "enqueue", spy)
    at.chat_input[0].set_value("你好，你是谁？").run()
    assert not at.exception and not at.error
    assert WAITING in shown
    reply = safe_markdown(tiny_model.reply)
    first_words = next(i for i, text in enumerate(shown) if text.endswith(" ▌") or text == reply)  # the reply
    assert shown.index(WAITING) < first_words  # the waiting notice first, then the reply in its place
    assert bubbles(at)[-1] == ("assistant", tiny_model.reply)
    assert WAITING not in [c.value for c in at.main.caption]  # gone once the answer is there


def test_the_model_never_gets_two_user_turns_in_a_row(monkeypatch, tmp_path: Path) -> None:
    """A message that got no answer is taken back (sent again, it goes once); a message after a deleted reply joins
    the one before it: the model always sees the person's and its own turns alternating."""
    with ScriptedOpenAI(reply="俺老孙在此") as server:
        at = openai_app(server, monkeypatch, tmp_path)
        server.queue_faults(Fault.server_error(500))
        at.chat_input[0].set_value("大圣在吗？").run()
        assert len(at.error) == 1 and "可以重新发送" in at.error[0].value
        assert history_messages(at) == []  # taken back: not stored, so not sent again with the next one
        at.chat_input[0].set_value("大圣，你在哪里？").run()
        assert server.requests[-1].messages[1:] == [{"role": "user", "content": "大圣，你在哪里？"}]
        reply = history_messages(at)[-1]
        at.button(key=f"msg_delete_{reply.id}").click().run()
        at.chat_input[0].set_value("花果山远吗？").run()
        sent = server.requests[-1].messages
    assert [m["role"] for m in sent] == ["system", "user"]
    assert sent[1]["content"] == "大圣，你在哪里？\n\n花果山远吗？"
    assert bubbles(at)[1:] == [("user", "大圣，你在哪里？"), ("user", "花果山远吗？"), ("assistant", "俺老孙在此")]


def test_a_reply_cut_at_the_length_cap_says_so_under_it(monkeypatch, tmp_path: Path) -> None:
    from xiyou.backends.reply import MAX_REPLY_CHARS, reply_char_limit

    limit = reply_char_limit(get_character("wukong").generation.max_new_tokens)
    with ScriptedOpenAI(reply="无穷" * MAX_REPLY_CHARS, chunk_chars=4000) as server:  # a server that runs away
        at = openai_app(server, monkeypatch, tmp_path)
        at.chat_input[0].set_value("大圣，说说你的本事").run()
    assert not at.exception and not at.error
    assert len(history_messages(at)[-1].text) == limit  # the text so far is the reply, kept
    [cut] = [w for w in at.warning if w.icon == "✂️"]
    assert f"cut at {limit:,} characters" in cut.value
    assert bubbles(at)[-1][0] == "assistant"  # under the reply it speaks of

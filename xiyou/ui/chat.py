"""One character's chat page, shared by the four apps: `apps/<id>/app.py` calls `chat_page("<id>")`.

Reads top to bottom as what the person sees: the sidebar (generation sliders, clear history, suggested
questions), the title and greeting, the history, the reply streaming in, and the chat input.

- The backend comes from XIYOU_BACKEND (`transformers` by default, as the published demos; `openai`; `canon`)
  and is held in `st.cache_resource`: one model per process. The transformers backend itself queues
  concurrent visitors (one generation at a time per model).
- Backend errors are shown with `st.error`, never as a character's message. Model text is rendered as Markdown,
  never as raw HTML. Input longer than `MAX_INPUT_CHARS` is refused with a notice.
- Pressing any button while a reply streams stops it (Streamlit reruns the script; the generator is closed,
  which cancels the generation); the partial reply is dropped.
"""

from __future__ import annotations

import streamlit as st

from xiyou import env
from xiyou.backends.base import Backend, BackendError, Citation, GenerationSettings, Message, text_only
from xiyou.character import Character, get_character
from xiyou.ui import render

MAX_INPUT_CHARS = 1000
USER_AVATAR = "🙏"


@st.cache_resource(show_spinner="正在请出角色（加载模型）…")
def _backend(character_id: str, kind: str) -> Backend:
    from xiyou.backends.factory import make_backend

    return make_backend(get_character(character_id), kind=kind)


def _history_key(character: Character) -> str:
    return f"chat_history_{character.id}"


def _citations_key(character: Character) -> str:
    return f"chat_citations_{character.id}"


def _clear_history(character: Character) -> None:
    st.session_state[_history_key(character)] = []
    st.session_state[_citations_key(character)] = {}


def _cite(citation: Citation) -> None:
    st.caption(f"📖 《西游记》{citation.label()}")


def _ask(question: str) -> None:
    st.session_state["chat_suggested"] = question


def _sidebar(character: Character) -> GenerationSettings:
    g = character.generation
    with st.sidebar:
        st.header(f"{character.emoji} {character.name}")
        max_new_tokens = st.slider("最大生成长度 max new tokens", 1, 2048, g.max_new_tokens, 1, key="max_new_tokens")
        temperature = st.slider("温度 temperature", 0.0, 2.0, g.temperature, 0.05, key="temperature")
        top_p = st.slider("top_p", 0.05, 1.0, g.top_p, 0.05, key="top_p")
        repetition_penalty = st.slider(
            "重复惩罚 repetition penalty",
            1.0,
            2.0,
            g.repetition_penalty,
            0.005,
            format="%.3f",
            key="repetition_penalty",
        )
        st.button("清空对话 clear history", on_click=_clear_history, args=(character,), width="stretch")
        st.subheader("试试问")
        for i, question in enumerate(character.sample_questions):
            st.button(question, key=f"suggest_{i}", on_click=_ask, args=(question,), width="stretch")
    return GenerationSettings.for_character(
        character,
        max_new_tokens=int(max_new_tokens),
        temperature=float(temperature),
        top_p=float(top_p),
        repetition_penalty=float(repetition_penalty),
    )


def chat_page(character_id: str) -> None:
    """Draw `character_id`'s chat app (the whole page)."""
    character = get_character(character_id)
    st.set_page_config(page_title=character.title, page_icon=character.emoji, layout="centered")
    settings = _sidebar(character)
    st.title(f"{character.emoji} {character.title}")
    history: list[Message] = st.session_state.setdefault(_history_key(character), [])
    #: index in `history` -> the Citation of that (canon) reply
    citations: dict[int, Citation] = st.session_state.setdefault(_citations_key(character), {})

    backend: Backend | None = None
    try:
        backend = _backend(character.id, env.backend_kind())
    except (BackendError, ValueError) as e:
        st.error(f"{character.name} 暂时无法说话：{e}")

    with st.chat_message("assistant", avatar=character.emoji):
        st.markdown(character.greeting)
    for i, message in enumerate(history):
        avatar = character.emoji if message["role"] == "assistant" else USER_AVATAR
        with st.chat_message(message["role"], avatar=avatar):
            render.markdown(message["content"])
            if i in citations:
                _cite(citations[i])

    typed = st.chat_input(f"和{character.name}说点什么…", disabled=backend is None)
    prompt = typed or st.session_state.pop("chat_suggested", None)
    if not prompt or backend is None:
        return
    if len(prompt) > MAX_INPUT_CHARS:
        st.warning(f"消息太长了（{len(prompt)} 字），请控制在 {MAX_INPUT_CHARS} 字以内。这条消息没有发送。")
        return
    with st.chat_message("user", avatar=USER_AVATAR):
        render.markdown(prompt)
    history.append({"role": "user", "content": prompt})
    messages: list[Message] = [{"role": "system", "content": character.meta_instruction}, *history]
    slot = st.empty()
    reply: object = None
    error: str | None = None
    cited: list[Citation] = []
    with slot.container(), st.chat_message("assistant", avatar=character.emoji):
        try:
            reply = render.write_stream(text_only(backend.stream(messages, settings), cited.append))
        except BackendError as e:
            error = str(e)
        if cited and isinstance(reply, str) and reply.strip():
            _cite(cited[-1])
    if isinstance(reply, str) and reply.strip():
        if cited:
            citations[len(history)] = cited[-1]
        history.append({"role": "assistant", "content": reply})
        return
    slot.empty()  # no bubble for a reply that did not come
    history.pop()  # unanswered: leave the history as it was, so the person can simply send again
    if error:
        st.error(render.safe_markdown(f"{character.name} 没能回答（消息未保存，可以重新发送）：{error}"))
    else:
        st.warning(f"{character.name} 这次什么也没说（消息未保存，可以重新发送）。")

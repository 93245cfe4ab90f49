"""A private chat with one character: the page of the four single-character apps (`chat_page("<id>")`) and of the
private chats in the multi-page app (`private_chat`).

Reads top to bottom as what the person sees: the sidebar (generation sliders, clear, suggested questions, the
list of chats), the title and greeting, the history with each message's controls, the reply streaming in, and
the chat input.

- The conversation is stored (xiyou.store): a reload or a new tab restores the chat named in the URL (`?c=`).
  A reply is stored when it ends; a reply cut off by Stop or by a new message is kept, marked interrupted.
- The reply being streamed lives in the session, not in the script run: touching a slider mid-reply redraws
  the page and the reply goes on where it was.
- Backend errors are shown with `st.error`, never as a character's message; the unanswered message is taken
  back so it can simply be sent again. Model text is rendered as Markdown, never as raw HTML.
- The input counts what is typed (xiyou.ui.chat_input); a message longer than `MAX_INPUT_CHARS` is not sent: it
  comes back in an edit box with a counter, so nothing typed is lost.
"""

from __future__ import annotations

import contextlib
import dataclasses
import queue
import threading
import time

import streamlit as st

from xiyou import env
from xiyou.backends.base import (
    Backend,
    BackendError,
    Citation,
    GenerationSettings,
    Message,
    StreamEnd,
    StreamFailed,
    is_offline,
    pump,
)
from xiyou.character import Character, get_character
from xiyou.prompts import PromptMode, build_messages, describe, mode_of
from xiyou.store import Alternative, Conversation, Store, StoredMessage
from xiyou.ui import conversations, messages, render
from xiyou.ui.chat_input import watch_chat_input
from xiyou.ui.options import apply_page_options, public_error

MAX_INPUT_CHARS = 1000
USER_AVATAR = "🙏"
PERSON = "person"
WAITING = "⏳ 等候中 · waiting for your turn…"
#: The session key that puts this visitor's page in offline canon mode after the model could not be loaded.
OFFLINE_KEY = "chat_offline"
OFFLINE_OFFER = "📖 先用原著里他的话聊 · talk with his lines from the book"
#: Why he cannot speak, in a visitor's words, by the kind of backend that failed; the exact error (what the person
#: running the app sets) is folded away under CANNOT_SPEAK_DETAILS.
CANNOT_SPEAK = {
    "transformers": "这台机器上没有能加载的他的模型（微调权重要下载，最好有 GPU）· his model's weights cannot be "
    "loaded on this machine",
    "openai": "他的模型服务没有设好，或者连不上 · his model server is not set up or cannot be reached",
    "canon": "没有找到《西游记》原文，原著模式用不了 · the novel's text is missing, so the offline mode cannot run",
}
CANNOT_SPEAK_DETAILS = "详情 · details (for whoever runs this app)"
#: The counter's tooltip beyond the limit.
OVER_LIMIT = f"超过 {MAX_INPUT_CHARS} 字：发送后回到编辑框，删短再发 · too long: it comes back to shorten when sent"


@st.cache_resource(show_spinner="正在请出角色（加载模型）…")
def _backend(character_id: str, kind: str) -> Backend:
    from xiyou.backends.factory import make_backend

    return make_backend(get_character(character_id), kind=kind)


# ----- the reply in progress (kept in the session across script runs) ----------------------------------------------
#: How often the page looks at a silent backend (and lets Streamlit interrupt the run), in seconds.
POLL_S = 0.1
#: A reply streaming in is redrawn at most this often, in seconds: each redraw is a message the browser renders,
#: and a fast model (60 pieces a second) would keep a loaded browser so busy that the page lags behind clicks.
DRAW_S = 0.1
#: How long a new script run waits for the run it interrupted to let go of the reply in progress.
HANDOVER_S = 5.0


@dataclasses.dataclass
class Live:
    """A reply streaming in: `mode` new (a new message), regenerate (a new version of `target`), continue (more of
    `target`). A worker thread reads the backend into `pieces`; whichever script run holds `lock` draws them, so a
    rerun (a slider touched mid-reply) takes over where the interrupted run stopped."""

    cancel: threading.Event
    mode: str = "new"
    target: int | None = None
    pieces: queue.SimpleQueue = dataclasses.field(default_factory=queue.SimpleQueue)
    lock: threading.RLock = dataclasses.field(default_factory=threading.RLock)
    text: str = ""
    chapter: int | None = None
    said_to: str | None = None
    error: str | None = None
    notice: str | None = None
    ended: bool = False

    def take(self, timeout: float | None) -> bool:
        """Take the next piece (waiting up to `timeout`); False when none came. Sets `ended` at the end."""
        try:
            piece = self.pieces.get(timeout=timeout) if timeout else self.pieces.get_nowait()
        except queue.Empty:
            return False
        if isinstance(piece, StreamEnd):
            self.ended = True
            self.notice = piece.notice
        elif isinstance(piece, StreamFailed):
            error = piece.error
            self.error = str(error) if isinstance(error, BackendError) else f"{type(error).__name__}: {error}"
            self.ended = True
        elif isinstance(piece, str):
            self.text += piece
        elif isinstance(piece, Citation):  # where in the novel the line comes from
            self.chapter, self.said_to = piece.chapter, piece.said_to
        return True


def _live_key(conv: Conversation) -> str:
    return f"chat_live_{conv.id}"


def _cut_key(conv: Conversation) -> str:
    return f"chat_cut_{conv.id}"


def backend_messages(
    character: Character, history: list[StoredMessage], mode: PromptMode = "meta", *, merge: bool = True
) -> list[Message]:
    """System prompt (xiyou.prompts, in the backend's mode), then the chat; consecutive lines of one side are merged
    so the roles alternate (a model expects that). `merge=False` for the offline mode: it answers the person's last
    message, and two questions sent before he answered, merged into one, would match a mix of both."""
    out: list[Message] = []
    for m in history:
        role = "user" if m.speaker == PERSON else "assistant"
        if merge and out and out[-1]["role"] == role:
            out[-1] = {"role": role, "content": f"{out[-1]['content']}\n\n{m.text}"}
        else:
            out.append({"role": role, "content": m.text})
    return build_messages(character, out, mode)


def _finish_live(store: Store, conv: Conversation, character: Character, live: Live, interrupted: bool) -> None:
    """Store what the live reply got to (nothing when it got nothing)."""
    text, chapter = live.text.strip(), live.chapter
    if not text:
        return
    if live.mode == "new":
        store.add_message(
            conv.id,
            StoredMessage(character.id, character.name, text, chapter=chapter, said_to=live.said_to,
                          interrupted=interrupted),
        )  # fmt: skip
        return
    target = next((m for m in store.messages(conv.id) if m.id == live.target), None)
    if target is None:
        return
    if live.mode == "regenerate":
        target.add_alternative(Alternative(text, chapter, live.said_to))
    else:  # continue
        joined = f"{target.text}{text}"
        target.alternatives[target.selected] = dataclasses.replace(target.alternatives[target.selected], text=joined)
        target.text = joined
    target.interrupted = interrupted
    store.update_message(conv.id, target)


def _stop_live(store: Store, conv: Conversation, character: Character) -> None:
    """End the reply in progress, keeping what came so far (marked interrupted)."""
    live: Live | None = st.session_state.get(_live_key(conv))
    if live is None:
        return
    live.cancel.set()
    if not live.lock.acquire(timeout=HANDOVER_S):
        return
    try:
        if st.session_state.get(_live_key(conv)) is not live:
            return  # the interrupted run finished it meanwhile
        st.session_state.pop(_live_key(conv), None)
        while live.take(None):
            pass
        _finish_live(store, conv, character, live, interrupted=not live.ended)
    finally:
        live.lock.release()


def _start_live(
    store: Store,
    conv: Conversation,
    character: Character,
    backend: Backend,
    settings: GenerationSettings,
    mode: str = "new",
    target: StoredMessage | None = None,
) -> None:
    history = store.messages(conv.id)
    if mode == "regenerate" and target is not None:
        history = history[: next(i for i, m in enumerate(history) if m.id == target.id)]
    sent = backend_messages(character, history, mode_of(backend), merge=not is_offline(backend))
    if mode == "continue":
        sent.append({"role": "user", "content": "（请接着说。）"})
    live = Live(threading.Event(), mode, target.id if target else None)
    stream = backend.stream(sent, settings, live.cancel)
    threading.Thread(
        target=pump, args=(lambda: stream, live.pieces.put, live.cancel), name=f"chat-{character.id}", daemon=True
    ).start()
    st.session_state[_live_key(conv)] = live


def _draw_live(store: Store, conv: Conversation, character: Character) -> None:
    live: Live | None = st.session_state.get(_live_key(conv))
    if live is None:
        return
    slot = st.empty()
    if not live.lock.acquire(timeout=HANDOVER_S):
        slot.caption(WAITING)
        return
    try:
        with slot.container(), st.chat_message("assistant", avatar=character.emoji):
            body = st.empty()
            while not live.ended:
                # drawn every DRAW_S at most (all pieces that came meanwhile at once), also in silence: a rerun
                # can interrupt the run at each drawing
                if live.text:
                    body.markdown(render.safe_markdown(live.text) + " ▌")
                else:
                    body.caption(WAITING)  # the model may be busy with another visitor
                until = time.monotonic() + DRAW_S
                while not live.ended and (left := until - time.monotonic()) > 0:
                    live.take(min(left, POLL_S))
        st.session_state.pop(_live_key(conv), None)
        if live.text.strip():
            _finish_live(store, conv, character, live, interrupted=False)
            if live.notice:  # shown under the stored reply on the next run
                st.session_state[_cut_key(conv)] = live.notice
    finally:
        live.lock.release()
    if live.text.strip():
        st.rerun()  # draw it as a stored message, with its controls
    slot.empty()  # no bubble for a reply that did not come
    if live.mode == "new":  # unanswered: take the message back, so the person can simply send it again
        history = store.messages(conv.id)
        if history and history[-1].speaker == PERSON:
            history[-1].deleted = True
            store.update_message(conv.id, history[-1])
    if live.error:
        st.error(
            render.safe_markdown(f"{character.name} 没能回答（消息未保存，可以重新发送）：{public_error(live.error)}")
        )
    else:
        st.warning(f"{character.name} 这次什么也没说（消息未保存，可以重新发送）。")


# ----- the page -----------------------------------------------------------------------------------------------------
def _ask(question: str) -> None:
    st.session_state["chat_suggested"] = question


def _check_length(key: str, draft_key: str) -> None:
    text = st.session_state.get(key) or ""
    if len(text) > MAX_INPUT_CHARS:
        st.session_state[draft_key] = text  # nothing typed is lost: it comes back in the edit box


def _send_draft(draft_key: str) -> None:
    text = st.session_state.get(draft_key, "")
    if 0 < len(text.strip()) <= MAX_INPUT_CHARS:
        st.session_state["chat_suggested"] = text
        st.session_state.pop(draft_key, None)


#: Offline, the suggested questions are ones put to him in the novel: his answer there is what he says
BOOK_QUESTIONS_CAPTION = "原著里别人问过他的话 · asked of him in the novel"
BOOK_QUESTIONS_HELP = (
    "离线时他只会用原著里自己的话回答：这些问题在书中问过他，他的回答就在书里 · Offline he answers with his own "
    "lines from the novel: these were asked of him there, and his answer is in the book."
)


#: Over the sliders when he speaks lines from the book: only the length applies, and they start folded away
OFFLINE_SLIDERS = "生成参数 · generation settings（原著模式只用最大长度 · offline: only the length applies）"


def settings_sidebar(
    character: Character, offline: bool = False, speaks: bool = True
) -> tuple[GenerationSettings, bool]:
    """The generation sliders (folded away when `offline`: lines from the book are not sampled), clear, suggested
    questions (greyed out when he cannot speak: `speaks` False). Returns (settings, clear clicked)."""
    g = character.generation
    with st.sidebar:
        st.header(f"{character.emoji} {character.name}")
        with st.expander(OFFLINE_SLIDERS, expanded=False) if offline else contextlib.nullcontext():
            max_new_tokens = st.slider(
                "最大生成长度 max new tokens", 1, 2048, g.max_new_tokens, 1, key="max_new_tokens"
            )
            temperature = st.slider("温度 temperature", 0.0, 2.0, g.temperature, 0.05, key="temperature")
            top_p = st.slider("top_p", 0.05, 1.0, g.top_p, 0.05, key="top_p")
            repetition_penalty = st.slider(
                "重复惩罚 repetition penalty", 1.0, 2.0, g.repetition_penalty, 0.005, format="%.3f",
                key="repetition_penalty",
            )  # fmt: skip
        clear = st.button("清空对话 clear history", key="chat_clear", width="stretch")
        from xiyou.canon.answers import offline_suggestions

        from_book = offline_suggestions(character) if offline else []
        if from_book:
            st.subheader("试试问", help=BOOK_QUESTIONS_HELP)
            st.caption(BOOK_QUESTIONS_CAPTION)
        else:
            st.subheader("试试问")
        for i, question in enumerate(from_book or character.sample_questions):
            st.button(
                question, key=f"suggest_{i}", on_click=_ask, args=(question,), width="stretch", disabled=not speaks
            )
    settings = GenerationSettings.for_character(
        character,
        max_new_tokens=int(max_new_tokens),
        temperature=float(temperature),
        top_p=float(top_p),
        repetition_penalty=float(repetition_penalty),
    )
    return settings, clear


def private_chat(
    store: Store,
    conv: Conversation,
    character: Character,
    backend: Backend | None,
    settings: GenerationSettings,
    clear: bool = False,
    title: str | None = None,
) -> None:
    """The chat itself (title, history, live reply, input) for `conv`, a private chat with `character`."""
    st.title(f"{character.emoji} {title or character.title}")
    if backend is not None:  # which mode and model he is on
        st.sidebar.caption(render.safe_markdown(public_error(describe(backend))))
    notice = getattr(backend, "notice", None)  # what the mode is, e.g. the offline canon backend's
    if isinstance(notice, str) and notice:
        st.caption(notice)
    action = messages.take_action()
    if clear:
        _stop_live(store, conv, character)
        store.replace_messages(conv.id, [])
    elif action is not None:
        _stop_live(store, conv, character)
        history = store.messages(conv.id)
        target = messages.apply_to(history, action)
        if target is not None and action.kind in ("edit", "delete", "swipe"):
            store.update_message(conv.id, target)
        elif target is not None and backend is not None and target.speaker != PERSON:
            _start_live(store, conv, character, backend, settings, action.kind, target)

    input_key = f"chat_input_{conv.id}"
    draft_key = f"chat_draft_{conv.id}"
    with st.chat_message("assistant", avatar=character.emoji):
        st.markdown(character.greeting)
    history = store.messages(conv.id)
    live_running = _live_key(conv) in st.session_state
    last_reply = next((m.id for m in reversed(history) if m.speaker != PERSON), None)
    if history and history[-1].speaker == PERSON:
        last_reply = None  # the controls of the last reply only while it is the last message
    for m in history:
        is_person = m.speaker == PERSON
        messages.bubble(
            m,
            avatar=USER_AVATAR if is_person else character.emoji,
            role="user" if is_person else "assistant",
            last_reply=m.id == last_reply,
            busy=live_running,
        )
    cut = st.session_state.pop(_cut_key(conv), None)
    if cut:  # the last reply was cut short (the server ran past the reply cap)
        st.warning(render.safe_markdown(cut), icon="✂️")

    if draft_key in st.session_state:
        draft = st.session_state[draft_key]
        st.warning(
            f"消息太长了（{len(draft)} / {MAX_INPUT_CHARS} 字），没有发送；请在下面删短后再发送。"
            " Too long: shorten it below, nothing was lost."
        )
        st.text_area("待发送 · Draft", key=draft_key, height=160)
        st.caption(f"{len(st.session_state[draft_key])} / {MAX_INPUT_CHARS}")
        st.button("发送 · Send", key=f"chat_send_draft_{conv.id}", on_click=_send_draft, args=(draft_key,))

    typed = st.chat_input(
        f"和{character.name}说点什么…（{MAX_INPUT_CHARS} 字以内）",
        key=input_key,
        disabled=backend is None,
        on_submit=_check_length,
        args=(input_key, draft_key),
    )
    with st.bottom:
        watch_chat_input(f"chat_counter_{conv.id}", MAX_INPUT_CHARS, over_text=OVER_LIMIT)
    prompt = typed or st.session_state.pop("chat_suggested", None)
    if prompt and backend is not None and len(prompt) <= MAX_INPUT_CHARS:
        _stop_live(store, conv, character)  # a new message ends the reply in progress (kept as far as it got)
        person = StoredMessage(PERSON, "你", prompt)
        store.add_message(conv.id, person)
        with st.chat_message("user", avatar=USER_AVATAR):
            render.markdown(prompt)
        _start_live(store, conv, character, backend, settings)
    _draw_live(store, conv, character)


def _offer_offline(character: Character, kind: str) -> None:
    """When his model cannot be loaded and the novel is here, offer the offline canon mode for this visit (a new
    visit tries the model again)."""
    if not env.offline_offer(kind):
        return
    st.button(
        OFFLINE_OFFER, key="chat_go_offline", on_click=st.session_state.__setitem__, args=(OFFLINE_KEY, True),
        help=f"没有模型也能聊：{character.name}用《西游记》里自己说过的话回答，并注明出处 · no model needed",
    )  # fmt: skip


def cannot_speak(character: Character, kind: str, details: str, offer_offline: bool = False) -> None:
    """His model could not be had: why, in a visitor's words; with `offer_offline` (the single-character apps, whose
    page reads OFFLINE_KEY), the 📖 offer of his lines from the book where the novel is here; the exact error, with
    what to set, folded away for whoever runs the app."""
    reason = CANNOT_SPEAK.get(kind, "")
    st.error(f"{character.name}暂时无法说话 · {character.name} cannot speak now" + (f"：{reason}" if reason else ""))
    if offer_offline:
        _offer_offline(character, kind)
    with st.expander(CANNOT_SPEAK_DETAILS, expanded=not reason):
        st.markdown(render.safe_markdown(details))


def chat_page(character_id: str) -> None:
    """Draw `character_id`'s chat app (the whole page): the entry of `apps/<id>/app.py` and OpenXLab."""
    character = get_character(character_id)
    st.set_page_config(page_title=character.title, page_icon=character.emoji, layout="centered")
    apply_page_options()
    backend: Backend | None = None
    unavailable = ""
    kind = ""
    try:
        kind = "canon" if st.session_state.get(OFFLINE_KEY) else env.backend_kind()
        backend = _backend(character.id, kind)
    except (BackendError, ValueError) as e:
        unavailable = public_error(str(e))
    settings, clear = settings_sidebar(character, offline=is_offline(backend), speaks=backend is not None)
    store = conversations.session_store()
    conv = conversations.resolve(
        store,
        lambda c: c.kind == "private" and c.settings.get("character") == character.id,
        lambda: conversations.new_private(store, character),
    )
    action = conversations.conversation_list(store, conv, kinds=("private",), characters=[character.id])
    if action is not None:
        conversations.apply_list_action(store, action, lambda: conversations.new_private(store, character))
    if unavailable:
        cannot_speak(character, kind, unavailable, offer_offline=True)
    private_chat(store, conv, character, backend, settings, clear)

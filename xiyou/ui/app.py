"""The app for every conversation (`make run`, `hub/app.py`): group rooms and private chats with each of the four.

A multi-page Streamlit app (`st.navigation`): 💬 the conversation named in the URL (`?c=<id>`; a reload or a new
tab restores it), with the list of conversations in the sidebar like a messenger (new, rename, delete), and 📥
import, which turns a transcript exported as JSON lines into a new room. Conversations are stored (xiyou.store);
`XIYOU_PERSIST=0` keeps them in the browser session only.
"""

from __future__ import annotations

import streamlit as st

from xiyou.character import load_characters
from xiyou.store import Conversation, Store
from xiyou.ui import conversations
from xiyou.ui.options import apply_page_options, public_error

APP_TITLE = "西游 · 师徒四人"


def _private_page(store: Store, conv: Conversation) -> None:
    from xiyou.backends.base import is_offline
    from xiyou.room.lineup import LineupError
    from xiyou.ui.chat import cannot_speak, private_chat, settings_sidebar
    from xiyou.ui.hub import lineup

    character = load_characters()[conv.settings["character"]]
    backend = None
    try:
        seat = lineup().seats[character.id]
        backend = seat.backend
        if backend is None:
            cannot_speak(character, "", public_error(seat.unavailable or ""))
    except LineupError as e:
        st.error(f"The endpoints file is broken: {public_error(str(e))}", icon="🔴")
    settings, clear = settings_sidebar(character, offline=is_offline(backend), speaks=backend is not None)
    private_chat(store, conv, character, backend, settings, clear, title=conv.title)


def conversation_page() -> None:
    """💬 The conversation named in the URL (the newest room, or a new one, when it names none)."""
    from xiyou.ui.hub import room_page

    store = conversations.session_store()
    # no conversation named: the newest group room (the hub of `make run`)
    conv = conversations.resolve(
        store, lambda c: True, lambda: conversations.new_room(store), default=lambda c: c.kind == "room"
    )
    action = conversations.conversation_list(store, conv)
    if action is not None:
        conversations.apply_list_action(
            store, action, lambda: next(iter(store.list()), None) or conversations.new_room(store)
        )
    if conv.kind == "room":
        room_page(store, conv)
    else:
        _private_page(store, conv)


def import_page() -> None:
    """📥 A transcript exported as JSON lines becomes a new room (its speakers are the members)."""
    st.title("📥 导入对话 · Import a transcript")
    st.caption("A `.jsonl` file exported from a room or a chat (⬇️ JSON lines): each line `{speaker, id, text}`.")
    store = conversations.session_store()
    upload = st.file_uploader("JSON lines", type=["jsonl", "json", "txt"], key="import_file")
    if upload is None:
        return
    try:
        rows = conversations.parse_transcript(upload.getvalue(), "施主")
    except conversations.TranscriptError as e:
        st.error(f"{upload.name}: {e}", icon="🔴")
        return
    known = load_characters()
    speakers = list(dict.fromkeys(m.speaker for m in rows if m.speaker in known))
    st.success(f"{len(rows)} messages, speakers: {', '.join(known[s].name for s in speakers) or 'only the person'}")
    if st.button("导入为新群聊 · Import as a new room", key="import_go", type="primary"):
        person = next((m.name for m in rows if m.speaker == "person"), None)
        settings = {"members": speakers or list(known), **({"person": person} if person else {})}
        conv = store.create("room", f"导入 · {upload.name}"[:80], settings)
        store.replace_messages(conv.id, rows)
        st.query_params.clear()
        st.switch_page(_PAGES["chat"], query_params={conversations.QUERY_KEY: conv.id})


_PAGES: dict[str, st.Page] = {}


def main() -> None:
    st.set_page_config(page_title=APP_TITLE, page_icon="🏯", layout="centered")
    apply_page_options()
    _PAGES["chat"] = st.Page(conversation_page, title="对话 · Chats", icon="💬", url_path="chat", default=True)
    _PAGES["import"] = st.Page(import_page, title="导入 · Import", icon="📥", url_path="import")
    st.navigation(list(_PAGES.values())).run()

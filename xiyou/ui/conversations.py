"""The conversation list every page shares: which store, which conversation the URL names, the sidebar list.

- The store: one SQLite file for the whole server (`XIYOU_DATA_DIR`), or, with `XIYOU_PERSIST=0` (public demos), a
  MemoryStore per browser session, so one visitor never sees another's chats.
- The conversation shown is the one named in the URL (`?c=<id>`): a reload or a new tab restores it.
- The sidebar list works like a messenger: group rooms and private chats, newest first; new, rename, delete. It
  returns what the person asked for (`ListAction`); the page applies it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import streamlit as st

from xiyou.character import Character, load_characters
from xiyou.store import Conversation, Kind, MemoryStore, Store, StoredMessage, open_store, persist_enabled

QUERY_KEY = "c"
_MEMORY_KEY = "xiyou_memory_store"


@st.cache_resource(show_spinner=False)
def _shared_store(path: str) -> Store:
    return open_store()


def session_store() -> Store:
    """The store for this browser session (see the module docstring)."""
    if not persist_enabled():
        if _MEMORY_KEY not in st.session_state:
            st.session_state[_MEMORY_KEY] = MemoryStore()
        return st.session_state[_MEMORY_KEY]
    from xiyou.store import database_path

    return _shared_store(str(database_path()))


def current_id() -> str | None:
    value = st.query_params.get(QUERY_KEY)
    return value or None


def show(conversation_id: str) -> None:
    """Name `conversation_id` in the URL (a reload or a shared tab opens it)."""
    st.query_params[QUERY_KEY] = conversation_id


def room_title(n: int) -> str:
    return "师徒群聊" if n <= 1 else f"师徒群聊 {n}"


def private_title(character: Character) -> str:
    return f"和{character.name}聊天"


def new_room(store: Store, settings: dict[str, Any] | None = None) -> Conversation:
    n = len(store.list("room")) + 1
    return store.create("room", room_title(n), settings or {})


def new_private(store: Store, character: Character) -> Conversation:
    return store.create("private", private_title(character), {"character": character.id})


def resolve(
    store: Store,
    accept: Callable[[Conversation], bool],
    make: Callable[[], Conversation],
    default: Callable[[Conversation], bool] | None = None,
) -> Conversation:
    """The conversation the URL names when `accept`able, else the newest `default` one (default: acceptable),
    else a new one (`make`)."""
    wanted = current_id()
    conv = store.get(wanted) if wanted else None
    if conv is None or not accept(conv):
        conv = next((c for c in store.list() if (default or accept)(c)), None) or make()
    if current_id() != conv.id:
        show(conv.id)
    return conv


@dataclasses.dataclass(frozen=True)
class ListAction:
    """What the person asked for in the conversation list."""

    kind: str  # "open", "new_room", "new_private", "rename", "delete"
    conversation_id: str | None = None
    value: str | None = None


def _label(conv: Conversation, characters: dict[str, Character]) -> str:
    if conv.kind == "room":
        return f"🏯 {conv.title}"
    character = characters.get(str(conv.settings.get("character")))
    return f"{character.emoji if character else '💬'} {conv.title}"


def conversation_list(
    store: Store,
    current: Conversation,
    *,
    kinds: Sequence[Kind] = ("room", "private"),
    characters: Sequence[str] | None = None,
) -> ListAction | None:
    """The sidebar list (rooms and private chats, newest first) with new / rename / delete. Draws only."""
    known = load_characters()
    chars = [known[c] for c in (characters or list(known))]
    action: ListAction | None = None
    with st.sidebar:
        st.subheader("💬 对话 · Chats")
        with st.container(horizontal=True, gap="small"):
            if "room" in kinds and st.button("➕ 群聊", key="conv_new_room", help="a new group room"):
                action = ListAction("new_room")
            if "private" in kinds:
                if len(chars) == 1:
                    if st.button("➕ 新对话 · New chat", key="conv_new_private"):
                        action = ListAction("new_private", value=chars[0].id)
                else:
                    with st.popover("➕ 私聊", help="a private chat with one of the four"):
                        for c in chars:
                            if st.button(f"{c.emoji} {c.name}", key=f"conv_new_private_{c.id}"):
                                action = ListAction("new_private", value=c.id)
        shown = [
            c
            for c in store.list()
            if c.kind in kinds and (c.kind == "room" or characters is None or c.settings.get("character") in characters)
        ]
        for conv in shown:
            is_current = conv.id == current.id
            if (
                st.button(
                    _label(conv, known),
                    key=f"conv_open_{conv.id}",
                    type="primary" if is_current else "tertiary",
                    width="stretch",
                )
                and not is_current
            ):
                action = ListAction("open", conv.id)
        with st.expander("✏️ 改名 / 删除 · Rename / delete", expanded=False):
            title = st.text_input("名称 · Title", current.title, key=f"conv_title_{current.id}", max_chars=80)
            left, right = st.columns(2)
            if left.button("保存 · Save", key=f"conv_rename_{current.id}") and title.strip():
                action = ListAction("rename", current.id, title)
            if right.button("🗑️ 删除 · Delete", key=f"conv_delete_{current.id}"):
                action = ListAction("delete", current.id)
    return action


def apply_list_action(store: Store, action: ListAction, after_delete: Callable[[], Conversation]) -> None:
    """Do what the list asked, name the resulting conversation in the URL, and rerun."""
    characters = load_characters()
    if action.kind == "open" and action.conversation_id:
        show(action.conversation_id)
    elif action.kind == "new_room":
        show(new_room(store).id)
    elif action.kind == "new_private" and action.value in characters:
        show(new_private(store, characters[action.value]).id)
    elif action.kind == "rename" and action.conversation_id and action.value:
        store.rename(action.conversation_id, action.value)
    elif action.kind == "delete" and action.conversation_id:
        store.delete(action.conversation_id)
        st.query_params.pop(QUERY_KEY, None)
        show(after_delete().id)
    st.rerun()


# ----- import ---------------------------------------------------------------------------------------------------
class TranscriptError(ValueError):
    """A transcript file that cannot be imported; the message names the line and what is wrong."""


def parse_transcript(data: bytes, person: str) -> list[StoredMessage]:
    """Messages from a transcript exported as JSON lines (`{"speaker", "id", "text", "time", ...}` per line)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise TranscriptError(f"the file is not UTF-8 text ({e}); import a .jsonl file exported by this app") from None
    known = load_characters()
    messages: list[StoredMessage] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise TranscriptError(f"line {n} is not JSON ({e.msg}); import a .jsonl file this app exported") from None
        if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not row["text"].strip():
            raise TranscriptError(f'line {n} has no "text"; each line needs {{"speaker", "id", "text"}}')
        if "error" in row or "notice" in row:
            continue  # notices are not chat lines
        speaker = str(row.get("id") or "person")
        if speaker not in known:
            speaker = "person"
        name = str(row.get("speaker") or (known[speaker].name if speaker in known else person))
        citation = row.get("citation") if isinstance(row.get("citation"), dict) else {}
        chapter = citation.get("chapter", row.get("chapter"))
        messages.append(
            StoredMessage(
                speaker,
                name,
                row["text"],
                float(row.get("time") or 0) or time.time(),
                chapter=chapter if isinstance(chapter, int) else None,
                said_to=citation.get("said_to") if isinstance(citation.get("said_to"), str) else None,
                interrupted=bool(row.get("interrupted")),
            )
        )
    if not messages:
        raise TranscriptError("the file holds no messages")
    return messages

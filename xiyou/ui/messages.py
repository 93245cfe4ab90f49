"""Chat bubbles with the controls people expect, shared by the private chat and the room pages.

Every message has a small ⋯ menu (edit, delete); the last reply also has 🔄 regenerate (the earlier versions are
kept: ◀ ▶ switch between them, "swipes") and ➡️ continue (the character goes on from where it stopped), except
a narrator's line: it is told, not answered (the room's 📜 Narrate tells the next passage). A
control does not act itself: it records a `MessageAction` that the page takes at the top of its next run
(`take_action`) and applies to its store, so the page reads top to bottom.

Model text is rendered through xiyou.ui.render (Markdown that cannot fetch anything, never HTML); a chapter
citation is drawn as a 📖 caption, and a 📖 button beside the controls opens the novel where the line stands
(what happened just before he said it: often what a question about the story asked).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import streamlit as st

from xiyou.backends.base import Citation
from xiyou.room.transcript import NARRATOR
from xiyou.store import StoredMessage
from xiyou.ui import render

_ACTION_KEY = "xiyou_message_action"
ActionKind = Literal["edit", "delete", "regenerate", "swipe", "continue"]


@dataclasses.dataclass(frozen=True)
class MessageAction:
    kind: ActionKind
    message_id: int
    value: str | int | None = None


def request(action: MessageAction) -> None:
    st.session_state[_ACTION_KEY] = action


def take_action() -> MessageAction | None:
    """The action a control asked for in the run that just ended (each is taken once)."""
    return st.session_state.pop(_ACTION_KEY, None)


def _request_edit(message_id: int, key: str) -> None:
    text = str(st.session_state.get(key, "")).strip()
    if text:
        request(MessageAction("edit", message_id, text))


def citation_caption(message: StoredMessage) -> str | None:
    if message.chapter is None:
        return None
    return f"📖 《西游记》{Citation(message.chapter, message.said_to).label()}"


def novel_passage(message: StoredMessage) -> str | None:
    """Markdown of the novel where a cited line stands (the text leading to it, then the line in bold); None for
    a message without a chapter, the narrator's (his text is the passage), or a line the chapter does not hold
    once (edited, or cut too short to place), or when the novel cannot be read."""
    if message.chapter is None or message.speaker == NARRATOR:
        return None
    from xiyou.canon import passage_of

    found = passage_of(message.chapter, message.text, message.speaker)
    if found is None:
        return None
    lead, line = found
    return f"{render.safe_markdown(lead)}**{render.safe_markdown(line)}**"


def bubble(
    message: StoredMessage,
    *,
    avatar: str,
    role: str,
    label: str | None = None,
    last_reply: bool = False,
    busy: bool = False,
) -> None:
    """One message: name (rooms), text, citation, marks, and its controls (none while a reply streams)."""
    assert message.id is not None
    mid = message.id
    with st.chat_message(role, avatar=avatar):
        if label:
            st.markdown(f"**{label}**")
        render.markdown(message.text)
        marks = [m for m in (citation_caption(message),) if m]
        if message.interrupted:
            marks.append("被打断 · interrupted")
        if message.edited:
            marks.append("已编辑 · edited")
        for mark in marks:
            st.caption(mark)
        if busy:
            return
        with st.container(horizontal=True, gap="small", key=f"msg_controls_{mid}"):
            if last_reply and message.speaker != NARRATOR:  # narration is told, not answered: no regenerate
                st.button("🔄", key=f"msg_regen_{mid}", help="重新回答 · regenerate (the earlier answer is kept)",
                          on_click=request, args=(MessageAction("regenerate", mid),), type="tertiary")  # fmt: skip
                n = len(message.alternatives)
                if n > 1:
                    st.button("◀", key=f"msg_prev_{mid}", disabled=message.selected == 0, type="tertiary",
                              on_click=request, args=(MessageAction("swipe", mid, message.selected - 1),))  # fmt: skip
                    st.caption(f"{message.selected + 1}/{n}")
                    st.button("▶", key=f"msg_next_{mid}", disabled=message.selected >= n - 1, type="tertiary",
                              on_click=request, args=(MessageAction("swipe", mid, message.selected + 1),))  # fmt: skip
                st.button("➡️", key=f"msg_cont_{mid}", help="接着说 · continue this reply",
                          on_click=request, args=(MessageAction("continue", mid),), type="tertiary")  # fmt: skip
            passage = novel_passage(message)
            if passage:
                with st.popover("📖", help="原著此处 · where this line stands in the novel", type="tertiary"):
                    st.caption(citation_caption(message))
                    st.markdown(passage)
            with st.popover("⋯", help="编辑或删除 · edit or delete", type="tertiary"):
                key = f"msg_edit_text_{mid}"
                st.text_area("编辑 · Edit", message.text, key=key, height=120)
                left, right = st.columns(2)
                left.button("💾 保存 · Save", key=f"msg_edit_{mid}", on_click=_request_edit, args=(mid, key))
                right.button("🗑️ 删除 · Delete", key=f"msg_delete_{mid}",
                             on_click=request, args=(MessageAction("delete", mid),))  # fmt: skip


def apply_to(messages: list[StoredMessage], action: MessageAction) -> StoredMessage | None:
    """Apply edit / delete / swipe to the message it names (in place); returns the changed message to store.

    regenerate and continue need the page (a backend); they return the message they act on, unchanged."""
    target = next((m for m in messages if m.id == action.message_id), None)
    if target is None:
        return None
    if action.kind == "edit" and isinstance(action.value, str):
        target.edit(action.value)
    elif action.kind == "delete":
        target.deleted = True
    elif action.kind == "swipe" and isinstance(action.value, int):
        if 0 <= action.value < len(target.alternatives):
            target.select(action.value)
    return target

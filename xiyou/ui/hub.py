"""A group room: 师徒四人 with the person. `room_page()` draws one stored room conversation.

Reads top to bottom as what the person sees: the sidebar (who is in the room, mute, status lights, turn policy,
auto-banter and its pace, the person's name, export, reset), the transcript with each message's controls, the
reply streaming in, the controls row (▶️ Continue, ⏹️ Stop, 🎤 make someone speak now) and the chat input.
The room engine (xiyou.room) does the talking; this module only draws it and stores it.

- The sidebar returns the settings (`RoomSettings`); the page applies them to the room and stores them with the
  conversation, so a reload restores members, mutes, policy, banter, pace and name.
- Stop, Continue, Speak and Reset act in callbacks, before the page is drawn: the buttons always show the real
  state; starting to type in the chat input stops auto-banter the same way (xiyou.ui.chat_input). The turn being
  streamed lives in the session, not in the script run, so touching a sidebar control redraws the page and the
  reply goes on; auto-banter waits `delay` seconds between turns (Stop works then too).
- Each finished reply is stored at once (a killed server loses at most the reply being streamed).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import streamlit as st

from xiyou import env
from xiyou.backends.base import Citation
from xiyou.character import load_characters
from xiyou.names import check_person_name
from xiyou.prompts import describe
from xiyou.room import (
    POLICIES,
    POLICY_HELP,
    POLICY_LABELS,
    Delta,
    Event,
    MemberFailed,
    Plan,
    ReplyDropped,
    Room,
    Stopped,
    TurnEnded,
    TurnStarted,
    Waiting,
    transcript_jsonl,
    transcript_markdown,
)
from xiyou.room.engine import DEFAULT_BANTER, DEFAULT_PERSON
from xiyou.room.lineup import OFFLINE_HELP, Lineup, LineupError, build_lineup, canon_retriever, load_canon
from xiyou.room.mentions import mentioned
from xiyou.room.transcript import PERSON, Entry, Notice
from xiyou.store import Alternative, Conversation, Store, StoredMessage
from xiyou.story.membership import membership
from xiyou.ui import messages, render, story
from xiyou.ui.chat import DRAW_S, MAX_INPUT_CHARS, OVER_LIMIT, USER_AVATAR, WAITING
from xiyou.ui.chat_input import watch_chat_input
from xiyou.ui.options import public_error

PAGE_TITLE = "西游群聊 · 师徒四人"
PERSON_AVATAR = USER_AVATAR
STATUS_LIGHTS = {
    "idle": "⚪",
    "ok": "🟢",
    "speaking": "💬",
    "error": "🔴",
    "unavailable": "🔴",
    "muted": "🔇",
}
MAX_BANTER = 8
#: Seconds between auto-banter turns (a setting); the person can read, type or press Stop in between.
DEFAULT_DELAY_S = 1.5
MAX_DELAY_S = 10.0
#: How long a run waits for the run it interrupted to let go of the room.
HANDOVER_S = 5.0


def _file_key(path: Path | None) -> str:
    if path is None:
        return ""
    with contextlib.suppress(OSError):
        return f"{path}:{path.stat().st_mtime_ns}"
    return str(path)


@st.cache_resource(show_spinner="Reading the novel and setting up the characters…")
def _cached_lineup(endpoints_key: str, novel_key: str, chapter: int | None = None) -> Lineup:
    # keys carry the files' mtimes, so editing the endpoints file takes effect on the next run
    return build_lineup(None, max_chapter=chapter)


def lineup(chapter: int | None = None) -> Lineup:
    """The lineup of the environment (cached per endpoints file, novel and point in the story: canon members answer
    only from chapters up to `chapter`); raises LineupError."""
    return _cached_lineup(_file_key(env.endpoints_path()), _file_key(env.novel_path()), chapter)


@st.cache_resource(show_spinner=False)
def _cached_retriever(novel_key: str):
    canon, _why = load_canon(env.novel_path())
    return canon_retriever(canon) if canon is not None else None


# ----- settings -----------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class RoomSettings:
    """What the sidebar sets; stored with the conversation."""

    members: list[str]
    mutes: list[str] = dataclasses.field(default_factory=list)
    policy: str = "mention"
    banter: int = DEFAULT_BANTER
    delay: float = DEFAULT_DELAY_S
    person: str = DEFAULT_PERSON
    hints: bool = False
    chapter: int | None = None  # the point in the story (after chapter N); None: the whole journey

    @classmethod
    def load(cls, data: dict[str, Any], all_ids: list[str]) -> RoomSettings:
        fields = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        settings = cls(**{"members": list(all_ids), **values})
        settings.members = [m for m in settings.members if m in all_ids]
        settings.policy = settings.policy if settings.policy in POLICIES else "mention"
        return settings

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----- the session's state of one room -----------------------------------------------------------------------------
@dataclasses.dataclass
class RoomSession:
    """A room conversation in this browser session: the engine, the store ids of its entries, what runs now."""

    room: Room
    ids: list[int | None]
    plan: Plan | None = None
    live: Iterator[Event] | None = None  # the turn streaming now, kept across script runs
    speaker: str | None = None
    text: str = ""
    mode: str = "new"  # new | regenerate | continue
    target: int | None = None  # the stored message regenerated or continued
    next_turn_at: float = 0.0
    note: str | None = None  # a hint about the last message (a muted member named, manual policy)
    #: Held by whichever script run drives the room: Streamlit starts the run a click asks for while the run it
    #: interrupts is still winding down (that one lets go at its next drawing call, within about POLL_S).
    lock: threading.RLock = dataclasses.field(default_factory=threading.RLock)

    @property
    def running(self) -> bool:
        return self.live is not None or (self.plan is not None and not self.plan.done)


def _entry(m: StoredMessage) -> Entry:
    citation = Citation(m.chapter, m.said_to) if m.chapter is not None else None
    present = tuple(m.present) if m.present is not None else None
    return Entry(m.speaker, m.name, m.text, m.time, m.interrupted, citation=citation, present=present)


def _session(store: Store, conv: Conversation, settings: RoomSettings) -> RoomSession:
    key = f"room_{conv.id}"
    rs: RoomSession | None = st.session_state.get(key)
    if rs is None:
        stored = store.messages(conv.id)
        room = Room([], person=settings.person)
        room.entries = [_entry(m) for m in stored]
        rs = RoomSession(room, [m.id for m in stored])
        st.session_state[key] = rs
    return rs


def _sync(store: Store, conv: Conversation, rs: RoomSession) -> None:
    """Store the entries the engine added since the last sync (a regenerated or continued reply goes to its
    target message)."""
    entries = rs.room.entries
    while len(rs.ids) < len(entries):
        entry = entries[len(rs.ids)]
        text = entry.text
        chapter = entry.citation.chapter if entry.citation else None
        said_to = entry.citation.said_to if entry.citation else None
        target = next((m for m in store.messages(conv.id) if m.id == rs.target), None) if rs.target else None
        if target is not None and rs.mode == "regenerate" and entry.speaker == target.speaker:
            target.add_alternative(Alternative(text, chapter, said_to))
            target.interrupted = entry.interrupted
            store.update_message(conv.id, target)
            rs.ids.append(target.id)
            entries[len(rs.ids) - 1] = _entry(target)
        elif target is not None and rs.mode == "continue" and entry.speaker == target.speaker and rs.ids:
            joined = f"{target.text}{text}"
            target.alternatives[target.selected] = dataclasses.replace(
                target.alternatives[target.selected], text=joined
            )
            target.text, target.interrupted = joined, entry.interrupted
            store.update_message(conv.id, target)
            entries.pop()
            entries[-1] = _entry(target)
        else:
            present = list(entry.present) if entry.present is not None else None
            stored = store.add_message(
                conv.id,
                StoredMessage(
                    entry.speaker, entry.name, text, entry.time, chapter, said_to, entry.interrupted, present=present
                ),
            )
            rs.ids.append(stored.id)
            entries[len(rs.ids) - 1] = entry


def _end_live(store: Store, conv: Conversation, rs: RoomSession) -> None:
    """After a turn (finished, stopped or cut): store it; a regenerate that got nothing gets its old version back."""
    rs.live = None
    rs.speaker, rs.text = None, ""
    _sync(store, conv, rs)
    if rs.mode == "regenerate" and rs.target is not None and rs.target not in rs.ids:
        old = next((m for m in store.messages(conv.id) if m.id == rs.target), None)
        if old is not None:
            rs.room.entries.append(_entry(old))
            rs.ids.append(old.id)
    rs.mode, rs.target = "new", None


def _close_live(rs: RoomSession) -> None:
    """End the turn streaming now, keeping what was said (the engine marks it interrupted)."""
    if rs.live is not None:
        with contextlib.suppress(Exception):
            rs.live.close()  # type: ignore[attr-defined]


@contextlib.contextmanager
def _hold(rs: RoomSession) -> Iterator[bool]:
    """Take the room from the run this one interrupted; yields False when that run did not let go in time."""
    ok = rs.lock.acquire(timeout=HANDOVER_S)
    try:
        yield ok
    finally:
        if ok:
            rs.lock.release()


# ----- callbacks (run before the page is drawn) --------------------------------------------------------------------
def _current(conv_id: str) -> tuple[Store, Conversation, RoomSession] | None:
    from xiyou.ui.conversations import session_store

    store = session_store()
    conv = store.get(conv_id)
    rs = st.session_state.get(f"room_{conv_id}")
    return (store, conv, rs) if conv is not None and rs is not None else None


def _on_stop(conv_id: str) -> None:
    found = _current(conv_id)
    if found is None:
        return
    # the run streaming now ends its turn at its next piece and lets go; the page this click draws ends the plan
    found[2].room.stop()


def _stop(store: Store, conv: Conversation, rs: RoomSession) -> None:
    rs.room.stop()
    if rs.live is not None:
        for _ in rs.live:  # the engine notices the stop within its poll interval, keeps the partial reply
            pass
        _end_live(store, conv, rs)
    if rs.plan is not None and not rs.plan.done:
        for _ in rs.room.step(rs.plan):  # records the stop notice, ends the plan
            pass
    rs.plan = None


def _on_typing(conv_id: str) -> None:
    found = _current(conv_id)
    if found is not None:
        typing_started(found[2])


def typing_started(rs: RoomSession) -> None:
    """The person started typing: auto-banter ends at once, as with Stop. Answers to the person's own message
    (streaming or still to come) go on, with no banter after them."""
    plan = rs.plan
    if plan is None or plan.done:
        return
    if plan.queue or (rs.live is not None and not plan.banter_spoke):
        plan.banter_left = 0
    else:
        rs.room.stop()


def _on_continue(conv_id: str) -> None:
    found = _current(conv_id)
    if found is None:
        return
    _store, _conv, rs = found
    with _hold(rs) as ok:
        if ok and not rs.running:
            rs.plan = rs.room.plan_continue(max(rs.room.banter_turns, 1))
            rs.next_turn_at = 0.0


def _on_speak(conv_id: str, pick_key: str) -> None:
    found = _current(conv_id)
    pick = st.session_state.get(pick_key)
    if found is None or not pick:
        return
    store, conv, rs = found
    with _hold(rs) as ok:
        if ok:
            _close_live(rs)
            if rs.live is not None:
                _end_live(store, conv, rs)
            rs.plan = rs.room.plan([pick], banter=0)
            rs.next_turn_at = 0.0


def _on_reset(conv_id: str) -> None:
    found = _current(conv_id)
    if found is None:
        return
    store, conv, rs = found
    rs.room.stop()
    with _hold(rs) as ok:
        if ok:
            _close_live(rs)
            rs.live, rs.plan = None, None
            rs.room.reset()
            rs.ids.clear()
            rs.note = None
            store.replace_messages(conv.id, [])


# ----- sidebar ------------------------------------------------------------------------------------------------------
def sidebar(conv: Conversation, room: Room, lineup_: Lineup, saved: RoomSettings) -> RoomSettings:
    """Members, mute, status, policy, banter and pace, name, export, reset. Draws; returns the settings."""
    characters = load_characters()
    cid = conv.id
    with st.sidebar:
        st.header("🏯 在座 · Members")
        ids = st.multiselect(
            "谁在屋里 · Who is in the room",
            options=list(characters),
            default=saved.members,
            format_func=lambda c: f"{characters[c].emoji} {characters[c].name}",
            key=f"hub_members_{cid}",
        )
        mutes = []
        for member_id in ids:
            left, right = st.columns([2, 1], vertical_alignment="center")
            seat = lineup_.seats[member_id]
            muted = right.toggle(
                "静音", value=member_id in saved.mutes, key=f"hub_mute_{cid}_{member_id}", disabled=seat.backend is None
            )
            if muted:
                mutes.append(member_id)
            status = room.status.get(member_id)
            state = "muted" if muted else (status.state if status else "idle")
            who = characters[member_id]
            left.markdown(f"{STATUS_LIGHTS.get(state, '⚪')} {who.emoji} **{who.name}**")
            message = status.message if status and status.failing else None
            label = describe(seat.backend) if seat.backend else (seat.unavailable or "no backend")  # mode and model
            left.caption(render.safe_markdown(public_error(message or label)))
        hints = False
        if any(lineup_.seats[i].on_model for i in ids) and lineup_.novel is not None:
            hints = st.toggle(
                "原著提示 · canon hints", value=saved.hints, key=f"hub_hints_{cid}",
                help="Add matching canon passages to prompts.",
            )  # fmt: skip
        st.header("⚙️ 规则 · Turns")
        policy = st.selectbox(
            "发言规则 · Turn policy",
            POLICIES,
            index=POLICIES.index(saved.policy),
            format_func=lambda p: POLICY_LABELS[p],
            key=f"hub_policy_{cid}",
            help="  \n".join(f"**{POLICY_LABELS[p]}**: {POLICY_HELP[p]}" for p in POLICIES),
        )
        st.caption(POLICY_HELP[policy])
        banter = st.slider(
            "自动接话 · Auto-banter turns", 0, MAX_BANTER, saved.banter, key=f"hub_banter_{cid}",
            help="After the answers, the characters go on for up to this many turns (Stop ends it).",
        )  # fmt: skip
        delay = st.slider(
            "节奏 · Pace (s between turns)", 0.0, MAX_DELAY_S, float(saved.delay), 0.5, key=f"hub_delay_{cid}",
            help="Auto-banter waits this long between turns, so you can read, type or press Stop.",
        )  # fmt: skip
        chapter = st.number_input(
            "故事进度 · After chapter (0: the whole journey)", 0, 100, saved.chapter or 0, key=f"hub_chapter_{cid}",
            help="The characters know the story up to this chapter; canon lines come only from it and before.",
        )  # fmt: skip
        typed_name = st.text_input("你的称呼 · Your name", saved.person, key=f"hub_person_{cid}", max_chars=20)
        person = saved.person
        try:
            person = check_person_name(typed_name)
        except ValueError as e:
            st.warning(str(e), icon="✋")
        st.header("📜 记录 · Transcript")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        with st.container(horizontal=True):
            # the data is made when clicked (and the click does not rerun): export works while the room talks
            st.download_button(
                "⬇️ Markdown", lambda: transcript_markdown(room.entries, conv.title),
                file_name=f"xiyou-room-{stamp}.md", mime="text/markdown", disabled=not room.entries,
                key=f"hub_export_md_{cid}", on_click="ignore",
            )  # fmt: skip
            st.download_button(
                "⬇️ JSON lines", lambda: transcript_jsonl(room.entries),
                file_name=f"xiyou-room-{stamp}.jsonl", mime="application/jsonl", disabled=not room.entries,
                key=f"hub_export_jsonl_{cid}", on_click="ignore",
            )  # fmt: skip
        st.button("🧹 重新开始 · Reset", key=f"hub_reset_{cid}", width="stretch", on_click=_on_reset, args=(cid,))
    story_chapter = int(chapter) or None
    return RoomSettings(list(ids), mutes, policy, int(banter), float(delay), person, bool(hints), story_chapter)


def _apply(room: Room, lineup_: Lineup, settings: RoomSettings) -> None:
    current = {m.id: m for m in room.members if m.backend is lineup_.seats[m.id].backend}  # same point in the story
    members = []
    for i in settings.members:
        try:
            joined = membership(i, settings.chapter)
        except (KeyError, ValueError, OSError):
            joined = None
        if joined is not None and not joined.can_join:
            st.warning(joined.reason, icon="📖")  # not in the story yet at this chapter
            continue
        if joined is not None and settings.chapter is not None and joined.status != "pilgrim":
            st.caption(f"📖 {joined.reason}")
        members.append(current.get(i) or lineup_.member(i))
    retriever = _cached_retriever(_file_key(lineup_.novel)) if settings.hints else None
    for m in members:
        m.muted = m.id in settings.mutes
        m.retriever = retriever if m.on_model else None
    room.set_members(members)
    room.policy = settings.policy  # type: ignore[assignment]
    room.banter_turns = settings.banter
    room.person = settings.person
    room.chapter = settings.chapter


# ----- the transcript -----------------------------------------------------------------------------------------------
def _notice(notice: Notice) -> None:
    message = render.safe_markdown(public_error(notice.message))  # may quote a server's error body
    if notice.kind == "error":
        st.error(message, icon="🔴")
    elif notice.kind == "dropped":
        st.warning(message, icon="🤐")
    elif notice.kind == "truncated":
        st.warning(message, icon="✂️")
    else:
        st.info(message, icon="⏹️")


def _transcript(store: Store, conv: Conversation, rs: RoomSession) -> None:
    room = rs.room
    characters = load_characters()
    if not room.entries and not room.notices:
        names = "、".join(f"{m.emoji}{m.name}" for m in room.members) or "nobody (pick members in the sidebar)"
        st.info(f"在座：{names}。点名即可叫人回话，比如“八戒，你又偷懒？”；不点名时由发言规则决定谁答。")
    stored = {m.id: m for m in store.messages(conv.id)}
    notices = sorted(room.notices, key=lambda n: n.position)
    last_reply = rs.ids[-1] if room.entries and room.entries[-1].speaker != PERSON else None
    ni = 0
    for i, mid in enumerate(rs.ids):
        while ni < len(notices) and notices[ni].position <= i:
            _notice(notices[ni])
            ni += 1
        m = stored.get(mid)
        if m is None:
            continue
        if m.speaker == PERSON:
            avatar, label = PERSON_AVATAR, m.name
        else:
            character = characters.get(m.speaker) or story.speaker_character(m.speaker)
            avatar, label = (character.emoji, character.name) if character else ("🙂", m.name)
        messages.bubble(m, avatar=avatar, role=label, label=label, last_reply=mid == last_reply, busy=rs.running)
    for notice in notices[ni:]:
        _notice(notice)


def _stream_turn(rs: RoomSession) -> None:
    """Iterate the live turn, drawing it; resumes where a rerun left it."""
    room = rs.room
    slot = st.empty()
    body = None

    def open_bubble(speaker: str) -> Any:
        member = room.member(speaker)
        box = slot.container()
        with box.chat_message(member.name, avatar=member.emoji):
            st.markdown(f"**{member.name}**")
            return st.empty()

    if rs.speaker is not None and rs.text:
        body = open_bubble(rs.speaker)
        body.markdown(render.safe_markdown(rs.text) + " ▌")
    elif rs.speaker is not None:
        slot.caption(f"{room.member(rs.speaker).emoji} {room.member(rs.speaker).name} · {WAITING}")
    assert rs.live is not None
    drawn, shown = 0.0, rs.text  # the text is redrawn at most every DRAW_S (see xiyou.ui.chat.DRAW_S)
    for event in rs.live:
        if isinstance(event, TurnStarted):
            rs.speaker = event.speaker
            member = room.member(event.speaker)
            slot.caption(f"{member.emoji} {member.name} · {WAITING}")
        elif isinstance(event, Waiting) and body is None:
            member = room.member(event.speaker)
            slot.caption(f"{member.emoji} {member.name} 正在想… · thinking ({event.seconds:.0f} s)")
        elif isinstance(event, Delta | Waiting):
            if isinstance(event, Delta):
                if body is None:
                    body = open_bubble(event.speaker)
                rs.text += event.text
            if body is not None and rs.text != shown and time.monotonic() - drawn >= DRAW_S:
                body.markdown(render.safe_markdown(rs.text) + " ▌")  # never a raw （第X回） flash
                drawn, shown = time.monotonic(), rs.text
        elif isinstance(event, TurnEnded):
            if body is not None:
                render.markdown(event.entry.text, body)
        elif isinstance(event, MemberFailed | ReplyDropped | Stopped):
            if body is None:
                slot.empty()
            _notice(event.notice)


def _drive(store: Store, conv: Conversation, rs: RoomSession, delay: float) -> None:
    """Run the plan one turn per script run (so the buttons redraw between turns), paced by `delay`."""
    if rs.live is None:
        if rs.plan is None or rs.plan.done:
            rs.plan = None
            return
        wait = rs.next_turn_at - time.time()
        if wait > 0:
            pace = st.empty()
            while (left := rs.next_turn_at - time.time()) > 0:
                pace.caption(f"⏳ 下一位 {left:.1f} s 后开口 · next turn in {left:.1f} s (⏹️ Stop ends it)")
                if rs.room.wait_stopped(min(left, 0.1)):
                    return  # Stop was pressed: let go of the room at once (its callback ends the plan)
            pace.empty()
        rs.live = rs.room.step(rs.plan)
    _stream_turn(rs)
    _end_live(store, conv, rs)
    if rs.plan is not None and rs.plan.done:
        rs.plan = None
    rs.next_turn_at = time.time() + delay
    st.rerun()


# ----- the page -----------------------------------------------------------------------------------------------------
def _apply_message_action(store: Store, conv: Conversation, rs: RoomSession, action: messages.MessageAction) -> None:
    room = rs.room
    if action.message_id not in rs.ids:
        return
    if rs.running:  # any action ends what is running first, keeping what was said
        _stop(store, conv, rs)
    index = rs.ids.index(action.message_id)
    history = store.messages(conv.id)
    target = messages.apply_to(history, action)
    if target is None:
        return
    if action.kind in ("edit", "swipe"):
        store.update_message(conv.id, target)
        room.entries[index] = _entry(target)
    elif action.kind == "delete":
        store.update_message(conv.id, target)
        del room.entries[index], rs.ids[index]
        room.notices[:] = [
            dataclasses.replace(n, position=n.position - 1) if n.position > index else n for n in room.notices
        ]
    elif action.kind in ("regenerate", "continue") and target.speaker in {m.id for m in room.members}:
        if action.kind == "regenerate":
            del room.entries[index:], rs.ids[index:]
        rs.mode, rs.target = action.kind, target.id
        rs.plan = room.plan([target.speaker], banter=0)
        rs.next_turn_at = 0.0


def _controls(conv: Conversation, rs: RoomSession, starts: bool) -> None:
    """One compact row: Continue, Stop, who speaks now, Speak (fits a phone's width). `starts`: this run starts
    something (a message sent, a reply regenerated). Then the chat input's counter, and typing stops banter."""
    room = rs.room
    cid = conv.id
    running = starts or (rs.running and not room.stopping)
    active = [m for m in room.members if m.active]
    with st.container(horizontal=True, gap="small", vertical_alignment="center", key="hub_controls"):
        st.button(
            "▶️ 继续", key="hub_continue", on_click=_on_continue, args=(cid,),
            disabled=not active or running or room.policy == "manual",
            help="让他们接着聊 · let them go on" if room.policy != "manual" else "manual: pick who speaks (🎤)",
        )  # fmt: skip
        # never disabled (a disabled button's click is dropped by the server): red while something runs
        st.button(
            "⏹️ 停止", key="hub_stop", on_click=_on_stop, args=(cid,),
            type="primary" if running else "secondary", help="停止 · stop" if running else "nothing is running",
        )  # fmt: skip
        pick_key = f"hub_pick_{cid}"
        st.selectbox(
            "谁来说 · Who speaks",
            [m.id for m in active],
            format_func=lambda i: f"{room.member(i).emoji} {room.member(i).name}",
            key=pick_key,
            label_visibility="collapsed",
            width=116,
        )
        st.button(
            "🎤", key="hub_speak", on_click=_on_speak, args=(cid, pick_key), disabled=not active,
            help="请他现在说 · make him speak now (any policy)",
        )  # fmt: skip
    watch_chat_input(
        f"hub_typing_{cid}", MAX_INPUT_CHARS, watch=running, on_typing=functools.partial(_on_typing, cid),
        over_text=OVER_LIMIT,
    )  # fmt: skip


def room_page(store: Store, conv: Conversation) -> None:
    """The whole room page for the stored room `conv`."""
    st.title(f"🏯 {conv.title}")
    try:
        lineup_ = story.room_lineup(conv.settings)  # at the room's chapter, preferring its scene's (issue 16)
    except LineupError as e:
        st.error(f"The endpoints file is broken: {public_error(str(e))}", icon="🔴")
        st.stop()
    if not lineup_.available:
        st.markdown(OFFLINE_HELP)
        for characters, why in lineup_.problems():
            st.caption(f"{'、'.join(f'{c.emoji} {c.name}' for c in characters)}: {public_error(why)}")
        st.stop()
    st.caption(public_error(lineup_.describe()))
    plan = story.story_sidebar(store, conv)  # 📖 scene and narrator (issue 16)
    saved = RoomSettings.load(conv.settings, list(lineup_.seats))
    rs = _session(store, conv, saved)
    settings = sidebar(conv, rs.room, lineup_, saved)
    if settings != saved:
        store.save_settings(conv.id, {**conv.settings, **settings.to_json()})
    _apply(rs.room, lineup_, settings)
    story.apply(rs.room, conv, lineup_, plan)
    action = messages.take_action()
    no_members = not rs.room.members
    prompt = st.chat_input(
        "先在侧栏选人 · pick members in the sidebar first" if no_members
        else "对师徒说点什么（点名叫人）",  # short enough for a phone; the room's notice above gives an example
        key=f"hub_input_{conv.id}",
        disabled=no_members,
    )  # fmt: skip
    prompt = prompt.strip() if prompt else ""
    starts = bool(prompt and len(prompt) <= MAX_INPUT_CHARS) or (
        action is not None and action.kind in ("regenerate", "continue")
    )
    # the controls first, before waiting for the run this one interrupted: after Stop they show the real state
    # at once (the interrupted turn winds down meanwhile)
    with st.bottom:
        _controls(conv, rs, starts)
    with _hold(rs) as ok:
        if not ok:
            st.info("上一轮还在收尾，请稍候 · the previous turn is still winding down", icon="⏳")
            time.sleep(0.5)
            st.rerun()
        _page_body(store, conv, rs, settings, action, prompt)


def _page_body(
    store: Store,
    conv: Conversation,
    rs: RoomSession,
    settings: RoomSettings,
    action: messages.MessageAction | None,
    prompt: str,
) -> None:
    if rs.room.stopping and rs.running:
        _stop(store, conv, rs)  # Stop was pressed: end the turn (keeping what was said) and the plan
    _sync(store, conv, rs)
    if action is not None:
        _apply_message_action(store, conv, rs, action)
    if prompt:
        if len(prompt) > MAX_INPUT_CHARS:
            st.session_state[f"hub_draft_{conv.id}"] = prompt
        else:
            _say(store, conv, rs, prompt)
    log = st.container()
    with st.bottom:
        _draft(store, conv, rs)
    with log:
        _transcript(store, conv, rs)
        if rs.note:
            st.info(rs.note, icon="💡")
        _drive(store, conv, rs, settings.delay)


def _say(store: Store, conv: Conversation, rs: RoomSession, text: str) -> None:
    """The person says `text`: a reply in progress ends (kept as far as it got), the answers are planned."""
    room = rs.room
    _close_live(rs)
    if rs.live is not None:
        _end_live(store, conv, rs)
    room.say(text)
    _sync(store, conv, rs)
    rs.plan = room.plan()
    rs.next_turn_at = 0.0
    rs.note = None
    named = mentioned(text, [m.character for m in room.members])
    muted = [room.member(i).name for i in named if room.member(i).muted]
    unavailable = [room.member(i).name for i in named if room.member(i).backend is None]
    if muted:
        rs.note = f"{'、'.join(muted)} 静音中，不会回答 · muted: unmute in the sidebar to hear from them."
    elif unavailable:
        rs.note = f"{'、'.join(unavailable)} 现在无法说话 · cannot speak now (see the sidebar)."
    elif room.policy == "manual":
        rs.note = "指定模式：请在下方选人并按 🎤 说 · manual policy: pick who speaks below and press 🎤."


def _draft(store: Store, conv: Conversation, rs: RoomSession) -> None:
    """A message over the limit comes back here, with a counter, instead of being lost."""
    key = f"hub_draft_{conv.id}"
    if key not in st.session_state:
        return
    text = st.session_state[key]
    st.warning(f"消息太长了（{len(text)} / {MAX_INPUT_CHARS} 字），没有发送；删短后再发送 · too long, nothing lost.")
    edited = st.text_area("待发送 · Draft", text, key=f"{key}_box", height=120)
    st.caption(f"{len(edited)} / {MAX_INPUT_CHARS}")
    if st.button("发送 · Send", key=f"{key}_send", disabled=not 0 < len(edited.strip()) <= MAX_INPUT_CHARS):
        st.session_state.pop(key, None)
        st.session_state.pop(f"{key}_box", None)
        _say(store, conv, rs, edited)
        st.rerun()


def main() -> None:
    """The hub entry: the multi-page app, opened on a group room."""
    from xiyou.ui.app import main as app_main

    app_main()

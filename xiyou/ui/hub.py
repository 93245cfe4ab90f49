"""The hub page: 师徒四人 in one room with the person. `hub/app.py` calls `main()`.

Reads top to bottom as what the person sees: the sidebar (who is in the room, mute, status lights, turn policy,
auto-banter, export, reset), the transcript with each character's streaming bubble, the Continue / Stop
buttons, and the chat input. The room engine (xiyou.room) does the talking; this module only draws it.

One turn runs per script run (then `st.rerun()`), so the Stop button is live between turns; pressing it during
a turn interrupts that turn (Streamlit reruns the script at once) and the engine keeps what was already shown.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import streamlit as st

from xiyou import env
from xiyou.character import load_characters
from xiyou.room import (
    POLICIES,
    POLICY_HELP,
    POLICY_LABELS,
    Delta,
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
from xiyou.room.transcript import PERSON, Entry, Notice
from xiyou.ui import render
from xiyou.ui.chat import MAX_INPUT_CHARS, USER_AVATAR

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
#: How long a run waits for an interrupted run's turn to wind down (its stream ends at its next piece).
IDLE_WAIT_S = 5.0


def _file_key(path: Path | None) -> str:
    if path is None:
        return ""
    with contextlib.suppress(OSError):
        return f"{path}:{path.stat().st_mtime_ns}"
    return str(path)


@st.cache_resource(show_spinner="Reading the novel and setting up the characters…")
def _cached_lineup(endpoints_key: str, novel_key: str) -> Lineup:
    # keys carry the files' mtimes, so editing the endpoints file takes effect on the next run
    return build_lineup(None)


@st.cache_resource(show_spinner=False)
def _cached_retriever(novel_key: str):
    canon, _why = load_canon(env.novel_path())
    return canon_retriever(canon) if canon is not None else None


def _state() -> tuple[Room, Plan | None]:
    if "hub_room" not in st.session_state:
        st.session_state.hub_room = Room([], person=DEFAULT_PERSON)
        st.session_state.hub_plan = None
    return st.session_state.hub_room, st.session_state.hub_plan


def _set_plan(plan: Plan | None) -> None:
    st.session_state.hub_plan = plan


def _sidebar(room: Room, lineup: Lineup) -> tuple[bool, bool]:
    """Members, mute, status, policy, banter, name, export, reset. Returns (reset clicked, canon hints on)."""
    characters = load_characters()
    with st.sidebar:
        st.header("🏯 在座 · Members")
        ids = st.multiselect(
            "谁在屋里 · Who is in the room",
            options=list(characters),
            default=list(characters),
            format_func=lambda cid: f"{characters[cid].emoji} {characters[cid].name}",
            key="hub_members",
        )
        current = {m.id: m for m in room.members}
        members = []
        for cid in ids:
            member = current.get(cid) or lineup.member(cid)
            members.append(member)
        rows = []
        for member in members:
            left, right = st.columns([2, 1], vertical_alignment="center")
            member.muted = right.toggle("静音", key=f"hub_mute_{member.id}", disabled=member.backend is None)
            rows.append((member, left))
        room.set_members(members)
        for member, left in rows:
            status = room.status.get(member.id)
            light = STATUS_LIGHTS.get(status.state if status else "idle", "⚪")
            left.markdown(f"{light} {member.emoji} **{member.name}**")
            message = status.message if status and status.failing else None
            left.caption(render.safe_markdown(message or member.label))
        hints = False
        model_members = [m for m in members if m.backend is not None and lineup.seats[m.id].kind != "canon"]
        if model_members and lineup.novel is not None:
            hints = st.toggle("原著提示 · canon hints", key="hub_hints", help="Add matching canon passages to prompts.")
        st.header("⚙️ 规则 · Turns")
        room.policy = st.selectbox(
            "发言规则 · Turn policy",
            POLICIES,
            format_func=lambda p: POLICY_LABELS[p],
            key="hub_policy",
            help="  \n".join(f"**{POLICY_LABELS[p]}**: {POLICY_HELP[p]}" for p in POLICIES),
        )
        st.caption(POLICY_HELP[room.policy])
        room.banter_turns = st.slider(
            "自动接话 · Auto-banter turns",
            0,
            MAX_BANTER,
            DEFAULT_BANTER,
            key="hub_banter",
            help="After the answers, the characters go on for up to this many turns (Stop ends it).",
        )
        person = st.text_input("你的称呼 · Your name", DEFAULT_PERSON, key="hub_person", max_chars=12)
        room.person = person.strip() or DEFAULT_PERSON
        retriever = _cached_retriever(_file_key(lineup.novel)) if hints else None
        for member in members:
            member.retriever = retriever if lineup.seats[member.id].kind not in ("canon", "none") else None
        room.set_members(members)
        st.header("📜 记录 · Transcript")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        left, right = st.columns(2)
        left.download_button(
            "⬇️ Markdown",
            transcript_markdown(room.entries, PAGE_TITLE),
            file_name=f"xiyou-room-{stamp}.md",
            mime="text/markdown",
            disabled=not room.entries,
            key="hub_export_md",
        )
        right.download_button(
            "⬇️ JSON lines",
            transcript_jsonl(room.entries),
            file_name=f"xiyou-room-{stamp}.jsonl",
            mime="application/jsonl",
            disabled=not room.entries,
            key="hub_export_jsonl",
        )
        reset = st.button("🧹 重新开始 · Reset", key="hub_reset", use_container_width=True)
    return reset, hints


def _bubble(entry: Entry, room: Room) -> None:
    if entry.speaker == PERSON:
        avatar, label = PERSON_AVATAR, entry.name
    else:
        character = load_characters().get(entry.speaker)
        avatar, label = (character.emoji, character.name) if character else ("🙂", entry.name)
    with st.chat_message(label, avatar=avatar):
        st.markdown(f"**{label}**")
        render.markdown(entry.text)
        if entry.citation is not None:
            st.caption(f"📖 《西游记》{entry.citation.label()}")
        if entry.interrupted:
            st.caption("被打断 · interrupted")


def _notice(notice: Notice) -> None:
    message = render.safe_markdown(notice.message)  # may quote a server's error body
    if notice.kind == "error":
        st.error(message, icon="🔴")
    elif notice.kind == "dropped":
        st.warning(message, icon="🤐")
    else:
        st.info(message, icon="⏹️")


def _transcript(room: Room) -> None:
    if not room.entries and not room.notices:
        names = "、".join(f"{m.emoji}{m.name}" for m in room.members) or "nobody (pick members in the sidebar)"
        st.info(f"在座：{names}。点名即可叫人回话，比如“八戒，你又偷懒？”；不点名时由发言规则决定谁答。")
    notices = sorted(room.notices, key=lambda n: n.position)
    ni = 0
    for i, entry in enumerate(room.entries):
        while ni < len(notices) and notices[ni].position <= i:
            _notice(notices[ni])
            ni += 1
        _bubble(entry, room)
    for notice in notices[ni:]:
        _notice(notice)


def _run_step(room: Room, plan: Plan) -> None:
    """Run one turn of `plan`, streaming it into a bubble."""
    slot = None
    body = None
    text = ""
    with contextlib.closing(room.step(plan)) as events:
        for event in events:
            if isinstance(event, TurnStarted):
                member = room.member(event.speaker)
                slot = st.empty()
                slot.caption(f"{member.emoji} {member.name} 正在想… · thinking")
            elif isinstance(event, Waiting) and slot is not None and body is None:
                member = room.member(event.speaker)
                slot.caption(f"{member.emoji} {member.name} 正在想… · thinking ({event.seconds:.0f} s)")
            elif isinstance(event, Delta) and slot is not None:
                if body is None:
                    member = room.member(event.speaker)
                    box = slot.container()
                    with box.chat_message(member.name, avatar=member.emoji):
                        st.markdown(f"**{member.name}**")
                        body = st.empty()
                text += event.text
                body.markdown(render.safe_markdown(text) + " ▌")
            elif isinstance(event, TurnEnded):
                if body is not None:
                    render.markdown(event.entry.text, body)
            elif isinstance(event, MemberFailed | ReplyDropped | Stopped):
                if slot is not None and body is None:
                    slot.empty()
                _notice(event.notice)


def main() -> None:
    st.set_page_config(page_title=PAGE_TITLE, page_icon="🏯")
    st.title(f"🏯 {PAGE_TITLE}")
    try:
        lineup = _cached_lineup(_file_key(env.endpoints_path()), _file_key(env.novel_path()))
    except LineupError as e:
        st.error(f"The endpoints file is broken: {e}", icon="🔴")
        st.stop()
    if not lineup.available:
        st.markdown(OFFLINE_HELP)
        for seat in lineup.seats.values():
            st.caption(f"{seat.character.emoji} {seat.character.name}: {seat.why_not}")
        st.stop()
    st.caption(lineup.describe())
    room, plan = _state()
    # a rerun may start while the run it interrupted is still closing its turn: let that finish first
    room.wait_idle(IDLE_WAIT_S)
    reset, _hints = _sidebar(room, lineup)
    running = plan is not None and not plan.done
    prompt = st.chat_input("对师徒说点什么… 点名即可叫人，如“悟空”", key="hub_input", max_chars=MAX_INPUT_CHARS)
    log = st.container()
    cols = st.columns([1, 1, 2])
    go_on = cols[0].button("▶️ 继续 · Continue", key="hub_continue", disabled=not room.members or running)
    # never disabled: while a turn streams, the page shown is the one rendered before it (Stop must work there)
    stop = cols[1].button("⏹️ 停止 · Stop", key="hub_stop", type="primary" if running else "secondary")
    speak = None
    if room.policy == "manual":
        active = [m for m in room.members if m.active]
        with cols[2]:
            pick = st.selectbox(
                "谁来说 · Who speaks",
                [m.id for m in active],
                format_func=lambda cid: f"{room.member(cid).emoji} {room.member(cid).name}",
                key="hub_pick",
                label_visibility="collapsed",
            )
            if st.button("🎤 请他说 · Speak", key="hub_speak", disabled=not pick or running):
                speak = pick

    if reset:
        room.reset()
        _set_plan(None)
        plan = None
    elif stop and plan is not None:
        room.stop()  # a turn still streaming in the interrupted run ends now, keeping what was shown
        room.wait_idle(IDLE_WAIT_S)
        for _ in room.step(plan):  # records the stop notice, ends the plan
            pass
        _set_plan(None)
        plan = None
    elif prompt and prompt.strip():
        room.say(prompt)
        plan = room.plan()
        _set_plan(plan)
    elif go_on:
        plan = room.plan_continue(max(room.banter_turns, 1))
        _set_plan(plan)
    elif speak:
        plan = room.plan([speak], banter=0)
        _set_plan(plan)

    with log:
        _transcript(room)
        if plan is not None and not plan.done:
            _run_step(room, plan)
            if plan.done:
                _set_plan(None)
            st.rerun()

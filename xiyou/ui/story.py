"""The story in the group room (issue 16): a scene picker, "after chapter N", the narrator and its Narrate button.

The hub page calls, in this order:

- `room_lineup(settings)` instead of the plain lineup: canon members answer only with lines up to the room's
  chapter and prefer its scene's chapters (cached per chapter and scene);
- `story_sidebar(store, conv)` before it reads the room settings: draws the sidebar's 📖 Story section and
  drops from the stored members anyone the story has not brought in by chapter N, saying why (never a traceback);
- `apply(room, conv, lineup_, plan, hints)` after the members are applied: the room's chapter, setting and
  narrator; a scene just picked opens the transcript with the narrator's setting.

The settings (`chapter`, `scene`, `narrator`) are stored in the conversation's settings, next to the room's own.
Scene, chapter and narrator act in callbacks (before the page is drawn): they store the change and clear the
members' widget state, so the sidebar shows the stored members at once.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import streamlit as st

from xiyou import env
from xiyou.character import Character, load_characters
from xiyou.room import Room
from xiyou.room.lineup import Lineup, build_lineup, canon_retriever, load_canon
from xiyou.room.transcript import NARRATOR
from xiyou.store import Conversation, Store
from xiyou.story import LAST_CHAPTER, get_scene, list_scenes, membership
from xiyou.story.rooms import (
    StoryRoom,
    model_narrator_backend,
    narrator_member,
    open_scene,
    plan_story_room,
    scene_story,
)
from xiyou.ui.options import public_error

#: What a problem with the story settings can raise (an unknown scene, no novel to read the canon from…).
STORY_ERRORS = (ValueError, KeyError, OSError, RuntimeError)


@dataclasses.dataclass
class StorySettings:
    """The story settings of a room: after chapter N (None: the whole journey), a scene id, the narrator."""

    chapter: int | None = None
    scene: str | None = None
    narrator: bool = False

    @classmethod
    def load(cls, data: dict[str, Any]) -> StorySettings:
        chapter = data.get("chapter")
        chapter = chapter if isinstance(chapter, int) and 1 <= chapter <= LAST_CHAPTER else None
        scene = data.get("scene") if data.get("scene") in {s.id for s in list_scenes()} else None
        return cls(chapter, scene, bool(data.get("narrator", False)))

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _keys(cid: str) -> dict[str, str]:
    return {
        "members": f"hub_members_{cid}",  # the hub's own members widget
        "scene": f"hub_scene_{cid}",
        "story_on": f"hub_story_on_{cid}",
        "chapter": f"hub_chapter_{cid}",
        "narrator": f"hub_narrator_{cid}",
        "refused": f"hub_story_refused_{cid}",
        "open": f"hub_story_open_{cid}",
        "room_key": f"hub_story_key_{cid}",
    }


# ----- the lineup at the room's point in the story ------------------------------------------------------------------
@st.cache_resource(show_spinner="Setting up the characters at this point of the story…")
def _cached_lineup(endpoints_key: str, novel_key: str, chapter: int | None, first: int, last: int) -> Lineup:
    prefer = range(first, last + 1) if first else None
    return build_lineup(None, max_chapter=chapter, prefer_chapters=prefer)


def room_lineup(settings: dict[str, Any]) -> Lineup:
    """The hub's lineup, at the room's chapter and scene (raises LineupError as the hub's `lineup()` does)."""
    from xiyou.ui.hub import _file_key, lineup

    story = StorySettings.load(settings)
    if story.chapter is None and story.scene is None:
        return lineup()  # the whole journey: the app's shared lineup
    scene = get_scene(story.scene) if story.scene else None
    first, last = (scene.first, scene.last) if scene else (0, 0)
    chapter = story.chapter if story.chapter is not None else (scene.chapter if scene else None)
    return _cached_lineup(_file_key(env.endpoints_path()), _file_key(env.novel_path()), chapter, first, last)


@st.cache_resource(show_spinner=False)
def _cached_retriever(novel_key: str, chapter: int):
    canon, _why = load_canon(env.novel_path())
    return canon_retriever(canon, max_chapter=chapter) if canon is not None else None


# ----- who can be in the room at chapter N --------------------------------------------------------------------------
def admit(ids: list[str], chapter: int | None) -> tuple[list[str], list[str]]:
    """(the ids who can be in a room set after `chapter`, the reasons of those who cannot)."""
    if chapter is None:
        return list(ids), []
    kept, refused = [], []
    for cid in ids:
        try:
            m = membership(cid, chapter)
        except KeyError:  # not one of the four: the lineup reports it
            kept.append(cid)
            continue
        (kept if m.can_join else refused).append(cid if m.can_join else m.reason)
    return kept, refused


def _store_change(store: Store, cid: str, change: dict[str, Any], members: list[str] | None = None) -> None:
    """Store `change` (and `members`, dropping who cannot join by the chapter); clear the widgets it decides."""
    conv = store.get(cid)
    if conv is None:
        return
    settings = {**conv.settings, **change}
    keys = _keys(cid)
    if members is None:
        members = st.session_state.get(keys["members"], settings.get("members"))
    if members is not None:
        try:
            members, refused = admit(list(members), StorySettings.load(settings).chapter)
        except STORY_ERRORS as e:
            refused = [f"故事进度无法核对 · cannot check who has joined: {e}"]
        settings["members"] = members
        st.session_state[keys["refused"]] = refused
    store.save_settings(cid, settings)
    for k in ("members", "story_on", "chapter"):  # redrawn from the stored settings
        st.session_state.pop(keys[k], None)


def _on_scene(cid: str) -> None:
    from xiyou.ui.conversations import session_store

    keys = _keys(cid)
    picked = st.session_state.get(keys["scene"]) or None
    if picked is None:
        _store_change(session_store(), cid, {"scene": None})
        return
    scene = get_scene(picked)
    _store_change(session_store(), cid, {"scene": scene.id, "chapter": scene.chapter}, list(scene.present))
    st.session_state[keys["open"]] = scene.id  # the page posts the narrator's setting


def _on_chapter(cid: str) -> None:
    from xiyou.ui.conversations import session_store

    keys = _keys(cid)
    on = st.session_state.get(keys["story_on"])
    chapter = int(st.session_state.get(keys["chapter"], LAST_CHAPTER)) if on else None
    store = session_store()
    conv = store.get(cid)
    change: dict[str, Any] = {"chapter": chapter}
    scene = StorySettings.load(conv.settings).scene if conv is not None else None
    if scene and (chapter is None or chapter < get_scene(scene).first):
        change["scene"] = None  # the room leaves the scene when the story is set before it (or to the whole journey)
        st.session_state.pop(keys["scene"], None)
    _store_change(store, cid, change)


def _on_narrator(cid: str) -> None:
    from xiyou.ui.conversations import session_store

    store = session_store()
    conv = store.get(cid)
    if conv is not None:
        store.save_settings(cid, {**conv.settings, "narrator": bool(st.session_state.get(_keys(cid)["narrator"]))})


def _on_narrate(cid: str) -> None:
    """One line of narration, told now (canon narration is immediate); the page stores it."""
    from xiyou.ui.hub import _current, _hold

    found = _current(cid)
    if found is None:
        return
    rs = found[2]
    with _hold(rs) as ok:
        if ok and not rs.running and rs.room.narrator is not None:
            for _ in rs.room.narrate():
                pass


# ----- the sidebar section ------------------------------------------------------------------------------------------
def story_sidebar(store: Store, conv: Conversation) -> StoryRoom | None:
    """Draw the 📖 Story section; drop (and say why) stored or newly picked members the story has not brought in
    by the chapter (updates `conv.settings`). Returns the room's plan; None when the story settings cannot apply
    (the section says why)."""
    keys = _keys(conv.id)
    story = StorySettings.load(conv.settings)
    # someone just picked in the members widget, or stored before the chapter was set, who cannot be there yet
    members = st.session_state.get(keys["members"], conv.settings.get("members"))
    if members is not None and story.chapter is not None:
        try:
            kept, refused = admit(list(members), story.chapter)
        except STORY_ERRORS as e:
            kept, refused = list(members), [f"故事进度无法核对 · cannot check who has joined: {e}"]
        if kept != list(members):
            conv.settings["members"] = kept
            store.save_settings(conv.id, conv.settings)
            st.session_state.pop(keys["members"], None)
            st.session_state[keys["refused"]] = refused
    scenes = {s.id: s for s in list_scenes()}
    options = ["", *scenes]
    with st.sidebar:
        st.header("📖 故事 · Story")
        st.selectbox(
            "场景 · Scene",
            options,
            index=options.index(story.scene or ""),
            format_func=lambda s: f"{scenes[s].name}（{scenes[s].chapter_label}）" if s else "— 不设场景 · no scene —",
            key=keys["scene"],
            on_change=_on_scene,
            args=(conv.id,),
            help="在原著的一个场景里开场：在场的人、故事进度和场景由场景决定 · start in a scene of the novel",
        )
        on = st.toggle(
            "按故事进度 · Set a point in the story", value=story.chapter is not None, key=keys["story_on"],
            on_change=_on_chapter, args=(conv.id,),
            help="关闭：整个取经路 · off: the whole journey",
        )  # fmt: skip
        if on:
            st.slider(
                "第几回之后 · After chapter", 1, LAST_CHAPTER, story.chapter or LAST_CHAPTER, key=keys["chapter"],
                on_change=_on_chapter, args=(conv.id,),
                help="他们只知道到这一回为止的故事 · they know the story only up to this chapter",
            )  # fmt: skip
        for reason in st.session_state.get(keys["refused"], []):
            st.warning(public_error(reason), icon="🚪")
        plan = None
        try:
            plan = plan_story_room(conv.settings.get("members") or None, story.chapter, story.scene)
        except STORY_ERRORS as e:
            st.warning(public_error(str(e)), icon="📖")
        if plan is not None:
            st.caption(f"故事进度 · {plan.describe()}")
            characters = load_characters()
            for m in plan.memberships:
                if m.status == "before" and m.character in conv.settings.get("members", plan.ids):
                    st.caption(f"{characters[m.character].emoji} {m.reason}")
        narrator = st.toggle(
            "📜 旁白 · Narrator", value=story.narrator, key=keys["narrator"], on_change=_on_narrator, args=(conv.id,),
            help="说书人描写情景，从不替人物说话 · describes the scene, never speaks for the pilgrims",
        )  # fmt: skip
        st.button(
            "📜 旁白说一段 · Narrate", key=f"hub_narrate_{conv.id}", disabled=not narrator or plan is None,
            on_click=_on_narrate, args=(conv.id,), width="stretch",
        )  # fmt: skip
    return plan


# ----- the room -----------------------------------------------------------------------------------------------------
def apply(room: Room, conv: Conversation, lineup_: Lineup, plan: StoryRoom | None, hints: bool) -> None:
    """Set the room's chapter, setting and narrator from `plan`; rebuild its members on a change of chapter or
    scene (their canon stops at the chapter); post a just-picked scene's setting as the transcript's next line."""
    keys = _keys(conv.id)
    story = StorySettings.load(conv.settings)
    chapter = plan.chapter if plan is not None else None
    scene = plan.scene if plan is not None else None
    room_key = (chapter, scene.id if scene else None)
    if st.session_state.get(keys["room_key"]) != room_key:
        st.session_state[keys["room_key"]] = room_key
        room.set_members([dataclasses.replace(lineup_.member(m.id, m.retriever), muted=m.muted) for m in room.members])
        room.narrator = None
    room.chapter, room.setting = chapter, scene_story(scene)
    if hints and chapter is not None:
        from xiyou.ui.hub import _file_key

        retriever = _cached_retriever(_file_key(lineup_.novel), chapter)
        for m in room.members:
            m.retriever = retriever if m.on_model else None
    if not story.narrator or plan is None:
        room.narrator = None
    elif room.narrator is None:
        canon, why = load_canon(lineup_.novel)
        try:
            room.narrator = narrator_member(plan, canon, model_narrator_backend())
        except STORY_ERRORS as e:
            why = str(e)
        if room.narrator is None:
            st.sidebar.warning(f"旁白无法开口 · the narrator cannot speak: {public_error(why or '')}", icon="📜")
    opened = st.session_state.pop(keys["open"], None)
    if plan is not None and scene is not None and opened == scene.id:
        open_scene(room, plan)


def speaker_character(speaker: str) -> Character | None:
    """The narrator's Character for its lines in the transcript (its name and 📜); None for anyone else."""
    if speaker != NARRATOR:
        return None
    from xiyou.story.narrator import narrator_character

    return narrator_character()

"""The story in the group room (issue 16): a scene picker and the narrator with its Narrate button. The point in
the story (after chapter N) is the room's own setting (`RoomSettings.chapter`, which also leaves out, saying why,
whoever the story has not brought in by then); a scene sets it.

The hub page calls, in this order:

- `room_lineup(settings)` for its lineup: at the room's chapter (the hub's `lineup(chapter)`), and in a scene one
  whose canon members prefer the scene's chapters;
- `story_sidebar(store, conv)` before it reads the room settings: draws the sidebar's 📖 Scene section; a chapter
  set before the scene (or to the whole journey) leaves the scene; a scene picked in a room where a conversation
  is going on starts a new room for it (the old one stays in the conversation list, unchanged);
- `apply(room, conv, lineup_, plan)` after its own `_apply`: the room's setting, narrator and chapter-bounded canon
  hints; a scene just picked opens the transcript with the narrator's setting.

The settings (`scene`, `narrator`; `chapter` and `members` when a scene is picked) are stored in the
conversation's settings. Scene and narrator act in callbacks (before the page is drawn): they store the change and
set the hub's widgets it decides (members, chapter) to the stored values.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import streamlit as st

from xiyou import env
from xiyou.character import Character
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
        "members": f"hub_members_{cid}",  # the hub's own widgets a scene decides
        "chapter": f"hub_chapter_{cid}",
        "scene": f"hub_scene_{cid}",
        "narrator": f"hub_narrator_{cid}",
        "open": f"hub_story_open_{cid}",
        "room_key": f"hub_story_key_{cid}",
    }


# ----- the lineup at the room's point in the story ------------------------------------------------------------------
@st.cache_resource(show_spinner="Setting up the characters in the scene…")
def _cached_lineup(endpoints_key: str, novel_key: str, chapter: int | None, first: int, last: int) -> Lineup:
    return build_lineup(None, max_chapter=chapter, prefer_chapters=range(first, last + 1))


def room_lineup(settings: dict[str, Any]) -> Lineup:
    """The hub's lineup at the room's chapter; in a scene, canon members prefer its chapters. Raises LineupError."""
    from xiyou.ui.hub import _file_key, lineup

    story = StorySettings.load(settings)
    if story.scene is None:
        return lineup(story.chapter)
    scene = get_scene(story.scene)
    chapter = story.chapter if story.chapter is not None else scene.chapter
    return _cached_lineup(
        _file_key(env.endpoints_path()), _file_key(env.novel_path()), chapter, scene.first, scene.last
    )


@st.cache_resource(show_spinner=False)
def _cached_retriever(novel_key: str, chapter: int):
    canon, _why = load_canon(env.novel_path())
    return canon_retriever(canon, max_chapter=chapter) if canon is not None else None


# ----- callbacks (run before the page is drawn) --------------------------------------------------------------------
def _save(cid: str, change: dict[str, Any], widgets: dict[str, Any] | None = None) -> None:
    """Store `change` in the conversation's settings; set the `widgets` it decides (by `_keys` name) to show it
    (set, not cleared: a cleared widget keeps the old value in the browser, which sends it back)."""
    from xiyou.ui.conversations import session_store

    store = session_store()
    conv = store.get(cid)
    if conv is None:
        return
    store.save_settings(cid, {**conv.settings, **change})
    for name, value in (widgets or {}).items():
        st.session_state[_keys(cid)[name]] = value


def _on_scene(cid: str) -> None:
    """A scene picked: in a room where nothing has been said yet (at most an earlier scene's setting) it is set
    there; in a room with a conversation going on it starts a room of its own (the same room settings, the
    scene's members and chapter), which the page opens, and this one stays as it was in the conversation list.
    "No scene" leaves the scene, the transcript as it is."""
    from xiyou.ui.conversations import session_store, show

    keys = _keys(cid)
    picked = st.session_state.get(keys["scene"]) or None
    if picked is None:
        _save(cid, {"scene": None})
        return
    store = session_store()
    conv = store.get(cid)
    if conv is None:
        return
    scene = get_scene(picked)
    members = list(scene.present)
    change = {"scene": scene.id, "chapter": scene.chapter, "members": members}
    stored = store.messages(cid)
    if any(m.speaker != NARRATOR for m in stored):
        st.session_state[keys["scene"]] = StorySettings.load(conv.settings).scene or ""  # this room keeps its own
        new = store.create("room", scene.name, {**conv.settings, **change})
        st.session_state[_keys(new.id)["open"]] = scene.id  # the new room opens with the narrator's setting
        show(new.id)
        st.toast(f"📖 {scene.name}：在新的群聊里开场，原来的对话留在对话列表里 · "
                 "the scene starts in a new room; the earlier conversation stays in the list")  # fmt: skip
        return
    if stored:  # only an earlier scene's setting: the new scene replaces it (as the room's 🧹 Reset does)
        from xiyou.ui.hub import _on_reset

        _on_reset(cid)
        store.replace_messages(cid, [])  # also when this session has not drawn the room yet
    _save(cid, change, {"members": members, "chapter": scene.chapter})
    st.session_state[keys["open"]] = scene.id  # the page posts the narrator's setting


def _on_narrator(cid: str) -> None:
    _save(cid, {"narrator": bool(st.session_state.get(_keys(cid)["narrator"]))})


def _on_narrate(cid: str) -> None:
    """One line of narration, told now (the canon's narration is immediate); the page stores it."""
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
def _chapter_now(conv: Conversation) -> int | None:
    """The room's chapter as the hub's chapter box has it in this run (0 there: the whole journey)."""
    typed = st.session_state.get(_keys(conv.id)["chapter"])
    if typed is None:
        return StorySettings.load(conv.settings).chapter
    return int(typed) or None


def story_sidebar(store: Store, conv: Conversation) -> StoryRoom | None:
    """Draw the 📖 Scene section (scene picker, narrator, Narrate). A chapter set before the room's scene, or to the
    whole journey, leaves the scene (stored; updates `conv.settings`). Returns the room's story plan, None when the
    story settings cannot apply (the section says why)."""
    keys = _keys(conv.id)
    story = StorySettings.load(conv.settings)
    chapter = _chapter_now(conv)
    if story.scene is not None and (chapter is None or chapter < get_scene(story.scene).first):
        story.scene = None
        conv.settings["scene"] = None
        store.save_settings(conv.id, conv.settings)
        st.session_state[keys["scene"]] = ""  # before the picker is drawn
    scenes = {s.id: s for s in list_scenes()}
    options = ["", *scenes]
    plan = None
    with st.sidebar:
        st.header("📖 场景 · Scene")
        st.selectbox(
            "在原著的场景里开场 · Start in a scene",
            options,
            index=options.index(story.scene or ""),
            format_func=lambda s: f"{scenes[s].name}（{scenes[s].chapter_label}）" if s else "— 不设场景 · no scene —",
            key=keys["scene"],
            on_change=_on_scene,
            args=(conv.id,),
            help="在场的人、故事进度和场景由场景决定 · members, chapter and setting come from the scene",
        )
        try:
            joined = [
                i for i in conv.settings.get("members") or scenes_or_all(story) if membership(i, chapter).can_join
            ]
            plan = plan_story_room(joined or None, chapter, story.scene)
        except STORY_ERRORS as e:
            st.warning(public_error(str(e)), icon="📖")
        if plan is not None and plan.scene is not None:
            st.caption(f"📍 {plan.scene.place} · {plan.scene.chapter_label} · after chapter {plan.chapter}")
        narrator = st.toggle(
            "📜 旁白 · Narrator", value=story.narrator, key=keys["narrator"], on_change=_on_narrator, args=(conv.id,),
            help="说书人描写情景，从不替人物说话 · describes the scene, never speaks for the pilgrims",
        )  # fmt: skip
        st.button(
            "📜 旁白说一段 · Narrate", key=f"hub_narrate_{conv.id}", disabled=not narrator or plan is None,
            on_click=_on_narrate, args=(conv.id,), width="stretch",
        )  # fmt: skip
    return plan


def scenes_or_all(story: StorySettings) -> tuple[str, ...]:
    """The members a room has before any are picked: its scene's pilgrims, else the four."""
    from xiyou.names import CHARACTER_IDS

    return get_scene(story.scene).present if story.scene else tuple(CHARACTER_IDS)


# ----- the room -----------------------------------------------------------------------------------------------------
def apply(room: Room, conv: Conversation, lineup_: Lineup, plan: StoryRoom | None) -> None:
    """The room's setting and narrator from `plan`, canon hints only up to its chapter; a scene just picked posts
    its setting as the narrator's line."""
    keys = _keys(conv.id)
    scene = plan.scene if plan is not None else None
    room.setting = scene_story(scene)
    room.prefer_chapters = scene.chapters if scene is not None else None  # persona members' examples
    if plan is not None and plan.chapter is not None:
        from xiyou.ui.hub import _file_key

        retriever = _cached_retriever(_file_key(lineup_.novel), plan.chapter)
        for m in room.members:
            if m.retriever is not None:
                m.retriever = retriever
    room_key = (plan.chapter, scene.id if scene else None) if plan is not None else None
    if st.session_state.get(keys["room_key"]) != room_key:  # the narrator tells this point of the story
        st.session_state[keys["room_key"]] = room_key
        room.narrator = None
    if not StorySettings.load(conv.settings).narrator or plan is None:
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

"""Rooms set in the story: after chapter N, or in one of the canonical scenes.

`plan_story_room(ids, chapter, scene)` decides the members and the chapter (a scene gives both, and its
setting) and refuses a member the story has not brought in yet (`MembershipError`, with the reason).
`story_context(cid, chapter)` is the story so far and what he cannot know (xiyou.prompts puts it in every system
prompt of a conversation set after chapter N), `scene_story(scene)` what the prompt says of a scene (a room's
`setting`); `narrator_member(...)` the narrator; `open_scene(room, plan)` posts the narrator's setting as the
transcript's first line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from xiyou.names import CHARACTER_IDS
from xiyou.story.membership import Membership, check_members
from xiyou.story.scenes import Scene, get_scene
from xiyou.story.timeline import StoryError, check_chapter

#: Token budget of the story so far in a model member's system prompt.
STORY_BUDGET = 400


@dataclasses.dataclass(frozen=True)
class StoryRoom:
    """Who is in the room, at which point of the story, in which scene (None: none)."""

    ids: tuple[str, ...]
    chapter: int | None
    scene: Scene | None
    memberships: tuple[Membership, ...]

    @property
    def chapters(self) -> range:
        """The chapters the room's retrieval prefers and its narrator tells: the scene's, else chapter N."""
        if self.scene is not None:
            return self.scene.chapters
        n = self.chapter or 1
        return range(n, n + 1)

    def describe(self) -> str:
        if self.scene is not None:
            return (
                f"scene {self.scene.id} ({self.scene.name}, {self.scene.chapter_label}), after chapter {self.chapter}"
            )
        return f"after chapter {self.chapter}" if self.chapter is not None else "the whole journey"


def plan_story_room(
    ids: Sequence[str] | None = None, chapter: int | None = None, scene: str | Scene | None = None, canon=None
) -> StoryRoom:
    """Members and chapter of a room. A scene gives its pilgrims (unless `ids` are given) and its last chapter
    (unless `chapter` is given, which must not be before the scene). StoryError / MembershipError say what to
    change."""
    chapter = check_chapter(chapter)
    the_scene = get_scene(scene) if isinstance(scene, str) else scene
    if the_scene is not None:
        if chapter is not None and chapter < the_scene.first:
            raise StoryError(
                f"the scene {the_scene.id} happens in {the_scene.chapter_label}; chapter {chapter} is before it "
                f"(leave the chapter out, or give {the_scene.first} or later)"
            )
        chapter = chapter if chapter is not None else the_scene.chapter
    chosen = tuple(ids) if ids else (the_scene.present if the_scene is not None else CHARACTER_IDS)
    pilgrims = [cid for cid in chosen if cid in CHARACTER_IDS]  # an unknown id is the lineup's to report
    return StoryRoom(chosen, chapter, the_scene, tuple(check_members(pilgrims, chapter, canon)))


def story_context(cid: str, chapter: int | None, budget: int = STORY_BUDGET, novel=None) -> str:
    """The story so far and what `cid` cannot know, for his system prompt ("" for the whole journey)."""
    if chapter is None:
        return ""
    from xiyou.story.knowledge import knowledge_limits
    from xiyou.story.timeline import story_so_far

    return "\n".join(p for p in (story_so_far(chapter, budget, novel=novel), knowledge_limits(cid, chapter)) if p)


def scene_story(scene: Scene | None) -> str | None:
    """What a speaker's system prompt says of the scene (`xiyou.prompts.system_prompt(story=...)`; a room passes
    it as its `setting`): the scene, the place and the situation. None without a scene."""
    if scene is None:
        return None
    return f"【此刻的场景】{scene.name} · {scene.place}：{scene.situation}"


def model_narrator_backend():
    """The narrator's model in persona mode: the persona shortcut's (`XIYOU_API_BASE_URL` + `XIYOU_API_MODEL`),
    prompted with the narrator's own instruction (never a pilgrim's persona); None when it is not set. Raises
    ValueError (EndpointError, BackendError) with what to fix when it is set wrongly."""
    from xiyou.backends.factory import make_backend
    from xiyou.endpoints import shortcut_endpoint
    from xiyou.story.narrator import narrator_character

    endpoint = shortcut_endpoint()
    if endpoint is None:
        return None
    backend = make_backend(narrator_character(), kind="openai", endpoint=endpoint)
    backend.prompt_mode = "meta"  # the narrator file's instruction as it is, not a persona built for a pilgrim
    return backend


def narrator_member(plan: StoryRoom, canon=None, backend=None):
    """The narrator for `plan`'s room: `backend` (an LLM backend) prompted as the narrator, else the canon's
    narration passages of the room's chapters (from the scene's first line on). None without either."""
    from xiyou.room.member import Member
    from xiyou.story.narrator import CanonNarration, NarratorBackend, narrator_character

    character = narrator_character()
    if backend is not None:  # the room gives it the story so far and the scene, as it gives every speaker
        return Member(character, NarratorBackend(backend), timeout=120.0)
    if canon is None:
        return None
    start = None
    if plan.scene is not None and plan.scene.opening:
        start = (plan.scene.opening[0].chapter, plan.scene.opening[0].offset)
    return Member(character, CanonNarration(canon.novel, plan.chapters, start), timeout=30.0)


def open_scene(room, plan: StoryRoom):
    """Post the scene's setting as the narrator's first line (nothing without a scene); returns the entry."""
    if plan.scene is None:
        return None
    return room.post_narration(plan.scene.setting())

"""Rooms set in the story: after chapter N, or in one of the canonical scenes.

`plan_story_room(ids, chapter, scene)` decides the members and the chapter (a scene gives both, and its
setting) and refuses a member the story has not brought in yet (`MembershipError`, with the reason).
`story_retriever(chapter, ...)` gives model members the story so far and what they cannot know (and, with a
canon, canon examples only from chapters up to N); `narrator_member(...)` the narrator; `open_scene(room, plan)`
posts the narrator's setting as the transcript's first line.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from xiyou.canon.exchanges import CHARACTER_IDS
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


Retriever = Callable[[Any, Sequence[Any]], list[Any]]


def story_retriever(chapter: int | None, scene: Scene | None = None, base: Retriever | None = None) -> Retriever | None:
    """A room retriever for model members: `base` (e.g. canon hints limited to chapter N) and then the story so
    far, the scene, and what the speaker cannot know, appended to his system prompt. None when there is nothing
    to add."""
    if chapter is None and scene is None:
        return base

    def retrieve(character: Any, messages: Sequence[Any]) -> list[Any]:
        out = base(character, messages) if base is not None else [dict(m) for m in messages]
        extra = story_context(character.id, chapter)
        if scene is not None:
            extra = f"{extra}\n【此刻的场景】{scene.name} · {scene.place}：{scene.situation}".strip()
        if extra and out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{extra}"}
        return out

    return retrieve


def narrator_member(plan: StoryRoom, canon=None, backend=None):
    """The narrator for `plan`'s room: `backend` (an LLM backend) prompted as the narrator, else the canon's
    narration passages of the room's chapters (from the scene's first line on). None without either."""
    from xiyou.room.member import Member
    from xiyou.story.narrator import CanonNarration, NarratorBackend, narrator_character

    character = narrator_character()
    if backend is not None:
        from xiyou.story.timeline import story_so_far

        story = story_so_far(plan.chapter, STORY_BUDGET) if plan.chapter is not None else ""
        return Member(character, NarratorBackend(backend, story, plan.scene), timeout=120.0)
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

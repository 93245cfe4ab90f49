"""A point in the story: the timeline, who is on the pilgrimage by chapter N, what a character may know, scenes.

- `story_so_far(chapter, budget_tokens)`: the story up to chapter N, compressed to a token budget;
- `membership(cid, chapter)` / `joined_by(cid, chapter)`: derived from the canon (see `membership.py`);
- `knowledge_limits(cid, chapter)`: the persona prompt's sentence on what he cannot know;
- `list_scenes()` / `get_scene(id)`: the scene catalogue (`scenes.toml`).
"""

from xiyou.story.knowledge import knowledge_limits
from xiyou.story.membership import Membership, MembershipError, check_members, joined_by, membership, milestones
from xiyou.story.scenes import Scene, get_scene, list_scenes, validate_scenes
from xiyou.story.timeline import LAST_CHAPTER, StoryError, check_chapter, story_so_far

__all__ = [
    "LAST_CHAPTER",
    "Membership",
    "MembershipError",
    "Scene",
    "StoryError",
    "check_chapter",
    "check_members",
    "get_scene",
    "joined_by",
    "knowledge_limits",
    "list_scenes",
    "membership",
    "milestones",
    "story_so_far",
    "validate_scenes",
]

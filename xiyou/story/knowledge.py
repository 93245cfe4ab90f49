"""What a character may know at a point in the story: the sentence the persona prompt carries.

`knowledge_limits(cid, chapter)` says that everything after chapter N is unknown to him (asked about it, he
says in character that he has not heard of it, never invents or foretells it), and, before he has joined the
pilgrimage, that he is who the story so far makes him (not his later self). "" for the whole journey (no limit).
"""

from __future__ import annotations

from xiyou.canon.loader import chapter_ref
from xiyou.story.membership import membership

#: Before he joins: who he is comes from the story so far alone (naming his later role would tell the future).
BEFORE = "此时你还没有走上日后的路：你是谁、身在何处、认识哪些人，都以到这一回为止的故事为准，不要说起那以后的身份。"


def knowledge_limits(cid: str, chapter: int | None) -> str:
    """The persona prompt's sentence on what `cid` cannot know at `chapter` ("" when chapter is None). Any id
    works (the narrator's too); one of the four before he joins also hears that he is his earlier self."""
    from xiyou.names import CHARACTER_IDS
    from xiyou.story.timeline import check_chapter

    check_chapter(chapter)
    m = membership(cid, chapter) if cid in CHARACTER_IDS else None  # the narrator, say: no membership
    if chapter is None:
        return ""
    ref = chapter_ref(chapter)
    text = (
        f"【你所知道的】故事此刻停在{ref}结束之时。{ref}以后才发生的事、才出现的人物、妖怪、地方和宝物，你一概不知："
        "有人问起，就照你的口吻说没听说过、不知道，不要编造，也不要预言将来。"
    )
    if m is not None and m.status == "before":
        text += BEFORE
    return text

"""A reply of the canon mode is one of the character's lines in the novel: the reply files keep where it stands
(`chapter:offset` of its opening quote), never its text, and the text is read from the novel in place."""

from __future__ import annotations


def _key(text: str) -> str:
    return text.replace("\n", " ")


def locate(canon, character_id: str, text: str) -> str:
    """`chapter:offset` of `character_id`'s line `text` in the novel; ValueError when it is not one of his lines."""
    for u in canon.utterances:
        if u.speaker == character_id and _key(u.text) == _key(text):
            return f"{u.chapter}:{u.offset}"
    raise ValueError(f"not a line of {character_id} in the novel: {text[:40]!r}")


def text_at(canon, locator: str) -> str:
    """The line at `chapter:offset` (see `locate`), read from the novel."""
    chapter, offset = (int(x) for x in locator.split(":"))
    for u in canon.utterances:
        if u.chapter == chapter and u.offset == offset:
            return _key(u.text)
    raise ValueError(f"no line at {locator} in this copy of the novel")

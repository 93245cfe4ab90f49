"""Who is named in a line: any name or alias of a character, in the order they are first named.

Besides the aliases of the character files, the forms of address the pilgrims use for each other count too
(八戒 calls 悟空 猴哥, 沙僧 calls 八戒 二师兄): in the room these are how one character hands the word to another.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from xiyou.character import Character

#: How the pilgrims address each other, on top of the aliases of the character files.
FORMS_OF_ADDRESS: dict[str, tuple[str, ...]] = {
    "wukong": ("猴哥", "大师兄", "师兄", "大哥"),
    "bajie": ("二师兄", "二哥", "八戒哥"),
    "wujing": ("师弟", "三师弟", "沙兄弟"),
}


@functools.lru_cache(maxsize=64)
def _pattern(names: tuple[tuple[str, str], ...]) -> re.Pattern[str]:
    # Longest alias first, so "猪八戒" wins over "八戒" and "美猴王" over "猴王" at the same position.
    ordered = sorted(names, key=lambda pair: -len(pair[0]))
    return re.compile("|".join(re.escape(alias) for alias, _ in ordered))


def mentioned(text: str, characters: Iterable[Character]) -> list[str]:
    """Ids of the characters named in `text` (by display name or any alias), in order of first mention."""
    chars = list(characters)
    if not text or not chars:
        return []
    owner: dict[str, str] = {}
    for c in chars:
        for alias in c.names:
            owner.setdefault(alias, c.id)
    for c in chars:  # forms of address never override a file's alias
        for alias in FORMS_OF_ADDRESS.get(c.id, ()):
            owner.setdefault(alias, c.id)
    pattern = _pattern(tuple(sorted(owner.items())))
    found: list[str] = []
    for match in pattern.finditer(text):
        cid = owner[match.group(0)]
        if cid not in found:
            found.append(cid)
    return found

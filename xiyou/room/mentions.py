"""Who is named in a line: any name of a character, in the order they are first named.

The names are those of the character files, read through `xiyou.names.all_names`: aliases, forms of address (八戒
calls 悟空 猴哥, 沙僧 calls 八戒 二师兄: in the room these are how one character hands the word to another) and
English names ("Wukong", "Monkey King": case-insensitive, whole words only). A plural or generic form is nobody in
particular: "各位师父好" and "师父们" call no one.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable

from xiyou.character import Character
from xiyou.names import PLURAL_AFTER, PLURAL_BEFORE, all_names

_PLURAL_BEFORE = re.compile(f"(?:{'|'.join(map(re.escape, PLURAL_BEFORE))})$")


def _key(name: str) -> str:
    return re.sub(r"\s+", " ", name).casefold() if name.isascii() else name


def _alternative(name: str) -> str:
    if not name.isascii():
        return re.escape(name)
    words = r"\s+".join(re.escape(w) for w in name.split())
    return rf"(?<![A-Za-z0-9]){words}(?![A-Za-z0-9])"


@functools.lru_cache(maxsize=64)
def _pattern(names: tuple[str, ...]) -> re.Pattern[str]:
    # Longest name first, so "猪八戒" wins over "八戒" and "美猴王" over "猴王" at the same position.
    ordered = sorted(names, key=lambda n: -len(n))
    return re.compile("|".join(_alternative(n) for n in ordered), re.IGNORECASE)


def mentioned(text: str, characters: Iterable[Character]) -> list[str]:
    """Ids of the characters named in `text` (by any name, form of address or English name), in order of first
    mention. Earlier characters keep a name two of them share."""
    chars = list(characters)
    if not text or not chars:
        return []
    owner: dict[str, str] = {}
    for c in chars:
        for name in all_names(c):
            owner.setdefault(_key(name), c.id)
    pattern = _pattern(tuple(sorted(owner)))
    found: list[str] = []
    for match in pattern.finditer(text):
        if _PLURAL_BEFORE.search(text, 0, match.start()) or text.startswith(PLURAL_AFTER, match.end()):
            continue  # 各位师父, 师父们: nobody in particular
        cid = owner[_key(match.group(0))]
        if cid not in found:
            found.append(cid)
    return found

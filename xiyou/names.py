"""Every name of the four pilgrims, read once from the character files (`xiyou/characters/*.toml`).

Each file holds, for its character:
- `name` and `aliases`: every name he goes by (孙悟空, 行者, 大圣 …);
- `forms_of_address`: how others address him (师父, 大师兄, 呆子 …);
- `narration_names`: names the narration gives him besides the aliases (孙长老, 三藏法师 …);
- `english_names`: how English texts name him ("Monkey King", "Tripitaka" …);
- `ambiguous_in_narration` and `narration_chapters`: aliases that do not (or only in some chapters) attribute speech
  in the narration, with the reason;
- `unnamed_scenes`: scenes before the novel names him, where the narration calls him by what he is (那怪, 那妖 …).

Every lookup of a name goes through this module: the canon's speaker attribution, the room's mentions and guards,
the pipeline's speaker labels, the canon backend's query. Nothing here knows a name by heart.
"""

from __future__ import annotations

import functools
import re
import unicodedata

from xiyou.character import ChapterRule, Character, UnnamedScene, character_ids, load_characters

#: The four character ids, in their `order`: sanzang, wukong, bajie, wujing.
CHARACTER_IDS: tuple[str, ...] = tuple(character_ids())

#: What the pilgrims call a lay person (the room's default name for the person): a vocative like the names.
GENERIC_VOCATIVES: tuple[str, ...] = ("施主", "女施主", "老施主", "各位", "诸位", "列位", "众位", "大家")
#: Before a name these make it plural or generic (各位师父, 两位长老): not a call to one of the four.
PLURAL_BEFORE: tuple[str, ...] = ("各位", "诸位", "列位", "众位", "几位", "二位", "两位", "三位", "四位", "众")
#: After a name this makes it plural (师父们).
PLURAL_AFTER = "们"

#: Invisible characters (zero-width spaces and joiners, word joiner, BOM, bidi marks, soft hyphen): they hide a name
#: from the eye and from matching, so every lookup drops them.
INVISIBLE = frozenset(
    "\u00ad\u180e\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2060\u2061\u2062\u2063\u2064\ufeff"
)
_INVISIBLE = re.compile(f"[{''.join(sorted(INVISIBLE))}]")
_LABEL_PREFIXES = ("那", "这", "老")  # 那呆子 -> 呆子, 那行者 -> 行者 (labels written by an LLM, narration)


def _character(cid: str) -> Character:
    from xiyou.character import get_character

    return get_character(cid)


def display_name(cid: str) -> str:
    """The name shown for the character: 孙悟空."""
    return _character(cid).name


def aliases(cid: str) -> tuple[str, ...]:
    """Every name the character goes by: display name first, then the aliases of the file."""
    return _character(cid).names


def forms_of_address(cid: str) -> tuple[str, ...]:
    """How others address him (师父, 大师兄, 呆子 …)."""
    return _character(cid).forms_of_address


def narration_names(cid: str) -> tuple[str, ...]:
    """Names that attribute speech to him when they are the subject of the narration: his aliases less the
    ambiguous ones, then the narration-only names. Some hold only in some chapters: see `names_him_in`."""
    c = _character(cid)
    safe = [n for n in c.names if n not in c.ambiguous_in_narration]
    return tuple(dict.fromkeys([*safe, *c.narration_names]))


def ambiguous_in_narration(cid: str) -> dict[str, str]:
    """Aliases that never attribute speech in the narration -> why."""
    return dict(_character(cid).ambiguous_in_narration)


def english_names(cid: str) -> tuple[str, ...]:
    """How English texts name him ("Sun Wukong", "Monkey King" …)."""
    return _character(cid).english_names


@functools.cache
def _chapter_rules() -> dict[str, ChapterRule]:
    return {name: rule for c in load_characters().values() for name, rule in c.narration_chapters.items()}


def names_him_in(name: str, chapter: int) -> bool:
    """Does `name` name its character in this chapter's narration? True for names without a chapter rule."""
    rule = _chapter_rules().get(name)
    return rule is None or rule.names_him_in(chapter)


@functools.cache
def _unnamed_scenes() -> dict[int, tuple[tuple[str, UnnamedScene], ...]]:
    by_chapter: dict[int, list[tuple[str, UnnamedScene]]] = {}
    for c in load_characters().values():
        for scene in c.unnamed_scenes:
            by_chapter.setdefault(scene.chapter, []).append((c.id, scene))
    return {chapter: tuple(scenes) for chapter, scenes in by_chapter.items()}


def unnamed_scenes(chapter: int) -> tuple[tuple[str, UnnamedScene], ...]:
    """(character id, scene) for each scene of this chapter where the narration calls one of the four by what he
    is (那怪 …) before it names him."""
    return _unnamed_scenes().get(chapter, ())


def unnamed_speaker_names() -> tuple[str, ...]:
    """Every form the narration calls one of the four by before it names him (那怪, 那妖 …): speaker names."""
    return tuple(dict.fromkeys(n for scenes in _unnamed_scenes().values() for _, s in scenes for n in s.names))


def all_names(character: str | Character) -> tuple[str, ...]:
    """Every way to name or call him: aliases, forms of address, narration names, English names.

    `character` is an id or a loaded `Character` (a character file outside the package)."""
    c = character if isinstance(character, Character) else _character(character)
    return tuple(dict.fromkeys([*c.names, *c.forms_of_address, *c.narration_names, *c.english_names]))


# --- resolving a name to an id ------------------------------------------------------------------------------------


def _key(name: str) -> str:
    """A name as looked up: NFKC, invisible characters, blank space, Markdown emphasis, quotes, brackets and a
    trailing colon removed, English case-folded with single spaces."""
    s = _INVISIBLE.sub("", unicodedata.normalize("NFKC", name or ""))
    s = re.sub(r"[*_`“”\"'‘’「」『』【】（）()\[\]<>《》]", "", s)
    s = s.strip().rstrip(":：").strip()
    if s.isascii():
        return re.sub(r"[\s\-]+", " ", s).casefold().strip()
    return re.sub(r"\s+", "", s)


@functools.cache
def _tables() -> tuple[dict[str, str | None], dict[str, str | None]]:
    """(names -> id, forms of address -> id); a key claimed by two characters maps to None (ambiguous)."""
    names: dict[str, str | None] = {}
    forms: dict[str, str | None] = {}

    def claim(table: dict[str, str | None], name: str, cid: str) -> None:
        key = _key(name)
        if key in table and table[key] != cid:
            table[key] = None
        else:
            table.setdefault(key, cid)

    for cid, c in load_characters().items():
        for name in (*c.names, *c.narration_names, *c.english_names):
            claim(names, name, cid)
        for name in c.forms_of_address:
            claim(forms, name, cid)
    return names, forms


def resolve(name: str, *, addressed: bool = False) -> str | None:
    """The id of the character `name` names, or None (unknown, or ambiguous).

    Any name, alias, narration name or English name ("孙悟空", "**行者**：", "那呆子", "monkey king"); with
    `addressed`, forms of address too (猴哥, 二师兄: how the pilgrims call each other, which in a text about
    anyone else may name someone else)."""
    names, forms = _tables()
    key = _key(name)
    if not key:
        return None
    candidates = [key] + [key[len(p) :] for p in _LABEL_PREFIXES if key.startswith(p) and len(key) > len(p)]
    for k in candidates:
        if k in names:
            return names[k]
        if addressed and k in forms:
            return forms[k]
    return None


# --- the person's name and words ----------------------------------------------------------------------------------


def check_person_name(name: str) -> str:
    """The person's name in a room, cleaned (NFKC, invisible characters and outer blank space removed).

    Raises ValueError, with a message to show, when it is empty, too long, holds a line break or a colon (it is
    written as the `名字：` label of the person's lines), or is a name of one of the four (猪八戒, 八戒, Pigsy, 师父 …):
    two speakers would carry the same label and the room could not tell them apart."""
    cleaned = _INVISIBLE.sub("", unicodedata.normalize("NFKC", name or "")).strip()
    if not cleaned:
        raise ValueError("your name in the room is empty; type a name (for example 施主)")
    if len(cleaned) > 20:
        raise ValueError(f"your name in the room is {len(cleaned)} characters long; use at most 20")
    if re.search(r"[\n\r\t:：*`<>]", cleaned):
        raise ValueError(f"your name in the room ({cleaned!r}) may not contain line breaks, colons, *, ` or <>")
    cid = resolve(cleaned, addressed=True)
    if cid is None:
        key = _key(cleaned)
        cid = next((c for c in CHARACTER_IDS if key in {_key(n) for n in all_names(c)}), None)
    if cid is not None:
        raise ValueError(
            f"“{cleaned}” is a name of {display_name(cid)} ({cid}) in the room; choose another name for yourself "
            "(for example 施主)"
        )
    return cleaned


_CLAUSE = re.compile(r"([^，,。.！!？?；;、…~～\n]*)([，,。.！!？?；;、…~～\n]+|$)")
_SENTENCE_END = set("。.！!？?…~～\n")
_SECOND_PERSON = "你您汝尔"


@functools.cache
def vocatives() -> tuple[str, ...]:
    """Every name or form of address a person may call one of the four or the room by (`all_names` of each, and
    GENERIC_VOCATIVES), longest first."""
    words = {n for cid in CHARACTER_IDS for n in all_names(cid)} | set(GENERIC_VOCATIVES)
    return tuple(sorted(words, key=lambda w: (-len(w), w)))


@functools.lru_cache(maxsize=64)
def _vocatives(person_name: str | None) -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """(speaker label at the start, a clause that is only a vocative, a vocative opening a clause before 你)."""
    words = set(vocatives())
    if person_name and person_name.strip():
        words.add(person_name.strip())
    alt = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    name = rf"(?:{alt})"
    label = re.compile(rf"^\s*(?:\*\*|__)?\s*{name}\s*(?:\*\*|__)?\s*[:：]\s*(?:\*\*|__)?\s*", re.I)
    call = rf"(?:喂|嘿|哎|唉|呔|哎呀|我的)?(?:{'|'.join(PLURAL_BEFORE)})?{name}(?:{PLURAL_AFTER})?[啊呀哇哪呢哟嘛吔]*"
    whole = re.compile(rf"^\s*(?:{call}\s*)+$", re.I)
    opening = re.compile(rf"^\s*{call}(?=[{_SECOND_PERSON}])", re.I)
    return label, whole, opening


def strip_addressing(text: str, person_name: str | None = None) -> str:
    """The person's own words, without who they are said by or to.

    Removes a leading speaker label (`施主：`, `孙悟空：`, `**八戒**：`, the person's own name), and vocatives (a
    name, alias, form of address, English name of the four, the person's name, 施主/各位 …) that make up a whole
    clause (`师父，…`, `…，八戒！`) or open one before 你 (`大圣你…`). Names that are part of the sentence stay
    (`八戒和悟空谁更让你操心？`). Returns the rest, stripped; "" when nothing else was said."""
    label, whole, opening = _vocatives(person_name)
    s = _INVISIBLE.sub("", text or "")
    while True:
        m = label.match(s)
        if not m or not m.group(0):
            break
        s = s[m.end() :]
    kept: list[list[str]] = []
    for m in _CLAUSE.finditer(s):
        clause, delim = m.group(1), m.group(2)
        if not clause and not delim:
            continue
        if clause.strip() and whole.match(clause):
            # a dropped vocative gives its end mark to the clause before it ('你好，八戒！' -> '你好！')
            if kept and not set(kept[-1][1]) & _SENTENCE_END:
                kept[-1][1] = delim
            continue
        o = opening.match(clause)
        if o:
            clause = clause[o.end() :]
        if not clause.strip() and not kept:
            continue  # leading punctuation left by a dropped vocative
        kept.append([clause, delim])
    return "".join(c + d for c, d in kept).strip()

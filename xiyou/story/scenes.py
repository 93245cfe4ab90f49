"""The scene catalogue (`scenes.toml`): canonical scenes a conversation can start in.

A scene gives a room its members (the pilgrims present), its point in the story (the scene's last chapter), its
setting (place and situation, shown by the narrator when the room opens) and the chapters its retrieval should
prefer. `list_scenes()` / `get_scene(id_or_name)` for pages and the CLI; `validate_scenes(novel)` checks the
catalogue against the novel (each quoted opening line is in its chapter at its offset).
"""

from __future__ import annotations

import dataclasses
import functools
import tomllib
from pathlib import Path

from xiyou.canon.loader import chapter_ref, chinese_number
from xiyou.names import CHARACTER_IDS
from xiyou.story.timeline import LAST_CHAPTER, StoryError

SCENES_FILE = Path(__file__).with_name("scenes.toml")
KINDS = {
    "出身": "before the journey",
    "收徒": "a disciple joins",
    "劫难": "an ordeal",
    "试心": "a temptation",
    "斗法": "a contest",
    "功成": "the journey's end",
}


@dataclasses.dataclass(frozen=True)
class Line:
    """A line of the novel quoted exactly: `text` starts at `offset` of chapter `chapter`'s normalised text."""

    speaker: str
    chapter: int
    offset: int
    text: str


@dataclasses.dataclass(frozen=True)
class Scene:
    id: str
    name: str
    kind: str
    first: int
    last: int
    place: str
    present: tuple[str, ...]
    others: tuple[str, ...]
    situation: str
    opening: tuple[Line, ...]

    @property
    def chapter(self) -> int:
        """The point in the story a room in this scene is set to: after the scene's last chapter."""
        return self.last

    @property
    def chapters(self) -> range:
        """The scene's chapters (retrieval prefers these)."""
        return range(self.first, self.last + 1)

    @property
    def chapter_label(self) -> str:
        if self.first == self.last:
            return chapter_ref(self.first)
        return f"第{chinese_number(self.first)}至{chinese_number(self.last)}回"

    def setting(self) -> str:
        """The narrator's opening: where and when, the situation, then the scene's first lines from the novel."""
        # paragraphs (blank lines): the pages render Markdown, where a single line break is no break
        quoted = "\n\n".join(f"{line.speaker}道：“{_as_quoted(line.text)}”" for line in self.opening)
        head = f"【{self.name}】{self.chapter_label} · {self.place}"
        return f"{head}\n\n{self.situation}\n\n{quoted}" if quoted else f"{head}\n\n{self.situation}"


def _as_quoted(text: str) -> str:
    """A quote cut mid-sentence (ending in ，；：) ends in …… instead."""
    return text[:-1] + "……" if text.endswith(("，", "；", "：", "、")) else text


def _scene(row: dict, where: str) -> Scene:
    try:
        first, last = (int(x) for x in row["chapters"])
        scene = Scene(
            id=str(row["id"]),
            name=str(row["name"]),
            kind=str(row["kind"]),
            first=first,
            last=last,
            place=str(row["place"]),
            present=tuple(row["present"]),
            others=tuple(row.get("others", ())),
            situation=" ".join(str(row["situation"]).split()),
            opening=tuple(
                Line(str(o["speaker"]), int(o["chapter"]), int(o["offset"]), str(o["text"]))
                for o in row.get("opening", ())
            ),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise StoryError(f"{where}: a field is missing or malformed ({e!r}); see the file's header comment") from None
    problems = []
    if not 1 <= scene.first <= scene.last <= LAST_CHAPTER:
        problems.append(f"chapters {scene.first}-{scene.last} not within 1..{LAST_CHAPTER}")
    if scene.kind not in KINDS:
        problems.append(f"kind {scene.kind!r} is not one of {', '.join(KINDS)}")
    unknown = [p for p in scene.present if p not in CHARACTER_IDS]
    if unknown or not scene.present:
        problems.append(f"present must name one or more of {', '.join(CHARACTER_IDS)}, got {list(scene.present)}")
    outside = [o for o in scene.opening if not scene.first <= o.chapter <= scene.last]
    if outside:
        problems.append(f"opening lines outside the scene's chapters: {[o.text for o in outside]}")
    if problems:
        raise StoryError(f"{where} ({scene.id}): " + "; ".join(problems))
    return scene


@functools.cache
def list_scenes() -> tuple[Scene, ...]:
    """Every scene of the catalogue, in story order."""
    data = tomllib.loads(SCENES_FILE.read_text(encoding="utf-8"))
    scenes = [_scene(row, f"{SCENES_FILE}: scene {i + 1}") for i, row in enumerate(data.get("scene", []))]
    ids = [s.id for s in scenes]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise StoryError(f"{SCENES_FILE}: scene ids must be unique; repeated: {', '.join(dupes)}")
    return tuple(sorted(scenes, key=lambda s: (s.first, s.last)))


def get_scene(key: str) -> Scene:
    """The scene whose id or name is `key`; StoryError listing the ids when there is none."""
    key = key.strip()
    for s in list_scenes():
        if key in (s.id, s.name):
            return s
    ids = ", ".join(s.id for s in list_scenes())
    raise StoryError(f"no scene {key!r}; the scenes are: {ids} (see `xiyou scenes`)")


def validate_scenes(novel, scenes: tuple[Scene, ...] | None = None) -> list[str]:
    """Problems of the catalogue against `novel` (a `Novel`): quoted lines not at their offsets, pilgrims present
    before the story lets them join. [] when all is well."""
    from xiyou.story.membership import membership

    problems: list[str] = []
    for s in scenes if scenes is not None else list_scenes():
        for line in s.opening:
            try:
                text = novel.chapter(line.chapter).text
            except KeyError:
                problems.append(f"{s.id}: no chapter {line.chapter} in the novel")
                continue
            found = text[line.offset : line.offset + len(line.text)]
            if found != line.text:
                at = text.find(line.text)
                hint = f" (it is at offset {at})" if at >= 0 else " (not in that chapter)"
                problems.append(f"{s.id}: {line.text!r} is not at offset {line.offset} of chapter {line.chapter}{hint}")
        for cid in s.present:
            m = membership(cid, s.chapter)
            if not m.can_join:
                problems.append(f"{s.id}: {cid} is present but {m.reason}")
    return problems

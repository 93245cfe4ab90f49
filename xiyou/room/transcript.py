"""The room's transcript: who said what, when; plus the notices (errors, dropped replies) shown beside it.

Notices are never transcript lines: a member's failure is shown as a notice and a red status, it is not
something a character said, so it never reaches another character's view or the exported transcript.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Literal

from xiyou.backends.base import Citation
from xiyou.io import jsonl_text
from xiyou.tokens import estimate_tokens

#: The speaker id of the person (the human in the room). Character ids are lower-case ASCII, so no clash.
PERSON = "person"
#: The speaker id of the narrator (issue 16.4: scene settings, narration).
NARRATOR = "narrator"

NoticeKind = Literal["error", "dropped", "stopped", "truncated"]


@dataclasses.dataclass(frozen=True)
class Entry:
    """One line of the transcript. `speaker` is a character id or PERSON; `name` the display name used.

    `citation`: where a canon reply comes from in the novel (None for the person and for model replies); it is
    shown beside the line, never part of `text`, so other speakers never hear it.

    `present`: the ids of the room's members when the line was said (None: not recorded, everyone sees it). A
    member who joined later, or had left by then, never sees the line in his view (`heard_by`)."""

    speaker: str
    name: str
    text: str
    time: float = dataclasses.field(default_factory=time.time)
    interrupted: bool = False
    citation: Citation | None = None
    present: tuple[str, ...] | None = None

    def heard_by(self, member_id: str) -> bool:
        """Was `member_id` in the room when this line was said (or said it)?"""
        return self.present is None or member_id == self.speaker or member_id in self.present

    @property
    def tokens(self) -> int:
        """Estimated tokens of this line as it appears in a view (with its `名字：` prefix)."""
        cached = self.__dict__.get("_tokens")
        if cached is None:
            cached = estimate_tokens(self.text) + estimate_tokens(self.name) + 1
            object.__setattr__(self, "_tokens", cached)
        return cached

    @property
    def spoken(self) -> str:
        """The line as said (what other speakers hear): the text; a citation is kept apart in `citation`."""
        return self.text

    def to_json(self) -> dict[str, object]:
        data: dict[str, object] = {"speaker": self.name, "id": self.speaker, "text": self.text, "time": self.time}
        if self.citation is not None:
            data["citation"] = self.citation.to_json()
        if self.interrupted:
            data["interrupted"] = True
        if self.present is not None:
            data["present"] = list(self.present)
        return data


@dataclasses.dataclass(frozen=True)
class Notice:
    """Something the person should see that is not a chat line: a member's error, a dropped empty reply.

    `position` is the number of transcript entries before it, so a page can show it in place.
    """

    kind: NoticeKind
    speaker: str | None
    name: str | None
    message: str
    position: int
    time: float = dataclasses.field(default_factory=time.time)

    def to_json(self) -> dict[str, object]:
        key = "error" if self.kind == "error" else "notice"
        return {"speaker": self.name, "id": self.speaker, key: self.message, "time": self.time}


def transcript_markdown(entries: list[Entry], title: str = "西游群聊") -> str:
    """The transcript as Markdown: one paragraph per line, speaker names in bold, times in UTC.

    The lines go through `safe_markdown`: a Markdown viewer opening the file loads no image and runs no HTML.
    """
    from xiyou.ui.render import safe_markdown

    lines = [f"# {title}", ""]
    for e in entries:
        stamp = time.strftime("%H:%M:%S", time.gmtime(e.time))
        mark = " *(被打断)*" if e.interrupted else ""
        body = safe_markdown(e.text).replace("\n", "  \n")
        lines += [f"**{e.name}** · {stamp} UTC{mark}  ", body, ""]
        if e.citation is not None:
            lines += [f"*📖 《西游记》{e.citation.label()}*", ""]
    return "\n".join(lines)


def transcript_jsonl(entries: list[Entry]) -> str:
    """The transcript as JSON lines: `{"speaker": name, "id": id, "text": ..., "time": ...}` per line, plus
    `"citation": {"chapter": 27, "said_to": "唐三藏", "label": "第二十七回 · 对唐三藏说"}` for a canon reply."""
    return jsonl_text(e.to_json() for e in entries)

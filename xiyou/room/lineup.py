"""Who can speak in the room, and on what: an endpoints file, the canon (offline), or nothing.

- With an endpoints file (`XIYOU_ENDPOINTS` or `--endpoints FILE`): each character with a table speaks through
  it (`backend = "openai"` by default, or `"canon"` / `"transformers"`); characters without a table speak their
  canon lines when the novel is there.
- Without one: every character speaks its canon lines when `XIYOU_NOVEL` (or the shared novel beside the
  checkout) is there: the offline canon mode of `make run`.
- Otherwise nobody can speak, and `OFFLINE_HELP` says how to fix that.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from xiyou import env
from xiyou.character import Character, get_character, load_characters
from xiyou.room.member import Member, Retriever

if TYPE_CHECKING:
    from xiyou.endpoints import EndpointConfig

log = logging.getLogger(__name__)

Mode = Literal["endpoints", "canon", "offline"]

#: Seconds the room waits for a reply piece, on top of an endpoint's own `timeout` (its client reports first).
TIMEOUT_MARGIN_S = 10.0
CANON_TIMEOUT_S = 60.0

OFFLINE_HELP = """\
Nobody can speak yet: there is no endpoints file and no novel to speak from.

- Offline: point `XIYOU_NOVEL` at the text of 《西游记》 (any common encoding), e.g.
  `XIYOU_NOVEL=../shared/data/xiyouji.txt make run`; each character then answers with its own lines from the novel.
- On any chat model (Ollama, a hosted API): `XIYOU_API_BASE_URL=http://127.0.0.1:11434/v1 XIYOU_API_MODEL=qwen2.5:7b`
  puts all four in persona mode on it (see docs/personas.md).
- With models: serve the characters on any OpenAI-compatible server (LMDeploy: one server, one LoRA adapter per
  character; see docs/serving.md), then write an endpoints file and set `XIYOU_ENDPOINTS`:

```toml
[wukong]
base_url = "http://127.0.0.1:23333/v1"
model = "wukong"
[bajie]
base_url = "http://127.0.0.1:23333/v1"   # same server, another adapter
model = "bajie"
[sanzang]
backend = "canon"                        # offline, from the novel
```
"""


class LineupError(ValueError):
    """The endpoints file is broken (the message names the file, table and field), or a character id is unknown."""


@dataclasses.dataclass(frozen=True)
class Lineup:
    """`seats`: how each character can speak, as a Member (its backend, `kind`, `timeout`, or why not in
    `unavailable`); `member()` gives a room its own copy."""

    mode: Mode
    seats: dict[str, Member]
    endpoints_file: Path | None
    novel: Path | None
    canon_error: str | None = None

    @property
    def available(self) -> bool:
        """At least one character can speak."""
        return any(s.backend is not None for s in self.seats.values())

    def problems(self) -> list[tuple[list[Character], str]]:
        """Why those who cannot speak cannot, the characters sharing a reason together (no novel: one line for the
        four, not four times the same line), in seat order."""
        grouped: dict[str, list[Character]] = {}
        for seat in self.seats.values():
            if seat.backend is None:
                grouped.setdefault(seat.unavailable or "no backend", []).append(seat.character)
        return [(characters, why) for why, characters in grouped.items()]

    def member(self, character_id: str, retriever: Retriever | None = None) -> Member:
        """A fresh Member for the room (mute state is per room; backends are shared). `retriever` is for members on
        models only (canon members speak the book itself)."""
        seat = self.seats[character_id]
        return dataclasses.replace(seat, retriever=retriever if seat.on_model else None)

    def members(self, ids: Sequence[str], retriever: Retriever | None = None) -> list[Member]:
        return [self.member(i, retriever) for i in ids]

    def describe(self) -> str:
        """One line for a page caption or the CLI's stderr."""
        if self.mode == "endpoints" and self.endpoints_file is None:
            return "persona mode on XIYOU_API_BASE_URL / XIYOU_API_MODEL"
        if self.mode == "endpoints":
            return f"endpoints file {self.endpoints_file}"
        if self.mode == "canon":
            return f"offline canon mode: the characters answer with their own lines from {self.novel}"
        return "offline, no novel and no endpoints file"


def load_canon(novel: Path | None) -> tuple[Any | None, str | None]:
    """The Canon of `novel` (None: XIYOU_NOVEL / the shared novel), or (None, why not)."""
    try:
        from xiyou.canon import get_canon

        return get_canon(novel), None
    except ImportError as e:  # the canon package is part of the app; a broken install says so
        return None, f"the canon package cannot be imported ({e})"
    except (OSError, ValueError) as e:  # NovelError is a ValueError
        return None, str(e)


def build_lineup(
    ids: Sequence[str] | None = None,
    endpoints: str | Path | None = None,
    novel: str | Path | None = None,
    max_chapter: int | None = None,
    prefer_chapters: range | None = None,
) -> Lineup:
    """Members for `ids` (default: all characters) from `endpoints` (default XIYOU_ENDPOINTS) and the novel.

    `max_chapter`: the conversation is set after that chapter; canon members answer only with lines up to it.
    `prefer_chapters`: a scene's chapters, whose lines canon members prefer."""
    characters = load_characters()
    try:
        chosen = [get_character(i, characters) for i in (ids or list(characters))]
    except ValueError as e:
        raise LineupError(str(e)) from None
    endpoints_file = Path(endpoints).expanduser() if endpoints else env.endpoints_path()
    from xiyou.endpoints import configured_endpoints

    try:  # the file's tables and [default], then the persona shortcut XIYOU_API_BASE_URL / XIYOU_API_MODEL
        configs: dict[str, EndpointConfig] = configured_endpoints(endpoints_file)
    except (OSError, ValueError) as e:
        raise LineupError(str(e)) from None
    novel_path = Path(novel).expanduser() if novel else env.novel_path()
    needs_canon = any(c.id not in configs or configs[c.id].backend == "canon" for c in chosen)
    canon, canon_error = (None, None)
    if needs_canon:
        if novel_path is None:
            canon_error = "no novel: set XIYOU_NOVEL to the text of 《西游记》"
        else:
            canon, canon_error = load_canon(novel_path)
    story = {"max_chapter": max_chapter, "prefer_chapters": prefer_chapters}
    seats = {c.id: _seat(c, configs.get(c.id), canon, canon_error, endpoints_file, story) for c in chosen}
    mode: Mode = "endpoints" if endpoints_file is not None or configs else ("canon" if canon is not None else "offline")
    return Lineup(mode, seats, endpoints_file, novel_path, canon_error)


def _seat(
    character: Character,
    config: EndpointConfig | None,
    canon: Any,
    canon_error: str | None,
    file: Path | None,
    story: dict[str, Any] | None = None,
) -> Member:
    if config is not None and config.backend != "canon":
        from xiyou.backends.factory import make_backend

        kind = config.backend
        timeout = config.timeout + TIMEOUT_MARGIN_S
        try:
            return Member(character, make_backend(character, kind=kind, endpoint=config), kind=kind, timeout=timeout)
        except Exception as e:  # a member that cannot start is red, the others still talk
            log.warning("%s: cannot set up its %s backend: %s", character.id, kind, e)
            return Member(character, None, timeout=timeout, unavailable=f"{kind} backend from {file}: {e}")
    if canon is None:
        where = f"no table for {character.id} in {file}, and " if config is None and file is not None else ""
        return Member(character, None, timeout=CANON_TIMEOUT_S, unavailable=f"{where}no canon: {canon_error}")
    from xiyou.backends.canon import CanonBackend

    backend = CanonBackend(character, canon, **(story or {}))
    return Member(character, backend, kind="canon", timeout=CANON_TIMEOUT_S)


def canon_retriever(
    canon: Any, k: int = 3, token_budget: int = 600, max_chapter: int | None = None
) -> Retriever | None:
    """Per-speaker canon retrieval for members on models: the top-k canon exchanges in the system prompt (only
    from chapters up to `max_chapter`)."""
    try:
        from xiyou.canon.rag import augment_messages
    except ImportError:
        return None

    def retrieve(character: Character, messages: Sequence[Any]) -> list[Any]:
        return augment_messages(
            character, list(messages), canon, k=k, token_budget=token_budget, max_chapter=max_chapter
        )

    return retrieve

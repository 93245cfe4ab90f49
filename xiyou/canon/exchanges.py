"""Exchanges and scenes: each line of the four with what was said before it, and XTuner training records.

A scene is a run of utterances of one chapter with little narration between them (at most SCENE_GAP characters),
none of it the storyteller turning to another place (却说…, 且说…, …不题, 不在话下): one conversation. An exchange
is one line of a character with its context: the closest preceding utterance of the scene by someone else (None
when the character opens the scene).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence

from xiyou.canon.dialogue import Utterance
from xiyou.names import CHARACTER_IDS

SCENE_GAP = 150  # characters of narration that still belong to the same conversation
#: The storyteller's turns to another place or another thread (却说行者…, 且说那怪…, …安歇不题, 不在话下): the
#: next line is not an answer to the last one, even a few words later.
SCENE_SHIFT = re.compile(r"却说|且说|却表|话表|且不言|且不说|且休言|不题|不在话下|(?:^|[。！？\s])话说")


@dataclasses.dataclass(frozen=True)
class Exchange:
    character: str
    reply: Utterance
    context: Utterance | None
    scene: int
    chapter: int

    @property
    def id(self) -> str:
        """Stable id from chapter and offset of the reply: c027-004964."""
        return self.reply.id


def assign_scenes(
    utterances: Sequence[Utterance], gap: int = SCENE_GAP, texts: Mapping[int, str] | None = None
) -> list[int]:
    """The scene id of each utterance (in novel order): a new scene at each chapter, after a long narration and,
    given the chapters' `texts` (number → text), where the narration between two lines shifts the scene."""
    scenes: list[int] = []
    scene = -1
    prev: Utterance | None = None
    for u in utterances:
        start = (prev.end or prev.offset) if prev is not None else 0
        if (
            prev is None
            or u.chapter != prev.chapter
            or u.offset - start > gap
            or (texts is not None and SCENE_SHIFT.search(texts.get(u.chapter, "")[start : u.offset]))
        ):
            scene += 1
        scenes.append(scene)
        prev = u
    return scenes


def build_exchanges(utterances: Sequence[Utterance], scenes: Sequence[int]) -> dict[str, list[Exchange]]:
    """Exchanges of each of the four characters, in novel order."""
    out: dict[str, list[Exchange]] = {cid: [] for cid in CHARACTER_IDS}
    for i, u in enumerate(utterances):
        if u.speaker not in out:
            continue
        context = None
        j = i - 1
        while j >= 0 and scenes[j] == scenes[i]:
            if utterances[j].speaker != u.speaker:
                context = utterances[j]
                break
            j -= 1
        out[u.speaker].append(
            Exchange(character=u.speaker, reply=u, context=context, scene=scenes[i], chapter=u.chapter)
        )
    return out


def _scene_turns(scene_utterances: Sequence[Utterance], character: str) -> list[tuple[str, str]]:
    """(input, output) turns of one scene seen from `character`: others' lines in, the character's lines out."""
    turns: list[tuple[str, str]] = []
    pending_in: list[str] = []
    pending_out: list[str] = []
    for u in scene_utterances:
        if u.speaker == character:
            pending_out.append(u.text)
        else:
            if pending_out:
                if pending_in:
                    turns.append(("\n".join(pending_in), "\n".join(pending_out)))
                pending_in, pending_out = [], []
            pending_in.append(u.text)
    if pending_out and pending_in:
        turns.append(("\n".join(pending_in), "\n".join(pending_out)))
    return turns


def xtuner_records(
    character: str,
    system: str,
    exchanges: Iterable[Exchange],
    utterances: Sequence[Utterance],
    scenes: Sequence[int],
) -> list[dict]:
    """XTuner conversation records: one single-turn record per exchange with a context, one multi-turn record per
    scene where the character answers at least twice. `system` (the character's meta_instruction) opens each."""
    records: list[dict] = []
    for ex in exchanges:
        if ex.context is None:
            continue
        records.append(
            {
                "id": f"canon-{character}-{ex.id}",
                "conversation": [{"system": system, "input": ex.context.text, "output": ex.reply.text}],
            }
        )
    by_scene: dict[int, list[Utterance]] = {}
    for u, s in zip(utterances, scenes):
        by_scene.setdefault(s, []).append(u)
    for scene_utterances in by_scene.values():
        if not any(u.speaker == character for u in scene_utterances):
            continue
        turns = _scene_turns(scene_utterances, character)
        if len(turns) < 2:
            continue
        conversation = [{"input": i, "output": o} for i, o in turns]
        conversation[0] = {"system": system, **conversation[0]}
        records.append({"id": f"canon-{character}-scene-{scene_utterances[0].id}", "conversation": conversation})
    return records

"""Turn policies: who answers the person's message, and who speaks next during auto-banter.

- `mention` (default): the characters named in the last message answer, in the order named; nobody named ->
  `natural`.
- `natural`: the named ones first, then each other member rolls against its talkativeness (a field of the
  character file); nobody answers itself; if every roll fails, one member is drawn weighted by talkativeness.
- `round_robin`: the next member after the last character who spoke, one per message.
- `all`: every present (unmuted, available) member once, in member order.
- `manual`: nobody speaks until the person picks who does.

Auto-banter (after the answers to the person's message): one speaker at a time, never the same speaker twice
in a row unless alone; a speaker named in the last line goes first, otherwise the policy's rotation
(`round_robin`) or a draw weighted by talkativeness. `manual` has no banter.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence
from typing import Literal

from xiyou.room.member import Member
from xiyou.room.mentions import mentioned
from xiyou.room.transcript import NARRATOR, PERSON, Entry

Policy = Literal["mention", "natural", "round_robin", "all", "manual"]
POLICIES: tuple[Policy, ...] = ("mention", "natural", "round_robin", "all", "manual")

POLICY_LABELS: dict[str, str] = {
    "mention": "点名 · mention",
    "natural": "自然 · natural",
    "round_robin": "轮流 · round robin",
    "all": "全员 · all",
    "manual": "指定 · manual",
}

POLICY_HELP: dict[str, str] = {
    "mention": "whoever you name answers, in the order named (nobody named: natural)",
    "natural": "the named first, then each by the talkativeness of its character file",
    "round_robin": "one after another, one answer per message",
    "all": "everyone answers once",
    "manual": "you pick who speaks next",
}

#: The smallest weight a member gets in a talkativeness draw, so a quiet member can still be drawn when alone.
_MIN_WEIGHT = 0.01


def check_policy(policy: str) -> Policy:
    """`policy` as a Policy, or ValueError naming the valid ones."""
    if policy not in POLICIES:
        raise ValueError(f"unknown turn policy {policy!r}; use one of: {', '.join(POLICIES)}")
    return policy  # type: ignore[return-value]


def _last_character(entries: Sequence[Entry]) -> str | None:
    for entry in reversed(entries):
        if entry.speaker not in (PERSON, NARRATOR):
            return entry.speaker
    return None


def _last_spoken(entries: Sequence[Entry]) -> Entry | None:
    """The last line someone said: narration (the narrator's lines) is passed over by the policies."""
    for entry in reversed(entries):
        if entry.speaker != NARRATOR:
            return entry
    return None


def _weighted_pick(candidates: Sequence[Member], rng: random.Random) -> Member:
    weights = [max(m.character.talkativeness, _MIN_WEIGHT) for m in candidates]
    return rng.choices(list(candidates), weights=weights, k=1)[0]


def _next_in_rotation(members: Sequence[Member], active: Sequence[Member], after: str | None) -> Member:
    ids = [m.id for m in members]
    start = ids.index(after) + 1 if after in ids else 0
    for offset in range(len(ids)):
        candidate = members[(start + offset) % len(ids)]
        if candidate in active:
            return candidate
    return active[0]


def responders(policy: Policy, entries: Sequence[Entry], members: Sequence[Member], rng: random.Random) -> list[str]:
    """Ids of the members who answer the last line of `entries` (usually the person's), in speaking order."""
    active = [m for m in members if m.active]
    last = _last_spoken(entries)
    if not active or last is None or policy == "manual":
        return []
    others = [m for m in active if m.id != last.speaker]
    if policy == "all":
        return [m.id for m in others]
    if policy == "round_robin":
        return [_next_in_rotation(members, others or active, _last_character(entries)).id] if others else []
    named = mentioned(last.text, [m.character for m in others])
    if named and policy == "mention":
        return named
    rolled = [m for m in others if m.id not in named]
    rng.shuffle(rolled)
    chosen = named + [m.id for m in rolled if rng.random() < m.character.talkativeness]
    if not chosen and others:
        chosen = [_weighted_pick(others, rng).id]
    return chosen


def banter_speaker(
    policy: Policy,
    entries: Sequence[Entry],
    members: Sequence[Member],
    rng: random.Random,
    exclude: Collection[str] = (),
) -> str | None:
    """The id of the member who speaks next in auto-banter, or None when nobody should.

    `exclude`: members not to pick now (those that failed in this run). A member alone in the room (the only
    active one) may go on; one that is merely the last still answering does not talk to itself.
    """
    if policy == "manual":
        return None
    active = [m for m in members if m.active]
    if not active:
        return None
    last = _last_spoken(entries)
    if len(active) == 1:
        return None if active[0].id in exclude else active[0].id
    others = [m for m in active if m.id not in exclude and (last is None or m.id != last.speaker)]
    if not others:
        return None
    if last is not None:
        named = mentioned(last.text, [m.character for m in others])
        if named:
            return named[0]
    if policy == "round_robin":
        return _next_in_rotation(members, others, _last_character(entries)).id
    return _weighted_pick(others, rng).id

"""What the room reports while it runs: a page or the CLI turns these into bubbles, notices and lines."""

from __future__ import annotations

import dataclasses

from xiyou.room.transcript import Entry, Notice


@dataclasses.dataclass(frozen=True)
class TurnStarted:
    """`speaker` (a member id) starts speaking."""

    speaker: str


@dataclasses.dataclass(frozen=True)
class Delta:
    """A piece of `speaker`'s reply, already through the guards."""

    speaker: str
    text: str


@dataclasses.dataclass(frozen=True)
class Waiting:
    """`speaker`'s backend has been silent for `seconds` (sent every HEARTBEAT_S while it is)."""

    speaker: str
    seconds: float


@dataclasses.dataclass(frozen=True)
class TurnEnded:
    """`speaker`'s reply was posted to the transcript as `entry`."""

    speaker: str
    entry: Entry


@dataclasses.dataclass(frozen=True)
class MemberFailed:
    """`speaker` could not answer (server down, timeout, any backend error): a notice, never a chat line."""

    speaker: str
    notice: Notice


@dataclasses.dataclass(frozen=True)
class ReplyDropped:
    """`speaker`'s reply was empty after the guards, so nothing was posted."""

    speaker: str
    notice: Notice


@dataclasses.dataclass(frozen=True)
class Stopped:
    """The person stopped the room; a reply in progress was kept up to where it got (if anything)."""

    notice: Notice


Event = TurnStarted | Waiting | Delta | TurnEnded | MemberFailed | ReplyDropped | Stopped

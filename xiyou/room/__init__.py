"""The multi-character room: members, turn policies, auto-banter, each speaker's view, guards.

room = Room([Member(character, backend), ...], person="施主", policy="mention", banter_turns=2)
room.say("悟空，八戒，你们两个吵什么？")
for event in room.run():
    ...  # TurnStarted / Delta / TurnEnded / MemberFailed / ReplyDropped / Stopped
"""

from xiyou.room.engine import DEFAULT_BANTER, DEFAULT_PERSON, MemberStatus, Plan, Room
from xiyou.room.events import Delta, Event, MemberFailed, ReplyDropped, Stopped, TurnEnded, TurnStarted, Waiting
from xiyou.room.member import Member
from xiyou.room.policies import POLICIES, POLICY_HELP, POLICY_LABELS
from xiyou.room.transcript import NARRATOR, PERSON, Entry, Notice, transcript_jsonl, transcript_markdown

__all__ = [
    "DEFAULT_BANTER",
    "DEFAULT_PERSON",
    "NARRATOR",
    "PERSON",
    "POLICIES",
    "POLICY_HELP",
    "POLICY_LABELS",
    "Delta",
    "Entry",
    "Event",
    "Member",
    "MemberFailed",
    "MemberStatus",
    "Notice",
    "Plan",
    "ReplyDropped",
    "Room",
    "Stopped",
    "TurnEnded",
    "TurnStarted",
    "Waiting",
    "transcript_jsonl",
    "transcript_markdown",
]

"""The room engine: members, a transcript, turn policies, auto-banter, each speaker's view, guards.

Knows nothing of Streamlit: the hub page and the `xiyou room` command both drive it by iterating the events
of `Room.run()` / `Room.continue_()`.

A member's failure (BackendError, any other exception from its backend, or no reply piece within its
`timeout`) becomes a MemberFailed event with a Notice and a red status for that member; the room goes on with
the others. The backend runs in a worker thread that feeds a queue, so a stalled server cannot hang the room
and a stop is noticed within `POLL_S` even while a backend is silent.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import random
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal

from xiyou.backends.base import BackendError, Citation, Piece, StreamEnd, StreamFailed, pump
from xiyou.character import Character, load_characters
from xiyou.prompts import mode_of
from xiyou.room.events import Delta, Event, MemberFailed, ReplyDropped, Stopped, TurnEnded, TurnStarted, Waiting
from xiyou.room.guards import ReplyGuard, stop_strings
from xiyou.room.member import Member
from xiyou.room.policies import Policy, banter_speaker, check_policy, responders
from xiyou.room.transcript import NARRATOR, PERSON, Entry, Notice
from xiyou.room.view import DEFAULT_TOKEN_BUDGET, build_view

log = logging.getLogger(__name__)

#: How often a silent backend is checked for a stop request, in seconds.
POLL_S = 0.05
#: While a backend is silent, a Waiting event comes this often (a page redraws "thinking…", which also lets
#: Streamlit interrupt the script when the person presses Stop).
HEARTBEAT_S = 0.5
#: Default cap of auto-banter turns after the answers to the person's message.
DEFAULT_BANTER = 2
DEFAULT_PERSON = "施主"

State = Literal["idle", "speaking", "ok", "error", "muted", "unavailable"]


@dataclasses.dataclass(frozen=True)
class MemberStatus:
    """`state` for the status light (error/unavailable: red); `message` says why."""

    state: State
    message: str | None = None

    @property
    def failing(self) -> bool:
        return self.state in ("error", "unavailable")


class _Cancelled(Exception):
    pass


@dataclasses.dataclass
class Plan:
    """Turns still to come: named speakers first, then up to `banter_left` auto-banter turns."""

    queue: list[str]
    banter_left: int
    failed: set[str] = dataclasses.field(default_factory=set)
    done: bool = False
    banter_spoke: bool = False  # the last turn was a banter turn (the narrator may speak between two)


class Room:
    """Several characters and a person talking. Iterate `run()` after `say()` to get the answers as events."""

    def __init__(
        self,
        members: Iterable[Member],
        *,
        person: str = DEFAULT_PERSON,
        policy: str = "mention",
        banter_turns: int = DEFAULT_BANTER,
        token_budget: int = DEFAULT_TOKEN_BUDGET,
        seed: int | None = None,
        characters: Iterable[Character] | None = None,
        narrator: Member | None = None,
        narrate_banter: bool = False,
        chapter: int | None = None,
        setting: str | None = None,
        prefer_chapters: range | None = None,
    ) -> None:
        self.members: list[Member] = []
        self.entries: list[Entry] = []
        self.notices: list[Notice] = []
        self.status: dict[str, MemberStatus] = {}
        self.person = person.strip() or DEFAULT_PERSON
        self.policy: Policy = check_policy(policy)
        self.banter_turns = banter_turns
        self.token_budget = token_budget
        self.rng = random.Random(seed)
        self._cancel = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._known = {c.id: c for c in (characters if characters is not None else load_characters().values())}
        #: The optional narrator (issue 16.4): never picked by a policy; speaks on `narrate()` and, with
        #: `narrate_banter`, between two auto-banter turns. Hears every line.
        self.narrator = narrator
        self.narrate_banter = narrate_banter
        #: The point in the story (after chapter N; None: the whole journey) and a scene's setting: every
        #: speaker's system prompt carries them (xiyou.prompts), and canon examples stop at the chapter.
        self.chapter = chapter
        self.setting = setting
        #: A scene's chapters: persona members' canon examples come from them first (xiyou.prompts).
        self.prefer_chapters = prefer_chapters
        self.set_members(members)

    # ----- members -----------------------------------------------------------------------------------------
    def set_members(self, members: Iterable[Member]) -> None:
        """Replace the members (the transcript stays); statuses of members who stay are kept."""
        self.members = list(members)
        ids = [m.id for m in self.members]
        if len(set(ids)) != len(ids):
            raise ValueError(f"a character can be in the room only once, got {', '.join(ids)}")
        for m in self.members:
            self._known.setdefault(m.id, m.character)
            if m.backend is None:
                self.status[m.id] = MemberStatus("unavailable", m.unavailable)
            elif m.muted:
                self.status[m.id] = MemberStatus("muted")
            elif self.status.get(m.id, MemberStatus("idle")).state in ("muted", "unavailable", "speaking"):
                self.status[m.id] = MemberStatus("idle")
            else:
                self.status.setdefault(m.id, MemberStatus("idle"))

    def member(self, member_id: str) -> Member:
        for m in self.members:
            if m.id == member_id:
                return m
        raise KeyError(f"{member_id!r} is not in the room; members: {', '.join(m.id for m in self.members) or 'none'}")

    def present_ids(self) -> tuple[str, ...]:
        """Who hears a line said now: every member in the room, muted ones included, and the narrator (see
        `Entry.present`)."""
        ids = tuple(m.id for m in self.members)
        return (*ids, self.narrator.id) if self.narrator is not None else ids

    def _speaker(self, member_id: str) -> Member:
        """A member, or the narrator by its id; KeyError otherwise."""
        if self.narrator is not None and member_id == self.narrator.id:
            return self.narrator
        return self.member(member_id)

    def mute(self, member_id: str, muted: bool = True) -> None:
        self.member(member_id).muted = muted
        self.set_members(self.members)

    # ----- the conversation -----------------------------------------------------------------------------------
    def say(self, text: str) -> Entry:
        """The person says `text` (posted as is, stripped)."""
        text = text.strip()
        if not text:
            raise ValueError("nothing to say: the message is empty")
        entry = Entry(PERSON, self.person, text, present=self.present_ids())
        self.entries.append(entry)
        return entry

    def stop(self) -> None:
        """Stop the room: the reply in progress ends (kept as far as it got), no further turn starts."""
        self._cancel.set()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no turn is in progress (a page rerun may start while the interrupted run still cleans up);
        True when idle."""
        return self._idle.wait(timeout)

    def wait_stopped(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for `stop()` (a page's pause between turns); True when stopped."""
        return self._cancel.wait(timeout)

    @property
    def stopping(self) -> bool:
        return self._cancel.is_set()

    def reset(self) -> None:
        """Forget the conversation (members, policy and settings stay)."""
        self.entries.clear()
        self.notices.clear()
        for m in self.members:
            if self.status.get(m.id, MemberStatus("idle")).state in ("ok", "error", "speaking"):
                self.status[m.id] = MemberStatus("idle")

    def next_speakers(self) -> list[str]:
        """Who the policy picks to answer the last line (a fresh draw for the random policies)."""
        return responders(self.policy, self.entries, self.members, self.rng)

    def plan(self, speakers: Sequence[str] | None = None, banter: int | None = None) -> Plan:
        """Plan the answers to the last line: `speakers` (the person's pick) or the policy's, then up to
        `banter` more turns (None: the room's `banter_turns`). Clears an earlier stop. Run it with `step()`."""
        self._cancel.clear()
        queue_ = list(speakers) if speakers is not None else self.next_speakers()
        for sid in queue_:
            self._speaker(sid)  # unknown ids fail before anything is said
        return Plan(queue_, max(self.banter_turns if banter is None else banter, 0))

    def plan_continue(self, turns: int | None = None) -> Plan:
        """Plan `turns` more turns among the characters (default: the banter cap, at least one)."""
        self._cancel.clear()
        return Plan([], max(self.banter_turns, 1) if turns is None else max(turns, 0))

    def step(self, plan: Plan) -> Iterator[Event]:
        """Run the next turn of `plan` (a page runs one per script run, so Stop stays clickable between turns).

        Marks the plan done when it is used up, when nobody is left to speak, or when the room was stopped.
        """
        if plan.done:
            return
        if self._cancel.is_set():
            plan.done = True
            yield self._stopped()
            return
        banter = False
        if plan.queue:
            sid: str | None = plan.queue.pop(0)
        elif plan.banter_left > 0 and plan.banter_spoke and self.narrate_banter and self.narrator is not None:
            sid = self.narrator.id  # between two banter turns: a line of narration
            plan.banter_spoke = False
        elif plan.banter_left > 0:
            plan.banter_left -= 1
            banter = True
            sid = banter_speaker(self.policy, self.entries, self.members, self.rng, exclude=plan.failed)
        else:
            sid = None
        if sid is None:
            plan.done = True
            return
        plan.banter_spoke = banter
        # None: left the room since the plan
        member = next((m for m in (*self.members, *([self.narrator] if self.narrator else [])) if m.id == sid), None)
        if member is not None and member.active:
            ok = yield from self._turn(member)
            if ok is None:
                plan.done = True
            elif not ok:
                plan.failed.add(sid)
        if not plan.queue and plan.banter_left <= 0:
            plan.done = True

    def run(self, speakers: Sequence[str] | None = None, banter: int | None = None) -> Iterator[Event]:
        """Answer the last line (see `plan()`), all turns in one go. Stops early when `stop()` is called."""
        yield from self._run(self.plan(speakers, banter))

    def continue_(self, turns: int | None = None) -> Iterator[Event]:
        """Let the characters go on talking among themselves for up to `turns` turns (default: banter cap)."""
        yield from self._run(self.plan_continue(turns))

    def narrate(self) -> Iterator[Event]:
        """One turn of the narrator (the person's /narrate or button); ValueError when the room has none."""
        if self.narrator is None:
            raise ValueError("this room has no narrator; start it with one (e.g. `xiyou room --narrator`)")
        yield from self._run(self.plan([self.narrator.id], banter=0))

    def post_narration(self, text: str, name: str = "旁白") -> Entry:
        """Post `text` as the narrator's line as is (a scene's opening setting), without asking any backend."""
        speaker = self.narrator.id if self.narrator is not None else NARRATOR
        name = self.narrator.name if self.narrator is not None else name
        entry = Entry(speaker, name, text.strip(), present=self.present_ids())
        self.entries.append(entry)
        return entry

    def speak(self, member_id: str) -> Iterator[Event]:
        """One turn by `member_id`, whatever the policy (the manual policy's pick)."""
        yield from self._run(self.plan([member_id], banter=0))

    def _run(self, plan: Plan) -> Iterator[Event]:
        while not plan.done:
            yield from self.step(plan)

    def _stopped(self) -> Stopped:
        last = self.notices[-1] if self.notices else None
        if last is not None and last.kind == "stopped" and last.position == len(self.entries):
            return Stopped(last)  # already noted (the interrupted run and the next one both report it)
        notice = Notice("stopped", None, None, "已停止 · stopped", len(self.entries))
        self.notices.append(notice)
        return Stopped(notice)

    def _turn(self, member: Member) -> Iterator[Event]:
        """Returns True (spoke or dropped), False (failed) or None (stopped)."""
        self._idle.clear()
        try:
            return (yield from self._turn_inner(member))
        finally:
            self._idle.set()

    def _turn_inner(self, member: Member) -> Iterator[Event]:
        character = member.character
        present = [m.character for m in self.members]
        mode = mode_of(member.backend)
        story = {"chapter": self.chapter, "story": self.setting, "prefer_chapters": self.prefer_chapters}
        messages = build_view(character, self.entries, present, self.person, self.token_budget, mode, **story)
        if member.retriever is not None:
            try:
                messages = member.retriever(character, messages)
            except Exception as e:  # retrieval is a help, not a must: answer without it
                log.warning("canon retrieval for %s failed, answering without it: %s", member.id, e)
        settings = member.generation_settings()
        settings = settings.replace(
            stop=tuple(dict.fromkeys((*settings.stop, *stop_strings(character, present, self.person)))),
            person=self.person,
        )
        guard = ReplyGuard(character, [*self._known.values(), *present], self.person)
        self.status[member.id] = MemberStatus("speaking")
        yield TurnStarted(member.id)
        stream_cancel = threading.Event()
        finished = False
        citation: Citation | None = None
        try:
            for piece in self._pump(member, messages, settings, stream_cancel):
                if isinstance(piece, float):
                    yield Waiting(member.id, piece)
                    continue
                if isinstance(piece, Citation):
                    citation = piece
                    continue
                shown = guard.feed(piece)
                if shown:
                    yield Delta(member.id, shown)
                if guard.stopped:
                    break
            tail = guard.finish()
            if tail:
                yield Delta(member.id, tail)
            finished = True
        except _Cancelled:
            self._keep_partial(member, guard, citation)
            yield self._stopped()
            return None
        except Exception as e:  # any failure of a member is that member's error, never the room's
            notice = Notice("error", member.id, member.name, _describe(member, e), len(self.entries))
            self.notices.append(notice)
            self.status[member.id] = MemberStatus("error", notice.message)
            yield MemberFailed(member.id, notice)
            return False
        finally:
            stream_cancel.set()
            if not finished and self.status.get(member.id) == MemberStatus("speaking"):
                # closed from outside (a page rerun interrupted the stream): keep what the person saw
                self._keep_partial(member, guard, citation)
        self.status[member.id] = MemberStatus("ok")
        text = guard.final_text()
        if not text:
            notice = Notice(
                "dropped",
                member.id,
                member.name,
                f"{member.name} had nothing to say (empty reply dropped)",
                len(self.entries),
            )
            self.notices.append(notice)
            yield ReplyDropped(member.id, notice)
            return True
        entry = Entry(member.id, member.name, text, citation=citation, present=self.present_ids())
        self.entries.append(entry)
        yield TurnEnded(member.id, entry)
        return True

    def _keep_partial(self, member: Member, guard: ReplyGuard, citation: Citation | None) -> None:
        self.status[member.id] = MemberStatus("ok")
        text = guard.final_text()
        if text:
            entry = Entry(member.id, member.name, text, citation=citation, interrupted=True, present=self.present_ids())
            self.entries.append(entry)

    def _pump(
        self, member: Member, messages: list, settings, cancel: threading.Event
    ) -> Iterator[str | Citation | float]:
        """The backend's deltas (and its Citation), read from a worker thread; raises on failure, timeout or stop.

        While the backend is silent, yields the seconds waited so far (a float) every HEARTBEAT_S."""
        backend = member.backend
        assert backend is not None
        q: queue.SimpleQueue[Piece | StreamEnd | StreamFailed] = queue.SimpleQueue()
        threading.Thread(
            target=pump, args=(lambda: backend.stream(messages, settings, cancel), q.put, cancel),
            name=f"room-{member.id}", daemon=True,
        ).start()  # fmt: skip
        timeout = member.timeout
        started = time.monotonic()
        deadline = started + timeout
        beat = started + HEARTBEAT_S
        while True:
            if self._cancel.is_set():
                raise _Cancelled
            wait = deadline - time.monotonic()
            if wait <= 0:
                raise TimeoutError(f"no reply within {timeout:g} s")
            try:
                item = q.get(timeout=min(wait, POLL_S))
            except queue.Empty:
                now = time.monotonic()
                if now >= beat:
                    beat = now + HEARTBEAT_S
                    yield now - started
                continue
            if isinstance(item, StreamEnd):
                if item.notice:  # shown after the reply it cut
                    self.notices.append(Notice("truncated", member.id, member.name, item.notice, len(self.entries) + 1))
                return
            if isinstance(item, StreamFailed):
                raise item.error
            deadline = time.monotonic() + timeout
            beat = deadline - timeout + HEARTBEAT_S
            yield item




def _describe(member: Member, error: BaseException) -> str:
    """A notice a person can act on: who, on what, what went wrong."""
    where = member.label
    if isinstance(error, BackendError):
        return f"{member.name} ({where}) could not answer: {error}"
    if isinstance(error, TimeoutError):
        return (
            f"{member.name} ({where}) could not answer: {error}; check that its server is up and not overloaded, "
            "or raise the member's timeout"
        )
    return f"{member.name} ({where}) could not answer: {type(error).__name__}: {error}"

"""Room overhead, measured side by side with the bare backend in one run (these machines are noisy).

1. Overhead per turn at 200 transcript messages with instant backends: one full turn through the room (policy
   draw, the speaker's view with trimming, guards, the worker thread and queue, transcript update) against the
   same backend called directly with a prebuilt message list. Target: under 2 ms per turn.
2. Extra latency from a backend's first token to the room's first Delta: the backend stamps the time just
   before it yields its first token (after a short wait, as a network would); the consumer stamps the time it
   receives it, through the room and directly.

    .venv/bin/python benchmarks/bench_room.py [--turns 300]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterator

from xiyou.backends.base import GenerationSettings
from xiyou.character import load_characters
from xiyou.room import Delta, Member, Room
from xiyou.room.transcript import PERSON, Entry
from xiyou.room.view import build_view

REPLY = "俺老孙来也！师父莫怕，妖怪已打死了。呆子休要胡说。"
LINE = "师父，前面山高，须要仔细。那妖精变化多端，俺老孙先去探路，八戒看好行李，沙师弟牵马。"


class Instant:
    """Yields a reply in four pieces at once."""

    label = "instant"

    def stream(self, messages, settings, cancel=None) -> Iterator[str]:
        step = len(REPLY) // 4 + 1
        for i in range(0, len(REPLY), step):
            yield REPLY[i : i + step]


class Stamped:
    """Waits `delay_s` (a network), stamps the time, yields the first token, then the rest."""

    label = "stamped"

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        self.stamp = 0.0

    def stream(self, messages, settings, cancel=None) -> Iterator[str]:
        time.sleep(self.delay_s)
        self.stamp = time.perf_counter()
        yield REPLY[:3]
        yield REPLY[3:]


def filled_room(backend, n: int = 200) -> Room:
    chars = load_characters()
    members = [Member(c, backend) for c in chars.values()]
    room = Room(members, banter_turns=0, seed=1)
    speakers = [PERSON, *chars]
    for i in range(n):
        sid = speakers[i % len(speakers)]
        name = "施主" if sid == PERSON else chars[sid].name
        room.entries.append(Entry(sid, name, f"{LINE[: 20 + i % 25]}（{i}）"))
    return room


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def bench_overhead(turns: int) -> None:
    backend = Instant()
    room = filled_room(backend)
    settings = GenerationSettings()
    chars = load_characters()
    speaker = chars["wukong"]
    messages = build_view(speaker, room.entries, list(chars.values()), room.person)
    direct, through, views = [], [], []
    for _ in range(turns):
        t = time.perf_counter()
        "".join(backend.stream(messages, settings))
        direct.append(time.perf_counter() - t)

        t = time.perf_counter()
        build_view(speaker, room.entries, list(chars.values()), room.person)
        views.append(time.perf_counter() - t)

        t = time.perf_counter()
        for _event in room.speak("wukong"):
            pass
        through.append(time.perf_counter() - t)
        del room.entries[200:]  # keep the transcript at 200 messages
    d, r, v = (statistics.median(x) * 1e3 for x in (direct, through, views))
    print(f"[overhead] transcript 200 messages, {turns} turns, instant backend, 4 members")
    print(f"  backend called directly : median {d:.4f} ms/turn")
    print(f"  through the room        : median {r:.4f} ms/turn (p95 {pct(through, 0.95) * 1e3:.4f} ms)")
    print(f"    of which the view     : median {v:.4f} ms")
    print(f"  room overhead           : {r - d:.4f} ms/turn  (target < 2 ms: {'OK' if r - d < 2 else 'MISSED'})")
    print(f"  ratio room/direct       : {r / d:.1f}x")


def bench_first_delta(turns: int, delay_s: float) -> None:
    backend = Stamped(delay_s)
    room = filled_room(backend)
    settings = GenerationSettings()
    chars = load_characters()
    messages = build_view(chars["bajie"], room.entries, list(chars.values()), room.person)
    direct, through = [], []
    for _ in range(turns):
        for _piece in backend.stream(messages, settings):
            direct.append(time.perf_counter() - backend.stamp)
            break
        for event in room.speak("bajie"):
            if isinstance(event, Delta):
                through.append(time.perf_counter() - backend.stamp)
                break
        del room.entries[200:]
    d, r = statistics.median(direct) * 1e6, statistics.median(through) * 1e6
    print(f"[first delta] backend waits {delay_s * 1e3:g} ms, then its first token; {turns} turns")
    print(f"  direct iteration        : median {d:.1f} µs after the backend's first token")
    print(f"  through the room        : median {r:.1f} µs (p95 {pct(through, 0.95) * 1e6:.1f} µs)")
    print(f"  extra latency           : {r - d:.1f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=300)
    args = parser.parse_args()
    bench_overhead(args.turns)
    bench_first_delta(max(args.turns // 3, 20), delay_s=0.002)


if __name__ == "__main__":
    main()

"""Many people at once on one store: N concurrent browser-less sessions (each a Streamlit AppTest in a process of
its own: AppTest is not thread-safe) on one conversation store (one SQLite file), in offline canon mode.

Each session opens its own room (`?c=<id>`), loads the page, waits until every session is ready, then asks one
question naming a member and waits for the answer. Checked: no session's question or reply ever appears in another
session's conversation (in the store and on its page). Printed: time to the first reply per session (p50, p95, max),
side by side with one session alone in the same run.

    XIYOU_NOVEL=../shared/data/xiyouji.txt .venv/bin/python benchmarks/bench_sessions.py [--sessions 20]

`--cps` is the canon typing pace (characters per second; 0: no pacing, the default here, so the figures are the
app's own cost rather than the chosen pace).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "hub" / "app.py")
MEMBERS = ["wukong", "bajie", "wujing", "sanzang"]
NAMES = {"wukong": "悟空", "bajie": "八戒", "wujing": "沙僧", "sanzang": "师父"}


def worker(conversation: str, n: int, member: str) -> None:
    """One session: load the page, say ready, wait for go, ask, print the result as JSON."""
    from streamlit.testing.v1 import AppTest

    from xiyou.backends.base import GenerationSettings
    from xiyou.character import get_character
    from xiyou.ui.hub import lineup

    # warm this process up as a long-running server would be: the canon and its answer index loaded
    backend = lineup().seats[member].backend
    list(backend.stream([{"role": "user", "content": "你好"}], GenerationSettings.for_character(get_character(member))))
    at = AppTest.from_file(APP, default_timeout=600)
    at.query_params["c"] = conversation
    at.run()
    print("ready", flush=True)
    sys.stdin.readline()
    question = f"{NAMES[member]}，第{n}号客人问：前面可有妖怪？"
    started = time.perf_counter()
    next(w for w in at.get("chat_input") if w.key == f"hub_input_{conversation}").set_value(question).run()
    elapsed = time.perf_counter() - started
    error = at.exception[0].value if at.exception else None
    shown = [[m.name, " ".join(x.value for x in m.markdown[1:])] for m in at.main.get("chat_message")]
    print(json.dumps({"elapsed": elapsed, "question": question, "shown": shown, "error": error}), flush=True)


def run(sessions: int) -> dict[int, dict]:
    from xiyou.store import SQLiteStore, database_path

    store = SQLiteStore(database_path())
    rooms = []
    for n in range(sessions):
        member = MEMBERS[n % len(MEMBERS)]
        conv = store.create("room", f"bench {n}", {"members": [member], "banter": 0, "delay": 0.0})
        rooms.append((conv.id, n, member))
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, f"--worker={conversation},{n},{member}"],  # an id may start with "-"
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for conversation, n, member in rooms
    ]
    for p in procs:
        line = p.stdout.readline().strip()
        while line and line != "ready":  # anything the page printed before
            line = p.stdout.readline().strip()
        if line != "ready":
            sys.exit(f"a session did not start (exit status {p.wait()})")
    for p in procs:  # all at once
        p.stdin.write("go\n")
        p.stdin.flush()
    results = {}
    for (_, n, _), p in zip(rooms, procs):
        results[n] = json.loads(p.stdout.readline())
        p.wait()
        if results[n]["error"]:
            sys.exit(f"session {n}: {results[n]['error']}")
    # isolation: each conversation holds exactly its own question and one reply by its own member
    for conversation, n, member in rooms:
        messages = store.messages(conversation)
        assert [m.speaker for m in messages] == ["person", member], (n, [(m.speaker, m.text) for m in messages])
        assert messages[0].text == results[n]["question"], (n, messages[0].text)
        assert [name for name, _ in results[n]["shown"]] == ["施主", messages[1].name], (n, results[n]["shown"])
        assert results[n]["shown"][1][1] == messages[1].text, n
        for other, m, _ in rooms:
            if other != conversation:
                assert results[n]["question"] not in [x.text for x in store.messages(other)], (n, m)
    return results


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--cps", type=float, default=0.0, help="canon typing pace (0: none)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        conversation, n, member = args.worker.split(",")
        worker(conversation, int(n), member)
        return
    os.environ["XIYOU_CANON_CPS"] = str(args.cps)
    os.environ.pop("XIYOU_ENDPOINTS", None)
    os.environ.setdefault("XIYOU_DATA_DIR", tempfile.mkdtemp(prefix="bench-sessions-"))
    os.environ.pop("XIYOU_PERSIST", None)
    print(f"store: {os.environ['XIYOU_DATA_DIR']}; canon pace {args.cps:g} chars/s", flush=True)
    run(1)  # warm up: the canon index cache
    alone = [run(1)[0]["elapsed"] for _ in range(3)]
    together = run(args.sessions)
    times = [r["elapsed"] for r in together.values()]
    base = statistics.median(alone)
    print(f"1 session alone:        first reply {base:.2f} s (median of 3)")
    print(
        f"{args.sessions} sessions at once:   first reply p50 {_pct(times, 0.5):.2f} s, p95 {_pct(times, 0.95):.2f} s, "
        f"max {max(times):.2f} s  (p50 = {_pct(times, 0.5) / base:.1f}x alone)"
    )
    print(f"isolation: {args.sessions} conversations, each holds only its own question and its own reply: ok")


if __name__ == "__main__":
    main()

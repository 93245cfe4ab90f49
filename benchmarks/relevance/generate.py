"""Ask the evaluation questions of the canon mode of a checkout; write its replies for scoring.

    # this checkout (the new canon mode)
    XIYOU_NOVEL=../shared/data/xiyouji.txt python benchmarks/relevance/generate.py --mode new
    # an older checkout (e.g. `git worktree add /tmp/old 93e0b40`), run with its code first on the path
    PYTHONPATH=/tmp/old XIYOU_NOVEL=../shared/data/xiyouji.txt python benchmarks/relevance/generate.py --mode old

Each question is asked of its character in a fresh conversation, as the single-character app does (system
prompt + the question), and again through a room whose person is named 小明 instead of 施主 (the reply must
not change). Each character's questions are also asked one after another in one conversation (no reply may
repeat). Writes `replies_<set>_<mode>.tsv` and `summary_<set>_<mode>.json` beside this file. Works with the
canon backend before and after citations became data (the old one appended `（第X回）` to the text: split off here).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

HERE = Path(__file__).parent


def _split(reply: str) -> tuple[str, str]:
    """(text, chapter label) of an old-style reply with a trailing （第X回）; new replies have none."""
    import re

    m = re.search(r"\n\n（(第[零一二三四五六七八九十百]+回)）$", reply)
    return (reply[: m.start()], m.group(1)) if m else (reply, "")


def ask(backend, messages) -> tuple[str, str]:
    from xiyou.backends import base

    if hasattr(base, "collect_cited"):
        text, citation = base.collect_cited(backend, messages, base.GenerationSettings())
        return text, citation.label() if citation else ""
    return _split(base.collect(backend, messages, base.GenerationSettings()))


def room_reply(backend, character, person: str, question: str) -> str:
    from xiyou.room import Room, TurnEnded
    from xiyou.room.member import Member

    room = Room([Member(character, backend)], person=person, banter_turns=0, policy="all")
    room.say(question)
    for event in room.run():
        if isinstance(event, TurnEnded):
            return _split(event.entry.text)[0]
    return ""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mode", required=True, help="a name for this checkout's canon mode: old, new …")
    p.add_argument("--set", default="b", help="the question set: questions_<set>.tsv (default: b)")
    p.add_argument("--novel", default=None, help="the novel (default: XIYOU_NOVEL)")
    args = p.parse_args()

    import os

    os.environ.setdefault("XIYOU_CANON_CPS", "0")
    from lines import locate  # beside this script

    from xiyou.backends.canon import CanonBackend
    from xiyou.canon import get_canon
    from xiyou.character import get_character

    canon = get_canon(args.novel)
    try:
        from xiyou.canon import answers

        deflections = {cid: {ex.reply.text for ex in answers.deflections(canon, cid)} for cid in answers_ids()}
    except ImportError:  # the old canon mode had no deflections
        deflections = {}
    with open(HERE / f"questions_{args.set}.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    backends = {}
    out = []
    name_changes = 0
    for row in rows:
        cid = row["character"]
        character = get_character(cid)
        backend = backends.setdefault(cid, CanonBackend(character, canon))
        messages = [
            {"role": "system", "content": character.meta_instruction},
            {"role": "user", "content": row["question"]},
        ]
        text, chapter = ask(backend, messages)
        renamed = room_reply(backend, character, "小明", row["question"]) != room_reply(
            backend, character, "施主", row["question"]
        )
        name_changes += renamed
        deflected = "1" if text in deflections.get(cid, ()) else "0"
        out.append(
            {
                "id": row["id"],
                "character": cid,
                "line": locate(canon, cid, text),  # where the line stands in the novel: its text is read there
                "citation": chapter,
                "deflection": deflected,
                "name_changes_reply": str(int(renamed)),
            }
        )
    repeats = 0
    for cid in dict.fromkeys(r["character"] for r in rows):
        character = get_character(cid)
        messages = [{"role": "system", "content": character.meta_instruction}]
        said = []
        for row in (r for r in rows if r["character"] == cid):
            messages.append({"role": "user", "content": row["question"]})
            text, _ = ask(backends[cid], messages)
            repeats += text in said
            said.append(text)
            messages.append({"role": "assistant", "content": text})
    with open(HERE / f"replies_{args.set}_{args.mode}.tsv", "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(out[0]), delimiter="\t", lineterminator="\n")
        writer.writeheader()
        writer.writerows(out)
    summary = {
        "set": args.set,
        "mode": args.mode,
        "questions": len(rows),
        "name_changes_reply": name_changes,
        "repeats_in_one_conversation": repeats,
    }
    (HERE / f"summary_{args.set}_{args.mode}.json").write_text(
        json.dumps(summary, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    print(json.dumps(summary, ensure_ascii=False))


def answers_ids() -> tuple[str, ...]:
    from xiyou.canon import CHARACTER_IDS

    return CHARACTER_IDS


if __name__ == "__main__":
    main()

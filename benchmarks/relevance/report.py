"""Relevance of the canon mode, old and new side by side: mean score per character, distinct replies, deflections.

    python benchmarks/relevance/report.py            # every scored question set
    python benchmarks/relevance/report.py --set c    # one

Reads `questions_<set>.tsv`, `replies_<set>_<mode>.tsv` (written by generate.py), `scores_<set>.tsv` (one column
per mode: the score given by reading each reply, see README.md) and `summary_<set>_<mode>.json`. Prints, per set:
the mean score (0-2) per character and mode, the share of distinct replies over the set (each question asked in a
fresh conversation), the deflection rate, how many replies changed when the person was renamed, and how many
replies repeated when a character's questions were asked in one conversation. Needs no novel and no model.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from pathlib import Path

HERE = Path(__file__).parent
IDS = ("sanzang", "wukong", "bajie", "wujing")


def _tsv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def report(name: str) -> None:
    questions = {r["id"]: r for r in _tsv(HERE / f"questions_{name}.tsv")}
    scores = _tsv(HERE / f"scores_{name}.tsv")
    modes = [m for m in scores[0] if m != "id"]
    print(f"\n## Question set {name}: {len(questions)} questions\n")
    header = "| mode | " + " | ".join(IDS) + " | all | distinct replies | deflections | renamed → changed | repeats |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for mode in modes:
        by_char: dict[str, list[int]] = {cid: [] for cid in IDS}
        for row in scores:
            by_char[questions[row["id"]]["character"]].append(int(row[mode]))
        every = [s for v in by_char.values() for s in v]
        replies_path = HERE / f"replies_{name}_{mode}.tsv"
        replies = _tsv(replies_path) if replies_path.is_file() else []
        distinct = len({r["line"] for r in replies}) / len(replies) if replies else float("nan")
        deflected = sum(r.get("deflection") == "1" for r in replies) / len(replies) if replies else float("nan")
        summary_path = HERE / f"summary_{name}_{mode}.json"
        summary = json.loads(summary_path.read_text(encoding="utf-8")) if summary_path.is_file() else {}
        means = " | ".join(f"{statistics.mean(by_char[cid]):.2f}" for cid in IDS)
        print(
            f"| {mode} | {means} | **{statistics.mean(every):.2f}** | {distinct:.0%} | {deflected:.0%} | "
            f"{summary.get('name_changes_reply', '?')} | {summary.get('repeats_in_one_conversation', '?')} |"
        )


def oracle(names: list[str]) -> None:
    """Per set: the mean of the last mode, and of the best score any mode got for each question (as if a perfect
    judge picked, for every question, the best reply any version of the canon mode ever gave), by topic."""
    print("\n## Best of all modes (an upper bound for choosing among the replies the versions gave)\n")
    print("| set | modes | last mode | last: all (by topic) | best of all: all (by topic) |")
    print("|---|---|---|---|---|")
    for name in names:
        questions = {r["id"]: r for r in _tsv(HERE / f"questions_{name}.tsv")}
        scores = _tsv(HERE / f"scores_{name}.tsv")
        modes = [m for m in scores[0] if m != "id"]
        last = {r["id"]: int(r[modes[-1]]) for r in scores}
        top = {r["id"]: max(int(r[m]) for m in modes if r[m] != "") for r in scores}

        print(f"| {name} | {len(modes)} | {modes[-1]} | {_means(last, questions)} | {_means(top, questions)} |")


def _means(values: dict[str, int], questions: dict[str, dict[str, str]]) -> str:
    """'**mean** (topic mean, …)' of scores by question id, topics as the set has them (story, personal, off …)."""
    order = ["story", "personal", "off"]
    topics = sorted({q["topic"] for q in questions.values()}, key=lambda t: [*order, t].index(t))
    by_topic = [
        f"{t} {statistics.mean(v for i, v in values.items() if questions[i]['topic'] == t):.2f}" for t in topics
    ]
    return f"**{statistics.mean(values.values()):.2f}** ({', '.join(by_topic)})"


def show_replies(name: str, mode: str) -> None:
    from lines import text_at  # beside this script

    from xiyou.canon import get_canon

    canon = get_canon()
    questions = {q["id"]: q["question"] for q in _tsv(HERE / f"questions_{name}.tsv")}
    for r in _tsv(HERE / f"replies_{name}_{mode}.tsv"):
        print(f"{r['id']}\t{questions.get(r['id'], '?')}\t{text_at(canon, r['line'])}\t{r['citation']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", action="append", help="question set(s) to report (default: every scored one)")
    p.add_argument("--oracle", action="store_true", help="per set, the best score any mode got for each question "
                   "(what a perfect choice among the versions' replies would score)")
    p.add_argument("--replies", nargs=2, metavar=("SET", "MODE"), help="print each question and its reply instead, "
                   "the reply read from the novel (XIYOU_NOVEL) where the file says it stands")
    args = p.parse_args()
    if args.replies:
        show_replies(*args.replies)
        return
    sets = args.set or sorted(path.stem.removeprefix("scores_") for path in HERE.glob("scores_*.tsv"))
    if args.oracle:
        oracle(sets)
        return
    for name in sets:
        report(name)


if __name__ == "__main__":
    main()

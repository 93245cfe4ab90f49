"""Calibrate the canon backend's deflection threshold on the calibration questions (never the evaluation set).

    XIYOU_NOVEL=../shared/data/xiyouji.txt python benchmarks/relevance/calibrate.py

Each question of `calibration.tsv` is labelled `book` (the novel can answer it) or `off` (a modern topic). For
every question and character it computes the best relevance among the top canon matches (`xiyou.canon.answers`) and
prints, for candidate thresholds, how many `book` questions would be answered and how many `off` questions
deflected; the threshold with the best balanced accuracy is the one to put in `answers.DEFLECT_BELOW`.

`--passages`: the thresholds of the two rules that read the novel around his lines, in the order the backend asks
them. First the surroundings rule (`answers.surroundings_line`): for each question and character the book cannot
answer outright (and that names no episode), the best BM25 score of the novel around one of his lines. Then the
passage rule (`answers.passage_line`): for those left (no line's surroundings stand out, no scene named), the BM25
score of the novel's passage where the question's words stand together best. A modern question given such a line
loses a clean shrug (2 → 0), a story question gains a line of its scene (0 → about 1): each threshold is the
lowest that no `off` question reaches.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

HERE = Path(__file__).parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--novel", default=None, help="the novel (default: XIYOU_NOVEL)")
    p.add_argument("--passages", action="store_true", help="calibrate the passage rule's threshold instead")
    args = p.parse_args()
    if args.passages:
        return passages(args.novel)

    from xiyou.backends.canon import question_of
    from xiyou.canon import CHARACTER_IDS, get_canon
    from xiyou.canon.answers import DEFLECT_BELOW, answerer
    from xiyou.canon.index import top_k

    canon = get_canon(args.novel)
    with open(HERE / "calibration.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    points: list[tuple[str, float]] = []
    for cid in CHARACTER_IDS:
        scorer = answerer(canon, cid)
        for row in rows:
            # what decides: the best relevance among the top candidates (the backend answers with the best-ranked
            # one at or above the threshold, and deflects when there is none)
            scored = scorer.score(question_of([{"role": "user", "content": row["question"]}]))
            best = max((float(scored.relevance[i]) for i in top_k(scored.scores, 64)), default=0.0)
            points.append((row["label"], best))
    book = sorted(r for label, r in points if label == "book")
    off = sorted(r for label, r in points if label == "off")
    print(f"{len(rows)} questions x {len(CHARACTER_IDS)} characters: {len(book)} book, {len(off)} off")
    print("threshold  book answered  off deflected  balanced accuracy")
    best = (0.0, 0.0)
    for i in range(5, 80):
        t = i / 100
        answered = sum(r >= t for r in book) / len(book)
        deflected = sum(r < t for r in off) / len(off)
        balanced = (answered + deflected) / 2
        if balanced > best[0] + 1e-9:
            best = (balanced, t)
        if i % 5 == 0 or abs(t - DEFLECT_BELOW) < 1e-9:
            mark = "  <- DEFLECT_BELOW now" if abs(t - DEFLECT_BELOW) < 1e-9 else ""
            print(f"  {t:.2f}      {answered:6.1%}        {deflected:6.1%}         {balanced:6.1%}{mark}")
    print(f"best balanced accuracy {best[0]:.1%} at threshold {best[1]:.2f} (DEFLECT_BELOW is {DEFLECT_BELOW:.2f})")


def passages(novel: str | None) -> None:
    from xiyou.backends.canon import question_of
    from xiyou.canon import CHARACTER_IDS, answers, get_canon

    canon = get_canon(novel)
    with open(HERE / "calibration.tsv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    around: list[tuple[str, float]] = []
    points: list[tuple[str, float]] = []
    for cid in CHARACTER_IDS:
        scorer = answers.answerer(canon, cid)
        for row in rows:
            query = question_of([{"role": "user", "content": row["question"]}])
            scored = scorer.score(query)
            if answers.best(scored, scorer.exchanges, None, (), answers.DEFLECT_BELOW) is not None:
                continue  # the book answers: neither rule is asked
            if answers.episode_line(scorer, scored, None, ()) is not None:
                continue
            grams = answers.surroundings_grams(scored)
            around.append((row["label"], float(answers.surroundings(scorer).scores(grams).max())))
            if answers.surroundings_line(scorer, scored, None, ()) is not None:
                continue
            if answers.scene_line(scorer, scored, query, None, ()) is not None:
                continue
            found = answers.passages(canon).best(answers.question_bigrams(scored))
            points.append((row["label"], found[2] if found else 0.0))
    _table("surroundings", around, "SURROUNDINGS_MIN_SCORE", answers.SURROUNDINGS_MIN_SCORE)
    print()
    _table("passage", points, "PASSAGE_MIN_SCORE", answers.PASSAGE_MIN_SCORE)


def _table(rule: str, points: list[tuple[str, float]], name: str, now: float) -> None:
    book = [x for label, x in points if label == "book"]
    off = [x for label, x in points if label == "off"]
    print(f"reaching the {rule} rule: {len(book)} book, {len(off)} off (questions x characters)")
    print(f"threshold  book given a {rule} line  off given one")
    for t in [float(x) for x in range(4, 21)]:
        mark = f"  <- {name} now" if abs(t - now) < 1e-9 else ""
        given_book, given_off = sum(x >= t for x in book), sum(x >= t for x in off)
        print(f"  {t:5.1f}      {given_book:4d}                      {given_off:4d}{mark}")
    print(f"the lowest threshold no off question reaches: {max(off, default=0.0):.2f} ({name} is {now:.2f})")


if __name__ == "__main__":
    main()

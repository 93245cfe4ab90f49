"""Measure the speaker attribution against hand labels, and print samples to label.

Labels are a TSV (`tests/data/attribution_labels.tsv`): `chapter`, `offset` (of the utterance's opening quote in
the normalised chapter text), `speaker` (the true speaker read from the novel: one of the four ids, `other` for
anyone else, `?` when the text itself does not say). No novel text is stored.

    python -m xiyou.canon.evaluate sample --per-stratum 60 --seed 7   # print a stratified sample to read and label
    python -m xiyou.canon.evaluate score tests/data/attribution_labels.tsv
"""

from __future__ import annotations

import argparse
import dataclasses
import random
from collections.abc import Sequence
from pathlib import Path

from xiyou.canon.dialogue import UNKNOWN, Utterance
from xiyou.names import CHARACTER_IDS

OTHER = "other"


def stratum(speaker: str) -> str:
    """The sampling stratum of a predicted speaker: one of the four ids, 'other' or 'unknown'."""
    if speaker in CHARACTER_IDS or speaker == UNKNOWN:
        return speaker
    return OTHER


def sample_for_labelling(utterances: Sequence[Utterance], per_stratum: int, seed: int = 7) -> list[Utterance]:
    """A stratified random sample: up to `per_stratum` utterances of each predicted stratum, in novel order."""
    rng = random.Random(seed)
    by: dict[str, list[Utterance]] = {}
    for u in utterances:
        by.setdefault(stratum(u.speaker), []).append(u)
    chosen: list[Utterance] = []
    for key in sorted(by):
        items = by[key]
        chosen.extend(rng.sample(items, min(per_stratum, len(items))))
    return sorted(chosen, key=lambda u: (u.chapter, u.offset))


def load_labels(path: str | Path) -> dict[tuple[int, int], str]:
    labels: dict[tuple[int, int], str] = {}
    for lineno, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#") or line.startswith("chapter\t"):
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise ValueError(f"{path}:{lineno}: expected 3 tab-separated fields (chapter, offset, speaker)")
        labels[(int(parts[0]), int(parts[1]))] = parts[2].strip()
    return labels


@dataclasses.dataclass
class Score:
    character: str
    predicted: int  # labelled utterances predicted as this character
    correct: int  # ... of which the label agrees
    labelled: int  # labelled utterances whose true speaker is this character
    found: int  # ... of which the prediction agrees
    recall_weighted: float  # recall with each label weighted by its stratum's sampling rate

    @property
    def precision(self) -> float:
        return self.correct / self.predicted if self.predicted else float("nan")

    @property
    def recall(self) -> float:
        return self.found / self.labelled if self.labelled else float("nan")


def score(utterances: Sequence[Utterance], labels: dict[tuple[int, int], str]) -> dict[str, Score]:
    """Precision and recall per character of the predicted speakers against the labels.

    Raises KeyError when a label points at no utterance (the extractor or the novel changed)."""
    by_key = {(u.chapter, u.offset): u for u in utterances}
    missing = [k for k in labels if k not in by_key]
    if missing:
        raise KeyError(f"{len(missing)} labels match no utterance, e.g. chapter {missing[0][0]} offset {missing[0][1]}")
    population: dict[str, int] = {}
    for u in utterances:
        population[stratum(u.speaker)] = population.get(stratum(u.speaker), 0) + 1
    sampled: dict[str, int] = {}
    for key in labels:
        s = stratum(by_key[key].speaker)
        sampled[s] = sampled.get(s, 0) + 1
    out: dict[str, Score] = {}
    for cid in CHARACTER_IDS:
        predicted = correct = labelled = found = 0
        w_true = w_found = 0.0
        for key, truth in labels.items():
            pred = by_key[key].speaker
            weight = population[stratum(pred)] / sampled[stratum(pred)]
            if pred == cid:
                predicted += 1
                correct += truth == cid
            if truth == cid:
                labelled += 1
                found += pred == cid
                w_true += weight
                w_found += weight * (pred == cid)
        out[cid] = Score(cid, predicted, correct, labelled, found, w_found / w_true if w_true else float("nan"))
    return out


def format_scores(scores: dict[str, Score]) -> str:
    rows = ["character  predicted  precision  labelled  recall(sample)  recall(weighted)"]
    for s in scores.values():
        rows.append(
            f"{s.character:<10} {s.predicted:>9}  {s.precision:>9.3f}  {s.labelled:>8}  {s.recall:>14.3f}  "
            f"{s.recall_weighted:>16.3f}"
        )
    total_pred = sum(s.predicted for s in scores.values())
    total_ok = sum(s.correct for s in scores.values())
    rows.append(f"{'all four':<10} {total_pred:>9}  {total_ok / max(total_pred, 1):>9.3f}")
    return "\n".join(rows)


def main(argv: Sequence[str] | None = None) -> None:
    from xiyou.canon.core import get_canon

    parser = argparse.ArgumentParser(
        prog="python -m xiyou.canon.evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--novel", default=None)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_sample = sub.add_parser("sample", help="print a stratified sample with the narration before each quote")
    p_sample.add_argument("--per-stratum", type=int, default=60)
    p_sample.add_argument("--seed", type=int, default=7)
    p_sample.add_argument("--before", type=int, default=70, help="characters of narration to show")
    p_score = sub.add_parser("score", help="precision/recall per character against a labels file")
    p_score.add_argument("labels")
    args = parser.parse_args(argv)
    canon = get_canon(args.novel)
    if args.cmd == "sample":
        chapters = {c.number: c.text for c in canon.novel.chapters}
        for u in sample_for_labelling(canon.utterances, args.per_stratum, args.seed):
            before = chapters[u.chapter][max(0, u.offset - args.before) : u.offset].replace("\n", "¶")
            print(f"{u.chapter}\t{u.offset}\t{u.speaker}\t{before}【{u.text[:24]}】")
    else:
        print(format_scores(score(canon.utterances, load_labels(args.labels))))


if __name__ == "__main__":
    main()

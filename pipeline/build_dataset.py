"""Build one character's training set from every source: clean, de-duplicate, filter, split, validate, report.

    python -m pipeline.build_dataset --character wukong \\
        --inputs data/wukong/q2a.jsonl data/extract.jsonl data/long.jsonl --canon --out-dir data/wukong/dataset

Sources are JSONL files of XTuner records (from q2a, extract, long_dialogue, or anything in the same format) and,
with `--canon`, the rule-based exchanges of the novel. Records of other characters (field `character`) are
skipped. Then, in order:

1. the format is checked (a non-empty `conversation` of turns with text `input` and `output`);
2. whitespace and punctuation are normalised (ASCII ,.!?;: next to Chinese become full-width, ... → ……);
3. `system` is set to the character's `meta_instruction` on the first turn (and removed from the others);
4. answers that break the persona ("作为一个AI…", "我是一个语言模型…") are dropped;
5. answers shorter than `--min-chars` or conversations longer than `--max-chars` are dropped;
6. exact duplicates, and near duplicates (same text but for punctuation and spaces; or the same question with
   answers whose character 3-gram Jaccard similarity is at least `--near-dup`) are dropped;
7. a seeded hash of each id puts it in train or validation (stable: adding records never moves others).

Writes `train.jsonl`, `validation.jsonl` and `stats.json` (records per source, dropped per reason, length
distribution) into `--out-dir`, as a whole: the set is written into a temporary folder and swapped in, so a run
killed at any moment leaves the old set or the new one, never a mix (the next run removes its leftovers).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import statistics
import sys
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pipeline.llm import short_hash
from pipeline.options import character_or_error
from pipeline.store import StoreError, read_jsonl
from xiyou.character import Character, character_ids
from xiyou.io import write_dir_atomic, write_error, write_json_atomic, write_jsonl_atomic
from xiyou.persona import broken_persona

CJK = r"\u3400-\u4dbf\u4e00-\u9fff\u3000-\u303f\uff00-\uffef"
_ZERO_WIDTH = re.compile(r"[\u200b-\u200f\u2060\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0\u3000]+")
_HALF_TO_FULL = {",": "，", "!": "！", "?": "？", ";": "；", ":": "："}
_PUNCT_NEAR_CJK = re.compile(rf"(?<=[{CJK}])\s*([,!?;:])|([,!?;:])\s*(?=[{CJK}])")
_PERIOD_AFTER_CJK = re.compile(r"(?<=[\u4e00-\u9fff])\.(?!\d)")
_ELLIPSIS = re.compile(r"(?:\.{3,}|。{3,}|…+)")
_SPACE_BETWEEN_CJK = re.compile(rf"(?<=[{CJK}]) +(?=[{CJK}])")
_NOT_WORD = re.compile(r"[\W_]+")


class DatasetError(ValueError):
    """A record cannot be turned into a valid XTuner conversation."""


# --- normalising ---------------------------------------------------------------------------------------------
def normalise_text(text: str) -> str:
    """NFC, no zero-width characters, tidy spaces and line ends, Chinese punctuation next to Chinese text."""
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = _ZERO_WIDTH.sub("", text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    text = _SPACE_BETWEEN_CJK.sub("", text)
    text = _ELLIPSIS.sub("……", text)
    text = _PUNCT_NEAR_CJK.sub(lambda m: _HALF_TO_FULL[m.group(1) or m.group(2)], text)
    text = _PERIOD_AFTER_CJK.sub("。", text)
    return text


def normalise_record(record: Any, character: Character) -> list[dict[str, str]]:
    """The record's conversation, validated and normalised, `system` on the first turn only."""
    if not isinstance(record, dict):
        raise DatasetError("not a JSON object")
    conv = record.get("conversation")
    if not isinstance(conv, list) or not conv:
        raise DatasetError("no 'conversation' list")
    turns: list[dict[str, str]] = []
    for i, turn in enumerate(conv):
        if not isinstance(turn, dict):
            raise DatasetError(f"turn {i} is not an object")
        inp, out = turn.get("input"), turn.get("output")
        if not isinstance(inp, str) or not isinstance(out, str):
            raise DatasetError(f"turn {i}: 'input' and 'output' must be text")
        inp, out = normalise_text(inp), normalise_text(out)
        if not inp or not out:
            raise DatasetError(f"turn {i}: empty {'input' if not inp else 'output'}")
        turns.append({"input": inp, "output": out})
    turns[0] = {"system": character.meta_instruction, **turns[0]}
    return turns


def validate_xtuner(record: dict[str, Any], system: str) -> None:
    """Raise DatasetError unless `record` is a valid XTuner conversation record with this system prompt."""
    conv = record.get("conversation")
    if not isinstance(record.get("id"), str) or not record["id"]:
        raise DatasetError("missing 'id'")
    if not isinstance(conv, list) or not conv:
        raise DatasetError("missing 'conversation'")
    if conv[0].get("system") != system:
        raise DatasetError("first turn's 'system' is not the character's meta_instruction")
    for i, turn in enumerate(conv):
        if set(turn) - {"system", "input", "output"} or (i > 0 and "system" in turn):
            raise DatasetError(f"turn {i}: unexpected keys {sorted(turn)}")
        if not all(isinstance(turn.get(k), str) and turn[k] for k in ("input", "output")):
            raise DatasetError(f"turn {i}: empty input or output")


# --- duplicates ----------------------------------------------------------------------------------------------
def _shingles(text: str, n: int = 3) -> set[str]:
    text = _NOT_WORD.sub("", text)
    return {text[i : i + n] for i in range(max(1, len(text) - n + 1))}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0


class Deduper:
    def __init__(self, threshold: float) -> None:
        self.threshold = threshold
        self.exact: set[str] = set()
        self.loose: set[str] = set()
        self.by_question: dict[str, list[set[str]]] = defaultdict(list)

    def check(self, turns: list[dict[str, str]]) -> str | None:
        """'duplicate', 'near_duplicate' or None (and remembers the conversation)."""
        exact = json.dumps([(t["input"], t["output"]) for t in turns], ensure_ascii=False)
        if exact in self.exact:
            return "duplicate"
        loose = _NOT_WORD.sub("", exact)
        if loose in self.loose:
            return "near_duplicate"
        question = _NOT_WORD.sub("", turns[0]["input"])
        answer = _shingles("".join(t["output"] for t in turns))
        if self.threshold < 1.0:
            for other in self.by_question[question][-200:]:
                if jaccard(answer, other) >= self.threshold:
                    return "near_duplicate"
        self.exact.add(exact)
        self.loose.add(loose)
        self.by_question[question].append(answer)
        return None


# --- splitting -----------------------------------------------------------------------------------------------
def is_validation(record_id: str, seed: int, ratio: float) -> bool:
    h = hashlib.sha256(f"{seed}:{record_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < ratio


# --- the build -----------------------------------------------------------------------------------------------
def read_sources(inputs: Iterable[Path], canon_records: list[dict] | None) -> Iterator[tuple[str, str, Any]]:
    """(file label, source name, record) for every input record."""
    for path in inputs:
        try:
            records = read_jsonl(path)
        except StoreError as e:
            raise SystemExit(f"error: --inputs: {e}") from None
        stem = path.name.removesuffix(".jsonl")
        for record in records:
            source = record.get("source") if isinstance(record, dict) else None
            yield str(path), str(source or stem), record
    for record in canon_records or []:
        yield "canon", "canon", record


def _distribution(values: list[int]) -> dict[str, float]:
    if not values:
        return {}
    values = sorted(values)
    q = statistics.quantiles(values, n=10, method="inclusive") if len(values) > 1 else [values[0]] * 9
    return {"min": values[0], "p10": q[0], "median": statistics.median(values), "p90": q[8], "max": values[-1],
            "mean": round(statistics.fmean(values), 1)}  # fmt: skip


def build(
    character: Character,
    inputs: list[Path],
    out_dir: Path,
    *,
    canon_records: list[dict] | None = None,
    val_ratio: float = 0.05,
    seed: int = 0,
    min_chars: int = 2,
    max_chars: int = 4000,
    near_dup: float = 0.9,
) -> dict[str, Any]:
    dedup = Deduper(near_dup)
    train: list[dict[str, Any]] = []
    val: list[dict[str, Any]] = []
    read_per_file: Counter[str] = Counter()
    kept_per_source: Counter[str] = Counter()
    dropped: Counter[str] = Counter()
    dropped_per_source: dict[str, Counter[str]] = defaultdict(Counter)
    other_character = 0
    seen_ids: set[str] = set()
    examples: dict[str, str] = {}

    for label, source, record in read_sources(inputs, canon_records):
        read_per_file[label] += 1
        if isinstance(record, dict) and record.get("character") not in (None, character.id):
            other_character += 1
            continue

        def drop(reason: str, detail: str = "", source: str = source, label: str = label) -> None:
            dropped[reason] += 1
            dropped_per_source[source][reason] += 1
            examples.setdefault(reason, f"{label}: {detail}"[:200])

        try:
            turns = normalise_record(record, character)
        except DatasetError as e:
            drop("invalid_format", str(e))
            continue
        record_id = record.get("id") if isinstance(record.get("id"), str) and record.get("id") else None
        if record_id is None:
            record_id = f"{source}-" + short_hash(json.dumps(turns, ensure_ascii=False), 16)
        if record_id in seen_ids:
            drop("duplicate_id", record_id)
            continue
        phrase = next((p for p in (broken_persona(t["output"]) for t in turns) if p), None)
        if phrase:
            drop("broken_persona", phrase)
            continue
        if min(len(t["output"]) for t in turns) < min_chars:
            drop("too_short", record_id)
            continue
        if sum(len(t["input"]) + len(t["output"]) for t in turns) > max_chars:
            drop("too_long", record_id)
            continue
        dup = dedup.check(turns)
        if dup:
            drop(dup, record_id)
            continue
        seen_ids.add(record_id)
        out = {"id": record_id, "source": source, "conversation": turns}
        validate_xtuner(out, character.meta_instruction)
        (val if is_validation(record_id, seed, val_ratio) else train).append(out)
        kept_per_source[source] += 1

    kept = train + val
    stats = {
        "character": character.id,
        "inputs": dict(read_per_file),
        "skipped_other_characters": other_character,
        "records_per_source": dict(kept_per_source),
        "dropped": dict(dropped),
        "dropped_per_source": {s: dict(c) for s, c in dropped_per_source.items()},
        "dropped_examples": examples,
        "kept": len(kept),
        "train": len(train),
        "validation": len(val),
        "output_chars": _distribution([sum(len(t["output"]) for t in r["conversation"]) for r in kept]),
        "input_chars": _distribution([sum(len(t["input"]) for t in r["conversation"]) for r in kept]),
        "turns": dict(sorted(Counter(len(r["conversation"]) for r in kept).items())),
        "parameters": {
            "val_ratio": val_ratio,
            "seed": seed,
            "min_chars": min_chars,
            "max_chars": max_chars,
            "near_dup": near_dup,
        },
    }

    def write(folder: Path) -> None:
        write_jsonl_atomic(folder / "train.jsonl", train)
        write_jsonl_atomic(folder / "validation.jsonl", val)
        write_json_atomic(folder / "stats.json", stats)

    write_dir_atomic(out_dir, write)  # the three files are swapped in together: never a new train with old stats
    return stats


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.build_dataset",
        description="Merge, clean, de-duplicate, filter and split one character's training data (XTuner format).",
    )
    p.add_argument("--character", required=True, help=f"character id: {', '.join(character_ids())}")
    p.add_argument("--inputs", type=Path, nargs="*", default=[], help="JSONL files of XTuner records")
    p.add_argument("--canon", action="store_true", help="add the novel's rule-based exchanges of the character")
    p.add_argument("--novel", type=Path, default=None, help="the novel for --canon (default: $XIYOU_NOVEL)")
    p.add_argument("--out-dir", type=Path, required=True, help="where train.jsonl, validation.jsonl, stats.json go")
    p.add_argument("--val-ratio", type=float, default=0.05, help="share of records for validation (default 0.05)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/validation split (default 0)")
    p.add_argument("--min-chars", type=int, default=2, help="drop answers shorter than this (default 2)")
    p.add_argument("--max-chars", type=int, default=4000, help="drop conversations longer than this (default 4000)")
    p.add_argument("--near-dup", type=float, default=0.9, help="3-gram Jaccard for near duplicates (1.0: exact only)")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    character = character_or_error(parser, args.character)
    if not args.inputs and not args.canon:
        parser.error("nothing to build from: give --inputs FILE… and/or --canon")
    if not 0.0 <= args.val_ratio < 1.0:
        parser.error(f"--val-ratio must be within [0, 1), got {args.val_ratio}")
    missing = [str(p) for p in args.inputs if not p.is_file()]
    if missing:
        parser.error(f"--inputs: no such file: {', '.join(missing)}")
    canon_records = None
    if args.canon:
        from xiyou.canon import NovelError, get_canon

        try:
            canon_records = get_canon(args.novel).records(character.id)
        except NovelError as e:
            parser.error(f"--canon: {e}")
    try:
        stats = build(
            character,
            args.inputs,
            args.out_dir,
            canon_records=canon_records,
            val_ratio=args.val_ratio,
            seed=args.seed,
            min_chars=args.min_chars,
            max_chars=args.max_chars,
            near_dup=args.near_dup,
        )
    except OSError as e:
        print(
            f"error: {write_error(args.out_dir, e)}; the previous set in {args.out_dir} is kept",
            file=sys.stderr,
        )
        return 1
    dropped = ", ".join(f"{k} {v}" for k, v in sorted(stats["dropped"].items())) or "none"
    print(
        f"{character.id}: {stats['train']} train + {stats['validation']} validation records in {args.out_dir} "
        f"(per source: {stats['records_per_source']}; dropped: {dropped}); stats in {args.out_dir / 'stats.json'}"
    )
    return 0 if stats["kept"] else 1


if __name__ == "__main__":
    sys.exit(main())

"""Long dialogues: the specification's dialogue-sorting prompt over the novel's passages, as multi-turn records.

    python -m pipeline.long_dialogue --novel ../shared/data/xiyouji.txt --out data/long.jsonl \\
        --base-url https://api.example.com/v1 --model some-model [--chapters 1-20]

The LLM returns the passage's conversation as `角色：内容` lines (唐三藏/孙悟空/猪八戒/沙悟净 by name, anyone else
as `某人说：…`), or `无对话内容`. For each of the four, the lines become one multi-turn conversation: the other
speakers' lines are the `input` of a turn, the character's following lines its `output`.

Files: `<out>.raw.jsonl` (the answer for each passage, resumable), `<out>` (XTuner records of the four, rebuilt
from the raw answers at the end of every run, so a better parser needs no new requests), `<out>.rejects.jsonl`
(answers in neither form, with their raw text; `--retry-rejects` asks those passages again), and the manifest.
A run that yields no record fails and says why.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from pipeline.llm import Request
from pipeline.passages import Passage, novel_and_passages, passage_parser, run_passage_step
from pipeline.roles import UNKNOWN, conversation, resolve_role, turns_for
from pipeline.step import Rejected, add_step_args, parse_args, records_report
from pipeline.store import read_jsonl
from xiyou.character import load_characters
from xiyou.io import write_jsonl_atomic

STEP = "long_dialogue"

#: The long-dialogue extraction prompt of the specification (personas.md); the passage is appended after it.
PROMPT = (
    "你是一个对话整理大师，以下内容为《西游记》节选，请你整理出角色“唐三藏”，“孙悟空”，“猪八戒”，“沙悟净”四人的对话内容，"
    "当然，这四人在小说中可能以别的名字出现，如：唐三藏->金蝉子，孙悟空->猴王->行者等人物需要你根据理解自行判别，"
    "直接返回对话内容，返回格式为：唐三藏：{对话内容}，孙悟空：{对话内容}，猪八戒：{对话内容}，沙悟净：{对话内容}，"
    "某人说：{对话内容}；若内容中无对话，则直接回答“无对话内容”无需提及人物，若对话不完整或者你没法确定对话的人物关系，"
    "你可以放弃整理，直接回复“无对话内容”无需提及人物，若出现非四人内任务与四人对话，非四人内的以“某人说”记录，"
    "请保持对话的准确性，不要修改和翻译，请不要解释。以下为节选片段："
)
NO_DIALOGUE = "无对话内容"
_LINE = re.compile(r"^\s*(?:[-*•]|\d+[.、)）])?\s*([^：:\s]{1,12}?)\s*[：:]\s*(.+?)\s*$")
_WRAP = "{}｛｝“”\"「」'‘’"


def parse_dialogue(answer: str) -> list[tuple[str, str]]:
    """(speaker, text) pairs from `角色：内容` lines; speakers resolved to ids (某人说 → unknown). [] for 无对话内容.

    A line without a `角色：` label continues the previous speaker's words (speech of several paragraphs); text
    before the first label is dropped."""
    out: list[tuple[str, str]] = []
    for raw_line in answer.replace("\r", "").split("\n"):
        if not raw_line.strip() or (NO_DIALOGUE in raw_line and len(raw_line.strip()) <= len(NO_DIALOGUE) + 2):
            continue
        m = _LINE.match(raw_line)
        if not m:
            if out:
                speaker, text = out[-1]
                out[-1] = (speaker, text + "\n" + _clean(raw_line))
            continue
        label, text = m.group(1), _clean(m.group(2))
        if not text:
            continue
        speaker = UNKNOWN if label.startswith("某人") else resolve_role(label)
        out.append((speaker, text))
    return out


def _clean(text: str) -> str:
    text = text.strip()
    if len(text) > 1 and text[-1] in "，,；;" and text[-2] in _WRAP:  # `{…}，` the separator of the asked format
        text = text[:-1]
    return text.strip(_WRAP).strip()


def plan(passages: list[Passage]) -> list[Request]:
    return [
        Request(id=p.id, messages=[{"role": "user", "content": PROMPT + "\n" + p.text}], meta={"passage": p})
        for p in passages
    ]


def to_records(raw: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Counter[str]]:
    """The records of the four, and the passages counted by outcome."""
    characters = load_characters()
    records: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    for rec in sorted(raw, key=lambda r: (r["chapter"], r["start"])):
        lines = parse_dialogue(rec["answer"])
        if not lines:
            counts["no_dialogue" if NO_DIALOGUE in rec["answer"] else "unparsed"] += 1  # unparsed: older runs
            continue
        counts["with_dialogue"] += 1
        for cid, character in characters.items():
            turns = turns_for(lines, cid)
            if not turns:
                continue
            records.append(
                {
                    "id": f"long-{cid}-{rec['id']}",
                    "character": cid,
                    "source": STEP,
                    "conversation": conversation(character.meta_instruction, turns),
                }
            )
    return records, counts


def check_answer(text: str) -> str:
    """The answer, kept raw (records are rebuilt from it by each run); Rejected when it has no `角色：内容` line."""
    if not parse_dialogue(text) and NO_DIALOGUE not in text:
        raise Rejected(f"no `角色：内容` lines and not “{NO_DIALOGUE}”")
    return text


def finish(out: Path, raw_path: Path) -> dict[str, Any]:
    """Rebuild the records from every answer kept so far; the manifest's report."""
    raw = read_jsonl(raw_path) if raw_path.exists() else []
    records, counts = to_records(raw)
    write_jsonl_atomic(out, records)
    turns: Counter[str] = Counter()
    for r in records:
        turns[r["character"]] += len(r["conversation"])
    return records_report(
        records,
        f"{len(raw)} passages answered in the asked format: {counts['no_dialogue']} without dialogue, "
        f"{counts['with_dialogue']} without a turn of the four",
        passages_done=len(raw),
        passages=dict(counts),
        turns=dict(turns),
    )


def build_parser() -> argparse.ArgumentParser:
    p = passage_parser(STEP, "Sort the novel's passages into the four's multi-turn dialogues with an LLM (resumable).")
    p.add_argument("--passage-tokens", type=int, default=1500, help="passage size ≈ characters (default 1500)")
    add_step_args(p, temperature=0.2, max_tokens=2048)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    novel, passages = novel_and_passages(parser, args, args.passage_tokens)

    def report(raw_path: Path) -> dict[str, Any]:
        result = finish(args.out, raw_path)
        done, per = result["passages_done"], result["records"]
        print(f"long_dialogue: {done} passages answered; records per character: {per}", file=sys.stderr)
        return result

    return run_passage_step(
        parser,
        args,
        novel,
        plan(passages),
        answer=lambda request, text: request.meta["passage"].record(answer=check_answer(text)),
        prompts={"long_dialogue_prompt": PROMPT},
        sizes={"passage_tokens": args.passage_tokens},
        finish=report,
    )


if __name__ == "__main__":
    sys.exit(main())

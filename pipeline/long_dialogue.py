"""Long dialogues: the specification's dialogue-sorting prompt over the novel's passages, as multi-turn records.

    python -m pipeline.long_dialogue --novel ../shared/data/xiyouji.txt --out data/long.jsonl \\
        --base-url https://api.example.com/v1 --model some-model [--chapters 1-20]

The LLM returns the passage's conversation as `角色：内容` lines (唐三藏/孙悟空/猪八戒/沙悟净 by name, anyone else
as `某人说：…`), or `无对话内容`. For each of the four, the lines become one multi-turn conversation: the other
speakers' lines are the `input` of a turn, the character's following lines its `output`.

Files: `<out>.raw.jsonl` (the answer for each passage, resumable), `<out>` (XTuner records of the four, rebuilt
from the raw answers at the end of every run, so a better parser needs no new requests), and the manifest.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from pipeline.llm import Request, RunStats, estimate_tokens
from pipeline.options import add_engine_args, engine_config, run_and_record, setup_logging
from pipeline.passages import Passage, load_novel_or_exit, novel_passages, parse_chapters
from pipeline.roles import UNKNOWN, conversation, resolve_role, turns_for
from pipeline.store import JsonlStore, StoreError, existing_ids, read_jsonl
from xiyou.character import load_characters
from xiyou.io import write_text_atomic

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


def to_records(raw: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], Counter[str], list[dict[str, Any]]]:
    """The records of the four, the passages counted by outcome, and the answers that could not be read."""
    characters = load_characters()
    records: list[dict[str, Any]] = []
    counts: Counter[str] = Counter()
    rejects: list[dict[str, Any]] = []
    for rec in sorted(raw, key=lambda r: (r["chapter"], r["start"])):
        lines = parse_dialogue(rec["answer"])
        if not lines:
            if NO_DIALOGUE in rec["answer"]:
                counts["no_dialogue"] += 1
            else:
                counts["unparsed"] += 1
                rejects.append(
                    {"id": rec["id"], "passage": rec["id"], "error": "no `角色：内容` lines", "raw": rec["answer"]}
                )
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
    return records, counts, rejects


def finish(out: Path, raw_path: Path, rejects_path: Path) -> dict[str, Any]:
    """Rebuild the records and the rejects (answers without `角色：内容` lines) from the raw answers."""
    raw = read_jsonl(raw_path) if raw_path.exists() else []
    records, counts, rejects = to_records(raw)
    write_text_atomic(out, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    write_text_atomic(rejects_path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejects))
    turns: Counter[str] = Counter()
    for r in records:
        turns[r["character"]] += len(r["conversation"])
    report: dict[str, Any] = {
        "passages_done": len(raw),
        "passages": dict(counts),
        "records": dict(Counter(r["character"] for r in records)),
        "records_total": len(records),
        "turns": dict(turns),
        "rejects_total": len(rejects),
    }
    if not records:
        report["no_records_hint"] = (
            f"{len(raw)} passages answered: {counts['no_dialogue']} without dialogue, {counts['with_dialogue']} "
            f"without a turn of the four, {len(rejects)} not in the asked `角色：内容` format (see {rejects_path}; "
            "try a stronger --model)"
        )
    return report


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.long_dialogue",
        description="Sort the novel's passages into the four's multi-turn dialogues with an LLM (resumable).",
    )
    p.add_argument("--novel", type=Path, default=None, help="the novel's text (default: $XIYOU_NOVEL)")
    p.add_argument("--out", type=Path, required=True, help="XTuner records of the four (JSONL); rerunning resumes")
    p.add_argument("--chapters", default=None, help="e.g. 1-10,27 (default: all)")
    p.add_argument("--passage-tokens", type=int, default=1500, help="passage size ≈ characters (default 1500)")
    p.add_argument("--dry-run", action="store_true", help="print the request count and a token estimate, ask nothing")
    add_engine_args(p, temperature=0.2, max_tokens=2048)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    novel = load_novel_or_exit(args.novel)
    try:
        passages = novel_passages(novel, args.passage_tokens, 0, parse_chapters(args.chapters))
    except ValueError as e:
        parser.error(str(e))
    if not passages:
        parser.error(f"--chapters {args.chapters}: no such chapters in the novel")
    requests = plan(passages)
    stem = args.out.name[: -len(".jsonl")] if args.out.name.endswith(".jsonl") else args.out.name
    raw_path = args.out.with_name(stem + ".raw.jsonl")
    rejects_path = args.out.with_name(stem + ".rejects.jsonl")
    if args.dry_run:
        done = existing_ids(raw_path)
        todo = [r for r in requests if r.id not in done]
        tokens = sum(estimate_tokens(r.messages[0]["content"]) for r in todo)
        print(f"{len(requests)} passages; {len(todo)} to ask; ≈{tokens:,} prompt tokens (one per CJK character)")
        return 0
    config = engine_config(args, parser)
    try:
        raw = JsonlStore(raw_path).open()
    except StoreError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with raw:
        todo = [r for r in requests if r.id not in raw]

        def handle(request: Request, answer: str) -> None:
            p: Passage = request.meta["passage"]
            raw.append({"id": p.id, "chapter": p.chapter, "start": p.start, "end": p.end, "answer": answer})

        def report(stats: RunStats) -> dict[str, Any]:
            result = finish(args.out, raw_path, rejects_path)
            print(
                f"long_dialogue: {result['passages_done']} passages answered; records per character: "
                f"{result['records']}; {result['rejects_total']} answers unreadable (see {rejects_path})",
                file=sys.stderr,
            )
            return result

        return run_and_record(
            step=STEP,
            out=args.out,
            config=config,
            requests=todo,
            handle=handle,
            planned=len(requests),
            already_done=len(requests) - len(todo),
            prompts={"long_dialogue_prompt": PROMPT},
            parameters={
                "novel_sha256": novel.sha256,
                "chapters": args.chapters or "all",
                "passage_tokens": args.passage_tokens,
            },
            finish=report,
        )


if __name__ == "__main__":
    sys.exit(main())

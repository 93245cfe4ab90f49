"""LLM dialogue extraction: who says what, passage by passage, checked against the rule-based canon attribution.

    python -m pipeline.extract --novel ../shared/data/xiyouji.txt --out data/extract.jsonl \\
        --base-url https://api.example.com/v1 --model some-model [--chapters 1-20]

The novel (read by the canon loader) is cut into passages of about 500 tokens (characters) overlapping by about
100; the LLM is asked for the passage's dialogue as JSON `[{"role": …, "dialogue": …}]`. Each answer is validated
(pydantic); a malformed one goes to `<out>.rejects.jsonl` with the raw text and is counted, never crashing the run
(rerun with `--retry-rejects` to ask those passages again). Roles resolve through the characters' aliases (行者 →
wukong); lines seen twice in overlapping passages are kept once.

Files: `<out>.raw.jsonl` (one resumable record per passage), `<out>` (XTuner records for the four characters,
rebuilt from the raw file at the end of every run: a line of a character with the line before it as input),
`<out>.rejects.jsonl`, and the manifest, whose report gives the agreement with the canon's rule-based speakers.
"""

from __future__ import annotations

import argparse
import bisect
import json
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from pipeline.llm import Request, short_hash
from pipeline.passages import Passage, novel_and_passages, passage_parser, run_passage_step
from pipeline.roles import UNKNOWN, conversation, resolve_role
from pipeline.step import Rejected, add_step_args, parse_args, records_report
from pipeline.store import read_jsonl
from xiyou.canon import CHARACTER_IDS, Novel, build_canon
from xiyou.character import load_characters
from xiyou.io import write_jsonl_atomic

STEP = "extract"
CONTEXT_GAP = 150  # characters of narration between two lines that still makes them one exchange

PROMPT = (
    "以下是《西游记》第{chapter}回的一段节选。请找出其中人物说的每一句话（引号“”中的对白），按出现的先后顺序，"
    '以 JSON 数组返回，每一项为 {{"role": "说话人", "dialogue": "对白原文"}}。\n'
    "说话人用书中对他的称呼（如 行者、八戒、三藏、沙僧、观音）；无法确定说话人时写“未知”。"
    "对白必须照抄原文，不要改写、翻译或解释；没有对白时返回 []。只返回 JSON，不要其他文字。\n\n节选：\n{passage}"
)


class Line(BaseModel):
    model_config = ConfigDict(extra="ignore", str_strip_whitespace=True)

    role: str = ""
    dialogue: str = Field(min_length=1)


LINES = TypeAdapter(list[Line])


class MalformedAnswer(Rejected):
    """The LLM's answer is not the JSON asked for."""


def parse_answer(text: str) -> list[Line]:
    """The lines of an answer: a JSON array (possibly in a ``` fence, or under one key of an object)."""
    body = text.strip()
    fence = re.search(r"```(?:json)?\s*(.*?)```", body, re.S)
    if fence:
        body = fence.group(1).strip()
    if body in ("", "无", "无对话内容"):
        return []
    start = min((i for i in (body.find("["), body.find("{")) if i >= 0), default=-1)
    if start < 0:
        raise MalformedAnswer("no JSON array in the answer")
    try:
        data, _ = json.JSONDecoder().raw_decode(body[start:])
    except ValueError as e:
        raise MalformedAnswer(f"not valid JSON: {e}") from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise MalformedAnswer("a JSON object, not the array of {role, dialogue} asked for")
        data = lists[0]
    try:
        return LINES.validate_python(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise MalformedAnswer(f"item {where}: {first['msg']}") from None


def _norm(text: str) -> str:
    return re.sub(r"[\s\W_]+", "", text)


def plan(passages: list[Passage]) -> list[Request]:
    return [
        Request(
            id=p.id,
            messages=[{"role": "user", "content": PROMPT.format(chapter=p.chapter, passage=p.text)}],
            meta={"passage": p},
        )
        for p in passages
    ]


# --- after the requests: merge, locate, compare, write -----------------------------------------------------------
def merge_lines(raw: list[dict[str, Any]], novel: Novel) -> list[dict[str, Any]]:
    """Every extracted line once (overlaps de-duplicated), in novel order, located in its chapter where possible."""
    texts = {c.number: c.text for c in novel.chapters}
    seen: set[tuple[int, str]] = set()
    out: list[dict[str, Any]] = []
    for rec in sorted(raw, key=lambda r: (r["chapter"], r["start"])):
        chapter_text = texts.get(rec["chapter"], "")
        cursor = rec["start"]
        for n, line in enumerate(rec["lines"]):
            key = (rec["chapter"], _norm(line["dialogue"]))
            if not key[1] or key in seen:
                continue
            seen.add(key)
            pos = chapter_text.find(line["dialogue"], cursor, rec["end"] + 50)
            if pos >= 0:
                cursor = pos + len(line["dialogue"])
            out.append(
                {
                    "chapter": rec["chapter"],
                    "offset": pos if pos >= 0 else None,
                    "order": (pos if pos >= 0 else cursor, n),
                    "speaker": resolve_role(line["role"]),
                    "role": line["role"],
                    "text": line["dialogue"],
                    "passage": rec["id"],
                }
            )
    out.sort(key=lambda x: (x["chapter"], x["order"]))
    return out


def agreement(lines: list[dict[str, Any]], canon_utterances: list[Any]) -> dict[str, Any]:
    """How often the LLM's speaker matches the canon's rule-based one, on lines both attribute."""
    by_chapter: dict[int, list[Any]] = defaultdict(list)
    for u in canon_utterances:
        by_chapter[u.chapter].append(u)
    starts = {c: [u.offset for u in us] for c, us in by_chapter.items()}
    located = compared = agreed = 0
    canon_unknown = 0
    per: dict[str, Counter[str]] = defaultdict(Counter)
    for line in lines:
        if line["offset"] is None:
            continue
        us = by_chapter.get(line["chapter"], [])
        i = bisect.bisect_right(starts.get(line["chapter"], []), line["offset"]) - 1
        if i < 0:
            continue
        u = us[i]
        if not (u.offset <= line["offset"] < max(u.end, u.offset + len(u.text) + 2)):
            continue
        located += 1
        if u.speaker == UNKNOWN or line["speaker"] == UNKNOWN:
            canon_unknown += u.speaker == UNKNOWN
            continue
        compared += 1
        same = u.speaker == line["speaker"]
        agreed += same
        key = u.speaker if u.speaker in CHARACTER_IDS else "others"
        per[key]["compared"] += 1
        per[key]["agreed"] += same
    return {
        "lines": len(lines),
        "matched_canon_utterances": located,
        "compared": compared,
        "agreed": agreed,
        "agreement": round(agreed / compared, 4) if compared else None,
        "canon_unknown": canon_unknown,
        "by_canon_speaker": {k: dict(v) for k, v in sorted(per.items())},
    }


def to_records(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One XTuner record per line of the four that follows another speaker's line closely (the input)."""
    characters = load_characters()
    records = []
    for prev, line in zip([None, *lines], lines, strict=False):  # (None, first), (first, second), …; [] → none
        cid = line["speaker"]
        if cid not in characters or prev is None or prev["chapter"] != line["chapter"] or prev["speaker"] == cid:
            continue
        if line["offset"] is not None and prev["offset"] is not None:
            if line["offset"] - (prev["offset"] + len(prev["text"])) > CONTEXT_GAP:
                continue
        elif line["passage"] != prev["passage"]:
            continue
        where = f"{line['offset']:06d}" if line["offset"] is not None else f"h{short_hash(line['text'], 8)}"
        records.append(
            {
                "id": f"extract-{cid}-c{line['chapter']:03d}-{where}",
                "character": cid,
                "source": STEP,
                "conversation": conversation(characters[cid].meta_instruction, [(prev["text"], line["text"])]),
            }
        )
    return records


def finish(out: Path, raw_path: Path, novel: Novel) -> dict[str, Any]:
    """Rebuild the records from every passage answered so far; the manifest's report."""
    raw = read_jsonl(raw_path) if raw_path.exists() else []
    lines = merge_lines(raw, novel)
    records = to_records(lines)
    write_jsonl_atomic(out, records)
    return records_report(
        records,
        f"{len(raw)} passages answered with {len(lines)} lines, none a line of the four answering another speaker",
        passages_done=len(raw),
        lines_extracted=sum(len(r["lines"]) for r in raw),
        lines_after_dedup=len(lines),
        speakers=dict(Counter(line["speaker"] for line in lines).most_common(12)),
        canon_agreement=agreement(lines, build_canon(novel).utterances),
    )


def build_parser() -> argparse.ArgumentParser:
    p = passage_parser(STEP, "Extract attributed dialogue from the novel with an LLM; compare with the canon's.")
    p.add_argument("--chunk-tokens", type=int, default=500, help="passage size in tokens ≈ characters (default 500)")
    p.add_argument("--overlap", type=int, default=100, help="overlap between passages (default 100)")
    add_step_args(p, temperature=0.0, max_tokens=2048)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    novel, passages = novel_and_passages(parser, args, args.chunk_tokens, args.overlap)

    def answer(request: Request, text: str) -> dict[str, Any]:
        lines = parse_answer(text)
        return request.meta["passage"].record(lines=[line.model_dump() for line in lines])

    def report(raw_path: Path) -> dict[str, Any]:
        result = finish(args.out, raw_path, novel)
        agree = result["canon_agreement"]
        print(
            f"extract: {result['lines_after_dedup']} lines from {result['passages_done']} passages, "
            f"{result['records_total']} records; agreement with the canon's speakers: "
            f"{agree['agreed']}/{agree['compared']}"
            + (f" = {agree['agreement']:.1%}" if agree["agreement"] is not None else ""),
            file=sys.stderr,
        )
        return result

    prompts, sizes = {"extract_prompt": PROMPT}, {"chunk_tokens": args.chunk_tokens, "overlap": args.overlap}
    return run_passage_step(
        parser, args, novel, plan(passages), answer=answer, prompts=prompts, sizes=sizes, finish=report
    )


if __name__ == "__main__":
    sys.exit(main())

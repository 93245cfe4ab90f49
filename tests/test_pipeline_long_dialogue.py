"""pipeline.long_dialogue against the scripted server answering `角色：内容` lines from the canon's dialogue."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from scripted_openai import Fault, ScriptedOpenAI

from pipeline.long_dialogue import PROMPT, parse_dialogue
from pipeline.passages import chapter_passages
from xiyou.canon import get_canon
from xiyou.character import load_characters

REPO = Path(__file__).resolve().parent.parent


def test_parse_dialogue_lines():
    answer = (
        "好的，整理如下\n唐三藏：{徒弟，前面是什么地方？}，\n1. 孙悟空：“师父，是座山。”\n某人说：此山有妖。\n\n"
        "行者： 俺去看看，\n第二段话没有标签"
    )
    assert parse_dialogue(answer) == [
        ("sanzang", "徒弟，前面是什么地方？"),
        ("wukong", "师父，是座山。"),
        ("unknown", "此山有妖。"),
        ("wukong", "俺去看看，\n第二段话没有标签"),
    ]
    assert parse_dialogue("无对话内容") == [] and parse_dialogue("无对话内容。") == []


def test_prompt_is_the_specified_one(personas_path):
    spec = personas_path.read_text(encoding="utf-8")
    assert PROMPT in spec  # verbatim from personas.md


NAMES = {cid: c.name for cid, c in load_characters().items()}


def _llm(canon):
    def reply(req):
        prompt = req.last_user
        passage = prompt.split(PROMPT + "\n", 1)[1]
        for chapter in canon.novel.chapters:
            start = chapter.text.find(passage)
            if start >= 0:
                break
        lines = [
            f"{NAMES.get(u.speaker, '某人说')}：{u.text}"
            for u in canon.utterances
            if u.chapter == chapter.number and start <= u.offset < start + len(passage)
        ]
        return "\n".join(lines) if lines else "无对话内容"

    return reply


def _expected_turns(lines: list[tuple[str, str]], cid: str) -> list[tuple[str, str]]:
    """Written out here, not with pipeline.roles.turns_for: the lines grouped by whether `cid` said them; a group of
    the others' lines followed by a group of his is one turn (his lines before anyone else spoke start none)."""
    groups = [(mine, "\n".join(t for _, t in g)) for mine, g in itertools.groupby(lines, key=lambda x: x[0] == cid)]
    return [(said[1], answer[1]) for said, answer in itertools.pairwise(groups) if not said[0] and answer[0]]


def test_expected_turns_by_hand():
    lines = [("wukong", "先说"), ("观音", "问一"), ("bajie", "问二"), ("wukong", "答一"), ("wukong", "答二")]
    assert _expected_turns(lines, "wukong") == [("问一\n问二", "答一\n答二")]
    assert _expected_turns(lines, "bajie") == [("先说\n问一", "问二")]
    assert _expected_turns(lines, "wujing") == []


@pytest.mark.slow
def test_long_dialogue_end_to_end(tmp_path, novel_path):
    canon = get_canon(novel_path)
    out = tmp_path / "long.jsonl"
    args = [
        sys.executable, "-m", "pipeline.long_dialogue", "--novel", str(novel_path), "--out", str(out),
        "--chapters", "22-23", "--base-url", "", "--model", "m", "--backoff", "0.01", "--timeout", "1",
        "--no-progress",
    ]  # fmt: skip
    with ScriptedOpenAI(reply=_llm(canon)) as s:
        args[args.index("--base-url") + 1] = s.base_url
        s.queue_faults(Fault.server_error(502), Fault.stall(5), Fault.rate_limit(0.01), Fault.malformed())
        proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        asked = len(s.chat_requests())
        proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and len(s.chat_requests()) == asked  # resumed: nothing asked again
    passages = [p for c in (22, 23) for p in chapter_passages(canon.novel.chapter(c), 1500, 0)]
    assert asked == len(passages) + 4  # each passage once, plus the 4 retries
    records = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    expected = {}
    for p in passages:
        lines = [
            (u.speaker, u.text) for u in canon.utterances if u.chapter == p.chapter and p.start <= u.offset < p.end
        ]
        for cid in NAMES:
            turns = _expected_turns(lines, cid)
            if turns:
                expected[f"long-{cid}-{p.id}"] = turns
    assert {r["id"] for r in records} == set(expected)
    assert any(len(r["conversation"]) >= 3 for r in records)  # real multi-turn conversations
    for r in records:
        conv = r["conversation"]
        assert conv[0]["system"] == load_characters()[r["character"]].meta_instruction
        assert all("system" not in t for t in conv[1:])
        assert [(t["input"], t["output"]) for t in conv] == expected[r["id"]]
    assert re.search(r"records per character", proc.stderr)


def test_long_dialogue_that_produced_nothing_fails_and_keeps_the_answers_as_rejects(tmp_path, novel_path):
    """Issue 17, finding 2: answers the parser cannot read made "N records (N new)", exit 0 and an empty output.
    Now: the records line counts real records, unreadable answers go to a rejects file, and the run fails."""
    out = tmp_path / "long.jsonl"
    args = [
        sys.executable, "-m", "pipeline.long_dialogue", "--novel", str(novel_path), "--out", str(out),
        "--chapters", "1", "--base-url", "", "--model", "m", "--timeout", "5", "--no-progress",
    ]  # fmt: skip
    with ScriptedOpenAI(reply="我不太确定这段讲的是什么。") as s:
        args[args.index("--base-url") + 1] = s.base_url
        proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
        asked = len(s.chat_requests())
        assert "<|im_end|>" in s.chat_requests()[0].json["stop"]  # the chat format's end of turn (finding 4)
    assert proc.returncode == 1, proc.stderr
    assert "no usable records" in proc.stderr and f"{asked} new" not in proc.stderr
    assert out.exists() and out.read_text(encoding="utf-8") == ""
    rejects = [json.loads(x) for x in (tmp_path / "long.rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rejects) == asked
    assert all(r["raw"] == "我不太确定这段讲的是什么。" and r["error"] for r in rejects)
    assert str(tmp_path / "long.rejects.jsonl") in proc.stderr
    manifest = json.loads((tmp_path / "long.manifest.json").read_text(encoding="utf-8"))
    run = manifest["runs"][-1]
    assert run["stats"]["status"] == "no_records" and run["report"]["rejects_total"] == asked

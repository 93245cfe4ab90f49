"""pipeline.extract against the scripted server playing a faithful LLM (it answers from the canon's lines)."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from scripted_openai import Fault, ScriptedOpenAI

from pipeline.extract import MalformedAnswer, parse_answer
from pipeline.passages import chapter_passages
from pipeline.roles import resolve_role, turns_for
from xiyou.canon import Chapter, get_canon
from xiyou.character import get_character

REPO = Path(__file__).resolve().parent.parent
LABEL = {"wukong": "行者", "sanzang": "三藏", "bajie": "呆子", "wujing": "沙僧"}  # aliases, not ids


def test_parse_answer_accepts_json_in_fences_and_objects():
    assert [x.role for x in parse_answer('[{"role": "行者", "dialogue": "师父！"}]')] == ["行者"]
    fenced = '好的：\n```json\n[{"role": "八戒", "dialogue": "猴哥"}, {"role": "", "dialogue": "嗯"}]\n```'
    assert [x.dialogue for x in parse_answer(fenced)] == ["猴哥", "嗯"]
    assert parse_answer('{"dialogues": [{"role": "沙僧", "dialogue": "大哥"}]}')[0].role == "沙僧"
    assert parse_answer("[]") == [] and parse_answer("无对话内容") == []
    for bad in ("好的，以下是对话", '[{"role": "行者"}]', '[{"role": "行者", "dialogue": "unterminated', "[1, 2]"):
        with pytest.raises(MalformedAnswer):
            parse_answer(bad)


def test_roles_resolve_through_aliases():
    assert resolve_role("行者") == resolve_role("孙大圣") == resolve_role("那猴王") == "wukong"
    assert resolve_role("唐僧") == resolve_role("长老") == "sanzang"
    assert resolve_role("那呆子") == resolve_role("猪八戒") == "bajie"
    assert resolve_role("沙和尚") == "wujing"
    assert resolve_role("Monkey King") == resolve_role(" sun  wukong ") == resolve_role("孙长老") == "wukong"
    assert resolve_role("Pigsy") == resolve_role("二师兄") == "bajie"
    assert resolve_role("观音") == "观音"
    assert resolve_role("未知") == resolve_role("") == resolve_role("某人说") == "unknown"


def test_turns_from_lines():
    lines = [
        ("wukong", "先说"),
        ("观音", "问一"),
        ("八戒", "问二"),
        ("wukong", "答一"),
        ("wukong", "答二"),
        ("观音", "再问"),
    ]
    assert turns_for(lines, "wukong") == [("问一\n问二", "答一\n答二")]
    assert turns_for(lines, "bajie") == []


def test_passages_cover_the_chapter_with_overlap():
    text = "".join(f"第{i}句话说得很长很长很长很长。" for i in range(200))
    ps = list(chapter_passages(Chapter(1, "t", text), 500, 100))
    assert ps[0].start == 0 and ps[-1].end == len(text)
    for a, b in itertools.pairwise(ps):
        assert b.start < a.end and a.end - b.start <= 160  # overlapping by about 100
        assert text[a.end - 1] == "。"  # cut at a sentence end
    assert len({p.id for p in ps}) == len(ps)


def _faithful_llm(canon):
    """Answers like a good LLM: the canon's utterances in the asked passage, speakers by alias, as JSON."""
    by_chapter = {}
    for u in canon.utterances:
        by_chapter.setdefault(u.chapter, []).append(u)

    def reply(req):
        prompt = req.last_user
        chapter = int(re.search(r"第(\d+)回", prompt).group(1))
        passage = prompt.split("节选：\n", 1)[1]
        text = canon.novel.chapter(chapter).text
        start = text.find(passage)
        lines = [
            {"role": LABEL.get(u.speaker, "未知" if u.speaker == "unknown" else u.speaker), "dialogue": u.text}
            for u in by_chapter.get(chapter, [])
            if start <= u.offset and u.offset + len(u.text) <= start + len(passage)
        ]
        body = json.dumps(lines, ensure_ascii=False)
        if "“" in passage and len(passage) % 5 == 0:  # some answers are garbage: rejected, counted
            return "好的！以下是节选中的对话内容，请查收。"
        return f"```json\n{body}\n```" if len(passage) % 2 else body

    return reply


@pytest.mark.slow
def test_extract_end_to_end_with_faults_rejects_and_resume(tmp_path, novel_path):
    canon = get_canon(novel_path)
    out = tmp_path / "extract.jsonl"
    args = [
        sys.executable, "-m", "pipeline.extract", "--novel", str(novel_path), "--out", str(out), "--chapters", "2-3",
        "--base-url", "", "--model", "m", "--backoff", "0.01", "--timeout", "1", "--no-progress",
    ]  # fmt: skip
    with ScriptedOpenAI(reply=_faithful_llm(canon)) as s:
        args[args.index("--base-url") + 1] = s.base_url
        s.queue_faults(Fault.rate_limit(0.01), Fault.server_error(), Fault.stall(5), Fault.drop(), Fault.malformed())
        proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        asked = len(s.chat_requests())
        # a rerun asks nothing (rejected passages are not asked again unless --retry-rejects)
        proc2 = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc2.returncode == 0 and len(s.chat_requests()) == asked
    raw = [json.loads(x) for x in (tmp_path / "extract.raw.jsonl").read_text(encoding="utf-8").splitlines()]
    rejects = [json.loads(x) for x in (tmp_path / "extract.rejects.jsonl").read_text(encoding="utf-8").splitlines()]
    passages = [p for c in (2, 3) for p in chapter_passages(canon.novel.chapter(c), 500, 100)]
    assert len(raw) + len(rejects) == len(passages)  # every passage answered once: kept or rejected
    assert rejects and all(r["raw"].startswith("好的") and r["error"] for r in rejects)
    manifest = json.loads((tmp_path / "extract.manifest.json").read_text(encoding="utf-8"))
    run = manifest["runs"][0]
    assert run["stats"]["retries"] == 5
    report = run["report"]
    assert report["rejects_total"] == len(rejects)
    # overlapping passages saw some lines twice; each is kept once
    assert report["lines_extracted"] > report["lines_after_dedup"]
    agree = report["canon_agreement"]
    assert agree["compared"] > 20 and agree["agreement"] == 1.0  # the faithful LLM agrees with the canon
    records = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert records and len({r["id"] for r in records}) == len(records)
    canon_lines = {(u.speaker, u.text) for u in canon.utterances if u.chapter in (2, 3)}
    for r in records:
        [turn] = r["conversation"]
        assert (r["character"], turn["output"]) in canon_lines  # 行者 → wukong etc., the line verbatim
        assert turn["system"] == get_character(r["character"]).meta_instruction
    assert "agreement with the canon" in proc.stderr


def test_extract_with_no_dialogue_lines_records_the_passages_and_says_so(tmp_path, novel_path):
    """A weak model (issue 17, finding 1): every answer is garbage or empty. No crash: the passages are recorded
    as rejected or empty, the output and the manifest are written, the exit code says nothing usable came out,
    and a rerun asks nothing and says the same."""
    out = tmp_path / "extract.jsonl"
    args = [
        sys.executable, "-m", "pipeline.extract", "--novel", str(novel_path), "--out", str(out), "--chapters", "1",
        "--base-url", "", "--model", "m", "--backoff", "0.01", "--timeout", "5", "--no-progress",
    ]  # fmt: skip
    answers = itertools.cycle(["[]", "好的，我明白了。"])
    with ScriptedOpenAI(reply=lambda r: next(answers)) as s:
        args[args.index("--base-url") + 1] = s.base_url
        proc = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        assert "no usable records" in proc.stderr and "0 lines" in proc.stderr
        asked = len(s.chat_requests())
        assert asked > 1
        proc2 = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc2.returncode == 1 and "Traceback" not in proc2.stderr, proc2.stderr
        assert "no usable records" in proc2.stderr
        assert len(s.chat_requests()) == asked  # every passage was recorded: nothing asked again
        assert "<|im_end|>" in s.chat_requests()[0].json["stop"]  # the chat format's end of turn (finding 4)
    assert out.exists() and out.read_text(encoding="utf-8") == ""
    raw = (tmp_path / "extract.raw.jsonl").read_text(encoding="utf-8").splitlines()
    rejects = (tmp_path / "extract.rejects.jsonl").read_text(encoding="utf-8").splitlines()
    assert raw and rejects and len(raw) + len(rejects) == asked
    manifest = json.loads((tmp_path / "extract.manifest.json").read_text(encoding="utf-8"))
    assert [r["stats"]["status"] for r in manifest["runs"]] == ["no_records", "no_records"]

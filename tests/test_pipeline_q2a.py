"""pipeline.q2a end to end: records, resume, SIGKILL, Ctrl-C, transient failures, the key, a real server."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from scripted_openai import Fault, ScriptedOpenAI

from pipeline.q2a import read_questions, record_id
from xiyou.character import get_character

REPO = Path(__file__).resolve().parent.parent
FAKE_KEY = "sk-FAKE-xiyou-q2a-0123456789abcdef"


def _questions(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "questions.txt"
    path.write_text("".join(f"第{i}个问题：你今天吃了什么？\n" for i in range(n)), encoding="utf-8")
    return path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env.update(extra)
    return env


def _args(server_url: str, questions: Path, out: Path, repeat: int, *more: str) -> list[str]:
    return [
        sys.executable, "-m", "pipeline.q2a", "--character", "wukong", "--questions", str(questions),
        "--repeat", str(repeat), "--out", str(out), "--base-url", server_url, "--model", "wukong-api",
        "--backoff", "0.01", "--timeout", "5", "--no-progress", *more,
    ]  # fmt: skip


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=REPO, env=_env(**env), capture_output=True, text=True, timeout=300)


def _ids(out: Path) -> list[str]:
    return [json.loads(line)["id"] for line in out.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_records_are_xtuner_with_meta_instruction_and_stable_ids(tmp_path, questions_path):
    wukong = get_character("wukong")
    qfile = tmp_path / "q.txt"
    qfile.write_text("\n".join(read_questions(questions_path)[:3]) + "\n", encoding="utf-8")
    out = tmp_path / "wukong.jsonl"
    with ScriptedOpenAI(reply=lambda r: "  俺老孙答：" + r.last_user.split("我的问题是：")[-1] + "\n") as s:
        proc = _run(_args(s.base_url, qfile, out, 2))
        assert proc.returncode == 0, proc.stderr
        records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        assert len(records) == 6
        questions = read_questions(qfile)
        assert {r["id"] for r in records} == {record_id("wukong", q, k) for q in questions for k in range(2)}
        for r in records:
            [turn] = r["conversation"]
            assert turn["system"] == wukong.meta_instruction  # never "user", never the persona prompt
            assert turn["input"] in questions
            assert turn["output"] == "俺老孙答：" + turn["input"]  # the answer to this question, stripped
            assert r["character"] == "wukong" and r["source"] == "q2a"
        # the request is the persona prompt followed by the question, with the chosen model and temperature
        req = s.chat_requests()[0]
        assert req.messages[0]["content"].startswith(wukong.persona_prompt)
        assert req.messages[0]["content"][len(wukong.persona_prompt) :] in questions
        assert req.json["model"] == "wukong-api" and req.json["temperature"] == 0.7
        # the same command again asks nothing and changes nothing
        before = out.read_bytes()
        proc = _run(_args(s.base_url, qfile, out, 2))
        assert proc.returncode == 0 and out.read_bytes() == before
        assert len(s.chat_requests()) == 6
        # one more repeat asks only the new third answers
        proc = _run(_args(s.base_url, qfile, out, 3, "--temperature", "1.1"))
        assert proc.returncode == 0, proc.stderr
        assert len(s.chat_requests()) == 9 and len(set(_ids(out))) == 9
        assert s.chat_requests()[-1].json["temperature"] == 1.1
    manifest = json.loads(out.with_suffix(".manifest.json").read_text(encoding="utf-8"))
    assert [r["stats"]["succeeded"] for r in manifest["runs"]] == [6, 0, 3]
    last = manifest["runs"][-1]
    assert last["model"] == "wukong-api" and last["parameters"]["repeat"] == 3
    assert last["stats"]["already_done"] == 6 and last["stats"]["status"] == "complete"
    assert set(last["prompt_hashes"]) == {"persona_prompt", "meta_instruction"}


def test_dry_run_counts_and_asks_nothing(tmp_path):
    qfile = _questions(tmp_path, 7)
    out = tmp_path / "o.jsonl"
    proc = _run(_args("http://127.0.0.1:9/v1", qfile, out, 3, "--dry-run"))
    assert proc.returncode == 0, proc.stderr
    assert "21 requests" in proc.stdout and "21 to ask" in proc.stdout and "prompt tokens" in proc.stdout
    assert not out.exists()


@pytest.mark.slow
def test_sigkill_three_times_then_complete_has_each_id_once(tmp_path):
    qfile = _questions(tmp_path, 100)
    out = tmp_path / "kill.jsonl"
    expected = {record_id("wukong", q, k) for q in read_questions(qfile) for k in range(5)}
    assert len(expected) == 500
    rng = random.Random(20240601)
    with ScriptedOpenAI(latency=0.05) as s:
        args = _args(s.base_url, qfile, out, 5, "--concurrency", "8")
        for kill_no in range(3):
            have = len(_ids(out)) if out.exists() else 0
            target = have + rng.randint(20, 120)  # a random moment: after some more records are written
            proc = subprocess.Popen(args, cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline and proc.poll() is None:
                    if out.exists() and out.read_bytes().count(b"\n") >= target:
                        break
                    time.sleep(0.01)
                assert proc.poll() is None, f"run {kill_no} ended before it could be killed"
                time.sleep(rng.random() * 0.05)
                os.kill(proc.pid, signal.SIGKILL)
            finally:
                proc.wait(timeout=30)
            assert proc.returncode == -signal.SIGKILL
        killed_at = len(_ids(out))
        assert 0 < killed_at < 500
        proc = _run(args)
        assert proc.returncode == 0, proc.stderr
    ids = _ids(out)
    assert len(ids) == 500 and set(ids) == expected  # exactly the expected ids, none twice
    assert all(json.loads(line) for line in out.read_text(encoding="utf-8").splitlines())


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_keeps_finished_records(tmp_path):
    qfile = _questions(tmp_path, 60)
    out = tmp_path / "int.jsonl"
    with ScriptedOpenAI(latency=0.05) as s:
        args = _args(s.base_url, qfile, out, 2, "--concurrency", "4")
        proc = subprocess.Popen(args, cwd=REPO, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (out.exists() and out.read_bytes().count(b"\n") >= 10):
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "interrupted" in err and "run the same command again" in err
        assert "Traceback" not in err
        kept = _ids(out)
        assert 10 <= len(kept) < 120 and len(set(kept)) == len(kept)
        assert out.read_bytes().endswith(b"\n")
        manifest = json.loads(out.with_suffix(".manifest.json").read_text(encoding="utf-8"))
        assert manifest["runs"][-1]["stats"]["status"] == "interrupted"
        assert manifest["runs"][-1]["stats"]["succeeded"] == len(kept)
        proc2 = _run(args)
        assert proc2.returncode == 0, proc2.stderr
        # only the missing ones were asked again
        assert len(s.chat_requests()) <= 120 + 4  # at most the 4 in flight at the interrupt were asked twice
    ids = _ids(out)
    assert len(ids) == 120 and len(set(ids)) == 120


@pytest.mark.slow
def test_twenty_percent_transient_failures_complete_with_retries_counted(tmp_path):
    qfile = _questions(tmp_path, 50)
    out = tmp_path / "flaky.jsonl"
    with ScriptedOpenAI(transient_rate=0.2, seed=5) as s:
        proc = _run(_args(s.base_url, qfile, out, 4, "--concurrency", "16", "--max-retries", "10"))
        assert proc.returncode == 0, proc.stderr
        faults = [r for r in s.chat_requests() if r.fault is not None]
    assert len(set(_ids(out))) == 200 and len(_ids(out)) == 200
    assert 20 <= len(faults) <= 80  # about 20% of ~250 attempts failed
    stats = json.loads(out.with_suffix(".manifest.json").read_text(encoding="utf-8"))["runs"][-1]["stats"]
    assert stats["retries"] == len(faults)  # each failed attempt was retried once, and counted
    assert stats["succeeded"] == 200 and stats["failed"] == 0 and stats["status"] == "complete"
    assert set(stats["retries_by_reason"]) <= {"http_429", "http_500", "connection"}


def test_the_api_key_never_leaks(tmp_path):
    qfile = _questions(tmp_path, 5)
    out = tmp_path / "keys" / "o.jsonl"
    # some requests fail, transiently and permanently: error paths are where keys leak
    with ScriptedOpenAI(reply=lambda r: "收到：" + r.last_user) as s:
        s.queue_faults(Fault.server_error(), Fault.rate_limit(0.01), Fault.drop(), Fault.malformed())
        s.script = lambda r: Fault.server_error(400) if "第3个" in r.last_user else None
        proc = _run(_args(s.base_url, qfile, out, 2, "-v"), OPENAI_API_KEY=FAKE_KEY)
        assert proc.returncode == 1  # the 400s fail (permanent), the rest complete
        assert all(r.api_key == FAKE_KEY for r in s.chat_requests())  # the key was used…
        # …and from a .env file in the working directory, too
        (tmp_path / ".env").write_text(f"OPENAI_API_KEY={FAKE_KEY}\n")
        args = _args(s.base_url, qfile, tmp_path / "keys" / "o2.jsonl", 1, "-v")
        proc2 = subprocess.run(args, cwd=tmp_path, env=_env(PYTHONPATH=str(REPO)), capture_output=True, text=True)
        assert s.chat_requests()[-1].api_key == FAKE_KEY
    for text in (proc.stdout, proc.stderr, proc2.stdout, proc2.stderr):
        assert FAKE_KEY not in text and FAKE_KEY[8:20] not in text
    files = list((tmp_path / "keys").iterdir())
    assert {f.name for f in files} >= {"o.jsonl", "o.manifest.json", "o2.jsonl", "o2.manifest.json"}
    for f in files:
        assert FAKE_KEY not in f.read_text(encoding="utf-8")
    manifest = json.loads((tmp_path / "keys" / "o.manifest.json").read_text(encoding="utf-8"))
    assert manifest["runs"][0]["stats"]["failed"] == 2  # the two "第3个" requests, listed by id
    assert len(manifest["runs"][0]["stats"]["failures"]) == 2


@pytest.mark.slow
def test_against_a_real_openai_compatible_server(tmp_path, tiny_server, tiny_model):
    qfile = _questions(tmp_path, 2)
    out = tmp_path / "real.jsonl"
    args = _args(tiny_server.base_url, qfile, out, 1, "--max-tokens", "24", "--timeout", "120")
    args[args.index("--model") + 1] = tiny_server.model
    proc = _run(args, OPENAI_API_KEY=FAKE_KEY)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 2
    for r in records:
        assert r["conversation"][0]["output"].startswith(tiny_model.reply[:4])
        assert r["conversation"][0]["system"] == get_character("wukong").meta_instruction


def test_the_manifest_names_the_questions_file_wherever_it_was_run_from(tmp_path):
    """Issue 17, finding 5: a relative --questions was stored as given, meaningless from anywhere else."""
    work = tmp_path / "work"
    work.mkdir()
    _questions(work, 2)
    with ScriptedOpenAI(reply="俺老孙来也") as s:
        args = _args(s.base_url, Path("questions.txt"), Path("out.jsonl"), 1)
        proc = subprocess.run(args, cwd=work, env=_env(PYTHONPATH=str(REPO)), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((work / "out.manifest.json").read_text(encoding="utf-8"))
    assert manifest["runs"][0]["parameters"]["questions_file"] == str((work / "questions.txt").resolve())


def test_answers_stop_at_the_chat_formats_end_of_turn(tmp_path):
    """Issue 17, finding 4: a server that stops only at EOS let the text after `<|im_end|>` into the data. The
    steps send the end-of-turn markers as `stop`, and cut there themselves when a server ignores it."""
    qfile = _questions(tmp_path, 2)
    out = tmp_path / "stop.jsonl"
    with ScriptedOpenAI(reply="俺老孙来也！<|im_end|>\n八戒又偷懒<|endoftext|>") as s:  # ignores `stop`
        proc = _run(_args(s.base_url, qfile, out, 1))
        assert proc.returncode == 0, proc.stderr
        sent = s.chat_requests()
    assert all("<|im_end|>" in r.json["stop"] and "<|endoftext|>" in r.json["stop"] for r in sent)
    assert [json.loads(x)["conversation"][0]["output"] for x in out.read_text(encoding="utf-8").splitlines()] == [
        "俺老孙来也！",
        "俺老孙来也！",
    ]

"""Hostile conditions for the data steps' writers (issue 15, items 3 and 7): text that cannot be encoded, a full
disk. A failed write is a failed run (never "complete"), said in one line; what was written whole is kept; a rerun
after freeing space completes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from scripted_openai import ScriptedOpenAI

REPO = Path(__file__).resolve().parents[2]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env.update(extra)
    return env


def _questions(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "questions.txt"
    path.write_text("".join(f"第{i}个问题：你今天吃了什么？\n" for i in range(n)), encoding="utf-8")
    return path


def _q2a(base_url: str, questions: Path, out: Path, *more: str) -> list[str]:
    return [
        sys.executable, "-m", "pipeline.q2a", "--character", "wukong", "--questions", str(questions), "--repeat", "1",
        "--out", str(out), "--base-url", base_url, "--model", "m", "--backoff", "0.01", "--timeout", "5",
        "--no-progress", *more,
    ]  # fmt: skip


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_a_lone_surrogate_in_an_answer_is_stored_and_the_run_completes(tmp_path):
    questions = _questions(tmp_path, 2)
    out = tmp_path / "q2a.jsonl"
    # the scripted server escapes its JSON: "\ud800" arrives as half a surrogate pair
    with ScriptedOpenAI(reply=lambda r: "俺老孙\ud800来也" if "第0个" in r.last_user else "好") as s:
        proc = subprocess.run(_q2a(s.base_url, questions, out), cwd=REPO, env=_env(), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    records = _lines(out)
    assert len(records) == 2
    outputs = sorted(r["conversation"][0]["output"] for r in records)
    assert outputs == ["俺老孙\ufffd来也", "好"]
    run = json.loads(out.with_suffix(".manifest.json").read_text(encoding="utf-8"))["runs"][-1]
    assert run["stats"]["status"] == "complete" and run["stats"]["succeeded"] == 2


# --- a full disk ---------------------------------------------------------------------------------------------------
_FAULTY_WRITES = textwrap.dedent(
    """
    # sitecustomize for the test: os.write into files under XIYOU_TEST_FULL_DIR fails with ENOSPC once
    # XIYOU_TEST_FULL_BYTES bytes have been written there (the first write past the budget is cut short).
    import errno, os
    _dir = os.environ["XIYOU_TEST_FULL_DIR"]
    _budget = [int(os.environ["XIYOU_TEST_FULL_BYTES"])]
    _write = os.write
    def _full_write(fd, data):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            target = ""
        if not target.startswith(_dir):
            return _write(fd, data)
        if _budget[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = _write(fd, bytes(data)[: _budget[0]])
        _budget[0] -= n
        return n
    os.write = _full_write
    """
)


def test_a_full_disk_is_one_line_keeps_whole_records_and_a_rerun_completes(tmp_path):
    """Fault injection where no small filesystem can be mounted: writes to the output fail with ENOSPC midway."""
    questions = _questions(tmp_path, 40)
    data = tmp_path / "data"
    data.mkdir()
    out = data / "q2a.jsonl"
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_FAULTY_WRITES, encoding="utf-8")
    env = _env(
        PYTHONPATH=os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", str(REPO))]),
        XIYOU_TEST_FULL_DIR=str(data),
        XIYOU_TEST_FULL_BYTES="5000",
    )
    with ScriptedOpenAI(reply="俺老孙来也！") as s:
        args = _q2a(s.base_url, questions, out, "--concurrency", "2")
        proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 1, proc.stderr
        assert "Traceback" not in proc.stderr
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "no space left" in errors[0] and str(out) in errors[0], proc.stderr
        kept = _lines(out)  # every line whole: the torn write was undone
        assert 0 < len(kept) < 40
        assert out.read_bytes().endswith(b"\n")
        run = json.loads(out.with_suffix(".manifest.json").read_text(encoding="utf-8"))["runs"][-1]
        assert run["stats"]["status"] == "write_failed" and "no space left" in run["stats"]["write_error"]
        # space freed: the same command completes, asking only what is missing
        asked = len(s.chat_requests())
        proc = subprocess.run(args, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        assert len(s.chat_requests()) - asked == 40 - len(kept)
    ids = [r["id"] for r in _lines(out)]
    assert len(ids) == 40 == len(set(ids))


def _can_mount_tmpfs(where: Path) -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {where}"], capture_output=True
    )
    return probe.returncode == 0


@pytest.mark.slow
def test_a_real_full_filesystem(tmp_path):
    """The same on a real 64 KiB tmpfs (mounted in a private user and mount namespace), then grown to 2 MiB."""
    mount = tmp_path / "small"
    mount.mkdir()
    if not _can_mount_tmpfs(mount):
        pytest.skip("cannot mount a small tmpfs here (unshare -rm needs user namespaces); the fault-injected test ran")
    questions = _questions(tmp_path, 300)
    with ScriptedOpenAI(reply="俺老孙来也！" * 20) as s:
        args = _q2a(s.base_url, questions, mount / "q2a.jsonl", "--concurrency", "4")
        run = " ".join(f"'{a}'" for a in args)
        script = (
            f"mount -t tmpfs -o size=64k tmpfs {mount} && "
            f"{{ {run} 2>{tmp_path}/first.err; echo $? >{tmp_path}/first.rc; }} && "
            f"cp {mount}/q2a.jsonl {tmp_path}/first.jsonl && "
            f"mount -o remount,size=2m {mount} && "
            f"{{ {run} 2>{tmp_path}/second.err; echo $? >{tmp_path}/second.rc; }} && "
            f"cp {mount}/q2a.jsonl {mount}/q2a.manifest.json {tmp_path}/"
        )
        subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=REPO, env=_env(), timeout=600, check=True)
    first_err = (tmp_path / "first.err").read_text(encoding="utf-8")
    assert (tmp_path / "first.rc").read_text().strip() == "1", first_err
    assert "Traceback" not in first_err
    errors = [line for line in first_err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "no space left" in errors[0], first_err
    kept = _lines(tmp_path / "first.jsonl")
    assert 0 < len(kept) < 300
    second_err = (tmp_path / "second.err").read_text(encoding="utf-8")
    assert (tmp_path / "second.rc").read_text().strip() == "0", second_err
    ids = [r["id"] for r in _lines(tmp_path / "q2a.jsonl")]
    assert len(ids) == 300 == len(set(ids))
    runs = json.loads((tmp_path / "q2a.manifest.json").read_text(encoding="utf-8"))["runs"]
    assert runs[-1]["stats"]["status"] == "complete"

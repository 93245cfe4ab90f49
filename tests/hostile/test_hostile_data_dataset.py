"""build_dataset killed at chosen moments (issue 15, item 6): the set on disk is always one whole build, the old
one or the new one, never a new train.jsonl beside an old validation.jsonl and stats.json; the leftovers of a
killed run are removed by the next. Also: outputs get the umask's permissions, not 0600 (issue 17, finding 5)."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import xiyou.io

REPO = Path(__file__).resolve().parents[2]

_KILL_AFTER_REPLACE = textwrap.dedent(
    """
    # sitecustomize for the test: SIGKILL this process right after an os.replace onto a file or folder named
    # XIYOU_TEST_KILL_AFTER (the moment between two files of the set, or between the two renames of the swap)
    import os, signal
    _name = os.environ["XIYOU_TEST_KILL_AFTER"]
    _replace = os.replace
    def _replace_then_die(src, dst, *args, **kwargs):
        _replace(src, dst, *args, **kwargs)
        if os.path.basename(os.fspath(dst)) == _name:
            os.kill(os.getpid(), signal.SIGKILL)
    os.replace = _replace_then_die
    """
)


def _rec(rid: str, question: str, answer: str) -> dict:
    return {"id": rid, "character": "wukong", "source": "q2a", "conversation": [{"input": question, "output": answer}]}


def _inputs(tmp_path: Path, n: int, name: str) -> Path:
    path = tmp_path / name
    answer = "俺老孙是齐天大圣，这是第{}个回答，{}。"
    records = [_rec(f"{name}-{i}", f"第{i}问：你是谁？", answer.format(i, name)) for i in range(n)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _build(inputs: list[Path], out_dir: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "pipeline.build_dataset", "--character", "wukong", "--val-ratio", "0.3",
            "--out-dir", str(out_dir), "--inputs", *map(str, inputs)]  # fmt: skip
    return subprocess.run(args, cwd=REPO, env=env or dict(os.environ), capture_output=True, text=True, timeout=300)


def _one_build(out_dir: Path) -> tuple[int, int]:
    """(train, validation) of the set in out_dir, after checking that its three files belong to one build."""
    stats = json.loads((out_dir / "stats.json").read_text(encoding="utf-8"))
    train = (out_dir / "train.jsonl").read_text(encoding="utf-8").splitlines()
    val = (out_dir / "validation.jsonl").read_text(encoding="utf-8").splitlines()
    assert (len(train), len(val)) == (stats["train"], stats["validation"])
    return len(train), len(val)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith(".tmp") or ".tmp" in p.name)


@pytest.mark.parametrize("moment", ["train.jsonl", "validation.jsonl", "dataset"])
def test_killed_between_files_leaves_the_old_set_or_the_new_one(tmp_path, moment):
    out_dir = tmp_path / "dataset"
    old_input = _inputs(tmp_path, 20, "old")
    assert _build([old_input], out_dir).returncode == 0
    old = _one_build(out_dir)
    new_input = _inputs(tmp_path, 30, "new")
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_KILL_AFTER_REPLACE, encoding="utf-8")
    env = dict(os.environ, XIYOU_TEST_KILL_AFTER=moment)
    env["PYTHONPATH"] = os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", str(REPO))])
    proc = _build([old_input, new_input], out_dir, env)
    assert proc.returncode == -signal.SIGKILL, proc.stderr  # killed at that moment
    if out_dir.exists():  # killed between the two renames of the swap, the folder is briefly absent: never mixed
        assert _one_build(out_dir) == old
    # the next run cleans up what the killed one left and writes the new set whole
    proc = _build([old_input, new_input], out_dir)
    assert proc.returncode == 0, proc.stderr
    new = _one_build(out_dir)
    assert sum(new) == 50 and new != old
    assert _leftovers(tmp_path) == []


def test_zero_byte_temps_of_the_old_writer_are_removed(tmp_path):
    out_dir = tmp_path / "dataset"
    out_dir.mkdir()
    (out_dir / ".train.jsonl.abc123.tmp").write_bytes(b"")  # what a kill left with the old writer
    (tmp_path / ".dataset.x1y2.tmp").mkdir()
    assert _build([_inputs(tmp_path, 5, "a")], out_dir).returncode == 0
    assert _leftovers(tmp_path) == []


def test_a_failed_write_keeps_the_old_folder(tmp_path):
    out_dir = tmp_path / "set"
    xiyou.io.write_dir_atomic(out_dir, lambda d: (d / "a.txt").write_text("old"))

    def fail(folder: Path) -> None:
        (folder / "a.txt").write_text("new, half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        xiyou.io.write_dir_atomic(out_dir, fail)
    assert (out_dir / "a.txt").read_text() == "old"
    assert _leftovers(tmp_path) == []


def test_outputs_get_the_umask_permissions_not_0600(tmp_path):
    old_mask = os.umask(0o022)
    try:
        assert _build([_inputs(tmp_path, 5, "a")], tmp_path / "dataset").returncode == 0
        for name in ("train.jsonl", "validation.jsonl", "stats.json"):
            assert stat.S_IMODE((tmp_path / "dataset" / name).stat().st_mode) == 0o644, name
        assert stat.S_IMODE((tmp_path / "dataset").stat().st_mode) == 0o755
        path = xiyou.io.write_jsonl_atomic(tmp_path / "x.jsonl", [{"id": "a"}])
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        path.chmod(0o600)  # a file the person made private stays private when rewritten
        xiyou.io.write_jsonl_atomic(path, [{"id": "b"}])
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    finally:
        os.umask(old_mask)

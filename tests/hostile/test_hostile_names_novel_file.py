"""A novel path that is not a text file (/dev/zero, a FIFO, a directory, a huge file) is refused in one clear line:
nothing is read from it, nothing hangs, memory does not blow up."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from xiyou.canon import NovelError, get_canon, load_novel
from xiyou.canon.loader import MAX_NOVEL_BYTES


def test_dev_zero_is_refused() -> None:
    with pytest.raises(NovelError, match=r"^/dev/zero: is a character device, not a text file"):
        load_novel("/dev/zero")


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "novel.txt"
    os.mkfifo(fifo)
    code = (
        "from xiyou.canon import NovelError, load_novel\n"
        f"try:\n    load_novel({str(fifo)!r})\nexcept NovelError as e:\n    print(e)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.strip()
        == f"{fifo}: is a named pipe (FIFO), not a text file; give the path of the novel's text file"
    )


def test_an_oversized_file_is_refused_before_reading(tmp_path: Path) -> None:
    big = tmp_path / "novel.txt"
    with big.open("wb") as f:  # sparse: no disk used
        f.truncate(MAX_NOVEL_BYTES + 1)
    with pytest.raises(NovelError, match=r"too big for the novel \(at most 33,554,432\)") as err:
        load_novel(big)
    assert "\n" not in str(err.value)


def test_get_canon_refuses_dev_zero_as_xiyou_novel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XIYOU_NOVEL", "/dev/zero")
    with pytest.raises(NovelError, match="character device"):
        get_canon()


def test_xiyou_room_with_dev_zero_says_why_in_one_line() -> None:
    env = {**os.environ, "XIYOU_NOVEL": "/dev/zero", "XIYOU_ENDPOINTS": ""}
    done = subprocess.run(
        [sys.executable, "-m", "xiyou.cli", "room", "--members", "wukong", "你好"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "/dev/zero: is a character device" in done.stderr

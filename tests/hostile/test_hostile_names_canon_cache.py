"""The canon's disk cache holds data only: planted or damaged files are refused and replaced, never run; what an
interrupted write left is cleaned up; a damaged index is rebuilt once, not on every start."""

from __future__ import annotations

import json
import os
import pickle
import time
from pathlib import Path

import numpy as np
import pytest

from xiyou.canon import build_canon, core, load_novel
from xiyou.canon.index import Index


class _Payload:
    """Unpickling this runs `os.system`: it writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def novel(novel_path: Path):
    return load_novel(novel_path)


@pytest.fixture
def cache_dir(novel, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The directory build_canon will use for this novel under a fresh XIYOU_CACHE_DIR."""
    monkeypatch.setenv("XIYOU_CACHE_DIR", str(tmp_path / "cache"))
    d = tmp_path / "cache" / "canon" / f"{novel.sha256[:24]}-{core.extractor_fingerprint()}"
    d.mkdir(parents=True)
    return d


def test_a_planted_pickle_in_the_cache_runs_no_code(novel, cache_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(marker))
    for name in ("utterances.pkl", "utterances.json"):
        (cache_dir / name).write_bytes(payload)
    canon = build_canon(novel)
    assert not marker.exists(), "a file planted in the cache ran code"
    assert len(canon.utterances) > 10000
    # the refused file was replaced by a good one: the next start reads it
    assert json.loads((cache_dir / "utterances.json").read_bytes().split(b"\n", 1)[0])["sha256"] == novel.sha256


def test_a_planted_index_array_with_a_pickle_is_refused_and_replaced(novel, cache_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    canon = build_canon(novel)
    target = cache_dir / "index-wukong-context"
    canon.index("wukong", "context")
    np.save(target / "data.csc.index.npy", np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    again = build_canon(novel)
    scores = again.index("wukong", "context").scores("师父被妖精拿去了")
    assert not marker.exists()
    assert scores.shape == (len(again.exchanges("wukong")),) and scores.max() > 0
    Index.load(target)  # replaced by a good one (no pickle inside)


def test_a_tampered_utterances_file_is_refused(novel, cache_dir: Path) -> None:
    first = build_canon(novel)
    path = cache_dir / "utterances.json"
    header, body = path.read_bytes().split(b"\n", 1)
    rows = json.loads(body)
    rows[0][3] = "俺是假的"  # changed text, checksum not updated
    path.write_bytes(header + b"\n" + json.dumps(rows, ensure_ascii=False).encode())
    assert build_canon(novel).utterances == first.utterances


def test_a_damaged_index_directory_is_replaced_once(novel, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    build_canon(novel).index("bajie", "reply")
    target = cache_dir / "index-bajie-reply"
    (target / "size.txt").write_text("garbage", encoding="utf-8")
    (target / "vocab.index.json").write_text("{", encoding="utf-8")
    assert build_canon(novel).index("bajie", "reply").size > 0  # rebuilt ...
    assert Index.load(target).size > 0  # ... and put in place of the damaged one

    def no(*args, **kwargs):
        raise AssertionError("the index should come from the cache now")

    monkeypatch.setattr(Index, "build", classmethod(no))
    assert build_canon(novel).index("bajie", "reply").size > 0


def test_what_an_interrupted_write_left_is_removed_once_stale(novel, cache_dir: Path) -> None:
    old = time.time() - 2 * core.STALE_TEMP_SECONDS
    tmp_file = cache_dir / ".utterances.json.k2j4h1.tmp"
    tmp_file.write_bytes(b"x" * 1024)
    tmp_dir = cache_dir / ".index-wukong-context.abc123"
    tmp_dir.mkdir()
    (tmp_dir / "data.csc.index.npy").write_bytes(b"x" * 1024)
    for p in (tmp_dir / "data.csc.index.npy", tmp_dir, tmp_file):
        os.utime(p, (old, old))
    fresh = cache_dir / ".utterances.json.inprogress.tmp"  # another process writing right now
    fresh.write_bytes(b"x")
    build_canon(novel)
    assert not tmp_file.exists() and not tmp_dir.exists()
    assert fresh.exists()
    assert sorted(p.name for p in cache_dir.iterdir() if p.name.startswith(".")) == [fresh.name]

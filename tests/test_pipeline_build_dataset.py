"""pipeline.build_dataset: merge, normalise, de-duplicate, filter, split and report, on crafted inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.build_dataset import build, normalise_text
from xiyou.character import get_character

REPO = Path(__file__).resolve().parent.parent
WUKONG = get_character("wukong")


def _rec(rid, question, answer, character="wukong", source="q2a", system="user"):
    return {"id": rid, "character": character, "source": source,
            "conversation": [{"system": system, "input": question, "output": answer}]}  # fmt: skip


def _write(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


def _read(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_normalise_text():
    assert (
        normalise_text("  俺老孙来也,师父!  \r\n\r\n\r\n\r\n妖怪在哪里?\u200b ") == "俺老孙来也，师父！\n\n妖怪在哪里？"
    )
    assert normalise_text("且听下回分解...") == "且听下回分解……"
    assert normalise_text("走了.") == "走了。"
    assert normalise_text("version 3.5, ok") == "version 3.5, ok"  # English text keeps its punctuation
    assert normalise_text("齐天 大圣") == "齐天大圣"


def test_build_cleans_filters_dedups_and_reports(tmp_path):
    q2a = _write(tmp_path / "q2a.jsonl", [
        _rec("a1", "你叫什么名字？", "俺老孙便是齐天大圣孙悟空,你待怎的!"),
        _rec("a2", "你叫什么名字？", "俺老孙便是齐天大圣孙悟空，你待怎的！"),  # the same once normalised
        _rec("a3", "你叫什么名字？", "俺老孙便是齐天大圣孙悟空，你待怎的！！"),  # near duplicate by 3-grams
        _rec("a4", "你叫什么名字？", "作为一个AI语言模型，我没有名字。"),  # broken persona
        _rec("a5", "你会什么？", "嗯"),  # too short
        _rec("a6", "你会什么？", "俺会七十二般变化，一个筋斗十万八千里。" * 300),  # too long
        _rec("a7", "你会什么？", "俺会七十二般变化，一个筋斗十万八千里。"),
        _rec("a8", "金箍棒从哪来？", "那是东海龙王的定海神针，被俺老孙借了来，可大可小，重一万三千五百斤。"),
        _rec("a9", "金箍棒从哪来？", "那是东海龙王的定海神针，被俺老孙借了来，可大可小，重一万三千五百斤哩。"),  # near
        _rec("b1", "你是谁？", "老猪我是天蓬元帅。", character="bajie"),  # another character: skipped
        {"id": "bad", "conversation": [{"input": "只有问题"}]},  # invalid format
        _rec("a1", "重复的编号", "俺老孙另有一番话说。"),  # id seen before
    ])  # fmt: skip
    long = _write(tmp_path / "long.jsonl", [
        {"id": "l1", "character": "wukong", "source": "long_dialogue", "conversation": [
            {"system": "x", "input": "悟空，前面是什么地方？", "output": "师父，是座高山。"},
            {"system": "y", "input": "可有妖怪？", "output": "待俺老孙去看看。"},
        ]},
    ])  # fmt: skip
    canon = [
        {"id": "canon-wukong-c001", "conversation": [{"system": "", "input": "你是何人？", "output": "我是石猴。"}]}
    ]
    stats = build(WUKONG, [q2a, long], tmp_path / "out", canon_records=canon, val_ratio=0.0)
    records = _read(tmp_path / "out" / "train.jsonl")
    assert [r["id"] for r in records] == ["a1", "a7", "a8", "l1", "canon-wukong-c001"]
    assert records[0]["conversation"][0]["output"] == "俺老孙便是齐天大圣孙悟空，你待怎的！"  # punctuation fixed
    for r in records:
        assert r["conversation"][0]["system"] == WUKONG.meta_instruction  # never "user"
        assert all("system" not in t for t in r["conversation"][1:])
    assert stats["dropped"] == {
        "duplicate": 1, "near_duplicate": 2, "broken_persona": 1, "too_short": 1, "too_long": 1, "invalid_format": 1,
        "duplicate_id": 1,
    }  # fmt: skip
    assert stats["records_per_source"] == {"q2a": 3, "long_dialogue": 1, "canon": 1}
    assert stats["skipped_other_characters"] == 1
    assert stats["turns"] == {1: 4, 2: 1}
    assert stats["output_chars"]["max"] >= stats["output_chars"]["median"] >= stats["output_chars"]["min"] > 0
    assert json.loads((tmp_path / "out" / "stats.json").read_text(encoding="utf-8"))["kept"] == 5


def test_split_is_deterministic_seeded_and_stable(tmp_path):
    recs = [_rec(f"q{i}", f"第{i}个问题？", f"俺老孙第{i}次回答，答得不同{i * 7}。") for i in range(400)]
    src = _write(tmp_path / "q.jsonl", recs)
    build(WUKONG, [src], tmp_path / "a", val_ratio=0.1, seed=1)
    build(WUKONG, [src], tmp_path / "b", val_ratio=0.1, seed=1)
    build(WUKONG, [src], tmp_path / "c", val_ratio=0.1, seed=2)
    val_a = {r["id"] for r in _read(tmp_path / "a" / "validation.jsonl")}
    assert (tmp_path / "a" / "train.jsonl").read_bytes() == (tmp_path / "b" / "train.jsonl").read_bytes()
    assert 20 <= len(val_a) <= 65  # about 10% of 400
    assert val_a != {r["id"] for r in _read(tmp_path / "c" / "validation.jsonl")}
    assert not val_a & {r["id"] for r in _read(tmp_path / "a" / "train.jsonl")}
    # more data later never moves a record between train and validation
    more = _write(
        tmp_path / "more.jsonl", [_rec(f"z{i}", f"新问题{i}？", f"新的回答{i}，俺老孙说。") for i in range(50)]
    )
    build(WUKONG, [src, more], tmp_path / "d", val_ratio=0.1, seed=1)
    assert val_a <= {r["id"] for r in _read(tmp_path / "d" / "validation.jsonl")}


@pytest.mark.slow
def test_cli_with_canon(tmp_path, novel_path):
    src = _write(tmp_path / "q2a.jsonl", [_rec("a1", "你叫什么名字？", "俺老孙便是齐天大圣！")])
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.build_dataset", "--character", "wukong", "--inputs", str(src), "--canon",
         "--novel", str(novel_path), "--out-dir", str(tmp_path / "ds")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    stats = json.loads((tmp_path / "ds" / "stats.json").read_text(encoding="utf-8"))
    assert stats["records_per_source"]["q2a"] == 1 and stats["records_per_source"]["canon"] > 100
    assert stats["validation"] > 0 and "train +" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "pipeline.build_dataset", "--character", "monkey", "--canon",
                           "--out-dir", str(tmp_path / "x")], cwd=REPO, capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2 and "unknown character 'monkey'" in proc.stderr

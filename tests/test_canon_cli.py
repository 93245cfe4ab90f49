"""`xiyou canon stats|export|search` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from xiyou.cli import main


@pytest.fixture()
def runner(tmp_path: Path, monkeypatch) -> CliRunner:
    monkeypatch.setenv("XIYOU_CACHE_DIR", str(tmp_path / "cache"))
    return CliRunner()


def test_stats(runner: CliRunner, novel_path: Path) -> None:
    result = runner.invoke(main, ["canon", "stats", "--novel", str(novel_path)])
    assert result.exit_code == 0, result.output
    assert "chapters:     100" in result.output
    for name in ("唐三藏", "孙悟空", "猪八戒", "沙悟净"):
        assert name in result.output
    assert "unknown:" in result.output and "%" in result.output
    as_json = json.loads(runner.invoke(main, ["canon", "stats", "--json", "--novel", str(novel_path)]).output)
    assert as_json["chapters"] == 100 and as_json["missing_chapters"] == []
    assert as_json["per_character"]["wukong"] > 2000


def test_a_chapter_whose_heading_was_not_recognised_is_reported(
    runner: CliRunner, novel_path: Path, tmp_path: Path, caplog
) -> None:
    """A copy whose chapter-17 heading the loader does not read (囘 for 回) silently became 99 chapters, 17 read as
    part of 16: the stats, their JSON and the first load all say which chapter is missing."""
    from xiyou.canon import get_canon

    text = novel_path.read_text(encoding="utf-8")
    assert text.count("第十七回") == 1
    copy = tmp_path / "xiyouji-variant.txt"
    copy.write_text(text.replace("第十七回", "第十七囘"), encoding="utf-8")
    result = runner.invoke(main, ["canon", "stats", "--novel", str(copy)])
    assert result.exit_code == 0, result.output
    assert "chapters:     99" in result.output
    assert "99 of the novel's 100 chapters; missing 第十七回: a heading this loader did not recognise" in result.output
    as_json = json.loads(runner.invoke(main, ["canon", "stats", "--json", "--novel", str(copy)]).stdout)
    assert as_json["chapters"] == 99 and as_json["missing_chapters"] == [17]
    with caplog.at_level("WARNING", logger="xiyou.canon.core"):
        get_canon(copy)
    assert [r.getMessage() for r in caplog.records] == [f"{copy.resolve()}: {get_canon(copy).novel.missing_note()}"]
    whole = runner.invoke(main, ["canon", "stats", "--novel", str(novel_path)])
    assert "missing" not in whole.output and "warning" not in whole.output


def test_export(runner: CliRunner, novel_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = runner.invoke(main, ["canon", "export", "--novel", str(novel_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    for cid in ("sanzang", "wukong", "bajie", "wujing"):
        records = [json.loads(line) for line in (out / f"{cid}.jsonl").read_text(encoding="utf-8").splitlines()]
        assert len(records) > 100
        assert records[0]["id"].startswith(f"canon-{cid}-")
        assert "system" in records[0]["conversation"][0]
    first = (out / "wukong.jsonl").read_bytes()
    runner.invoke(main, ["canon", "export", "--novel", str(novel_path), "--out", str(out)])
    assert (out / "wukong.jsonl").read_bytes() == first  # reproducible
    utterances = (out / "utterances.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(utterances) > 9000 and "speaker" in json.loads(utterances[0])


def test_search(runner: CliRunner, novel_path: Path) -> None:
    result = runner.invoke(
        main, ["canon", "search", "bajie", "师父，我饿了，去化些斋饭", "--novel", str(novel_path), "-k", "2"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("[第") == 2
    assert "猪八戒：" in result.output
    bad = runner.invoke(main, ["canon", "search", "guanyin", "你好", "--novel", str(novel_path)])
    assert bad.exit_code != 0 and "valid ids" in bad.output


def test_not_a_novel_is_a_clear_error(runner: CliRunner, tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("一份清单：苹果、香蕉。\n", encoding="utf-8")
    result = runner.invoke(main, ["canon", "stats", "--novel", str(notes)])
    assert result.exit_code == 1
    assert "0 chapters" in result.output and "notes.txt" in result.output
    assert "Traceback" not in result.output

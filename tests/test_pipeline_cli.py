"""Each data step is a command with --help, and wrong options end with a message saying what to do."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize(
    ("step", "options"),
    [
        (
            "q2a",
            ["--character", "--questions", "--repeat", "--out", "--dry-run", "--base-url", "--concurrency", "--rpm"],
        ),
        ("extract", ["--novel", "--out", "--chunk-tokens", "--overlap", "--retry-rejects", "--model", "--timeout"]),
        ("long_dialogue", ["--novel", "--out", "--chapters", "--max-retries", "--temperature"]),
        ("build_dataset", ["--character", "--inputs", "--canon", "--out-dir", "--val-ratio", "--seed", "--near-dup"]),
    ],
)
def test_help(step, options, capsys):
    module = importlib.import_module(f"pipeline.{step}")
    with pytest.raises(SystemExit) as e:
        module.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert f"python -m pipeline.{step}" in out
    for option in options:
        assert option in out


def test_missing_base_url_and_bad_character(tmp_path, monkeypatch, capsys):
    from pipeline import q2a

    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    questions = tmp_path / "q.txt"
    questions.write_text("你好吗？\n", encoding="utf-8")
    base = ["--questions", str(questions), "--out", str(tmp_path / "o.jsonl"), "--model", "m"]
    with pytest.raises(SystemExit) as e:
        q2a.main(["--character", "wukong", *base])
    assert e.value.code == 2 and "--base-url is required (or set OPENAI_BASE_URL)" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        q2a.main(["--character", "sunwukong", *base, "--base-url", "http://127.0.0.1:9/v1"])
    assert "unknown character 'sunwukong'; valid ids: sanzang, wukong, bajie, wujing" in capsys.readouterr().err
    assert not (tmp_path / "o.jsonl").exists()

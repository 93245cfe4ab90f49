"""`xiyou room`: offline canon mode on the shared novel prints a JSON-lines transcript in canon words."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from xiyou.cli import main


def room(args: list[str], env: dict[str, str]) -> tuple[int, list[dict], str]:
    result = CliRunner().invoke(main, ["room", *args], env=env)
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return result.exit_code, lines, result.stderr


@pytest.fixture
def canon_env(novel_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.delenv("XIYOU_ENDPOINTS", raising=False)
    return {"XIYOU_NOVEL": str(novel_path), "XIYOU_ENDPOINTS": ""}


def test_offline_canon_mode_each_character_speaks_its_own_canon_words(canon_env, novel_path) -> None:
    from xiyou.canon import chapter_ref, get_canon

    code, lines, err = room(
        ["--members", "wukong,bajie,sanzang", "--turns", "3", "八戒、悟空，你们两个吵什么？"], canon_env
    )
    assert code == 0, err
    assert "canon mode" in err
    assert lines[0] == {"speaker": "施主", "id": "person", "text": "八戒、悟空，你们两个吵什么？"}
    spoken = lines[1:]
    assert [line["id"] for line in spoken[:2]] == ["bajie", "wukong"]  # named, in the order named
    assert len(spoken) == 2 + 3
    canon = get_canon(novel_path)
    for line in spoken:
        assert "error" not in line
        chapters = {u.chapter for u in canon.lines(line["id"]) if u.text.strip() == line["text"]}
        assert chapters, f"{line['speaker']} did not speak its own canon line: {line['text']!r}"
        assert line["chapter"] in chapters, line
        assert line["citation"].startswith(chapter_ref(line["chapter"])), line
    ids = [line["id"] for line in spoken]
    assert all(a != b for a, b in itertools.pairwise(ids)), "banter never repeats a speaker"


def test_no_novel_and_no_endpoints_explains_what_to_do(tmp_path: Path) -> None:
    env = {"XIYOU_NOVEL": str(tmp_path / "missing.txt"), "XIYOU_ENDPOINTS": ""}
    code, lines, err = room(["--members", "wukong", "悟空"], env)
    assert code == 1 and lines == []
    assert "XIYOU_NOVEL" in err and "endpoints" in err
    code, _, err = room(["--members", "wukong,bajie", "悟空"], env)
    assert code == 1 and err.count("missing.txt") == 1 and "- wukong, bajie: " in err  # one reason, said once


def test_unknown_member_and_broken_endpoints_file_fail_clearly(tmp_path: Path, canon_env) -> None:
    code, _, err = room(["--members", "wukong,erlang", "hi"], canon_env)
    assert code == 1 and "unknown character 'erlang'" in err
    bad = tmp_path / "endpoints.toml"
    bad.write_text('[wukong]\nbase_url = "ftp://x"\n', encoding="utf-8")
    code, _, err = room(["--endpoints", str(bad), "--members", "wukong", "hi"], canon_env)
    assert code == 1 and str(bad) in err and "base_url" in err


def test_a_dead_endpoint_is_an_error_line_and_the_canon_members_go_on(tmp_path: Path, canon_env) -> None:
    from servers import free_port

    endpoints = tmp_path / "endpoints.toml"
    endpoints.write_text(
        f'[bajie]\nbase_url = "http://127.0.0.1:{free_port()}/v1"\nmodel = "bajie"\ntimeout = 5\nmax_retries = 0\n'
        '[wukong]\nbackend = "canon"\n',
        encoding="utf-8",
    )
    code, lines, err = room(
        ["--endpoints", str(endpoints), "--members", "bajie,wukong", "--turns", "0", "八戒、悟空"], canon_env
    )
    assert code == 0, err
    assert lines[1]["id"] == "bajie" and "error" in lines[1] and "text" not in lines[1]
    assert "猪八戒" in lines[1]["error"]
    assert lines[2]["id"] == "wukong" and lines[2]["text"]

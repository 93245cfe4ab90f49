"""The `xiyou` command: characters table, show, and Character Card V2 export."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from xiyou.character import load_characters
from xiyou.cli import main


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_characters_lists_names_and_model_ids() -> None:
    code, out, _ = run("characters")
    assert code == 0
    for c in load_characters().values():
        line = next(line for line in out.splitlines() if line.startswith(c.id))
        assert c.name in line and c.model_id in line


def test_show_one_character() -> None:
    code, out, _ = run("show", "bajie")
    assert code == 0
    assert "猪八戒" in out and "JimmyMa99/BaJie-Chat" in out and "呆子" in out


def test_show_lists_the_questions_the_novel_asks_him(novel_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XIYOU_NOVEL", str(novel_path))
    code, out, _ = run("show", "wukong")
    assert code == 0
    head, _, asked = out.partition("asked of him in the novel")
    assert "  - 徒弟啊，你姓甚么？" in asked.splitlines() and "徒弟啊" not in head
    monkeypatch.setenv("XIYOU_NOVEL", str(novel_path.parent / "missing.txt"))
    code, out, _ = run("show", "wukong")
    assert code == 0 and "asked of him in the novel" not in out  # no novel: the rest is shown all the same


def test_unknown_id_fails_with_the_valid_ids() -> None:
    code, _, err = run("show", "erlang")
    assert code == 2
    assert "unknown character 'erlang'" in err and "sanzang, wukong, bajie, wujing" in err


def test_card_is_character_card_v2() -> None:
    code, out, _ = run("card", "wukong")
    assert code == 0
    card = json.loads(out)
    wukong = load_characters()["wukong"]
    assert card["spec"] == "chara_card_v2" and card["spec_version"] == "2.0"
    data = card["data"]
    assert data["name"] == "孙悟空"
    assert data["system_prompt"] == wukong.meta_instruction
    assert data["first_mes"] == wukong.greeting
    # every field the V2 spec requires is present with the right type
    for field in ("description", "personality", "scenario", "first_mes", "mes_example", "creator_notes",
                  "system_prompt", "post_history_instructions", "creator", "character_version"):
        assert isinstance(data[field], str), field
    assert isinstance(data["alternate_greetings"], list) and isinstance(data["tags"], list)
    assert isinstance(data["extensions"], dict)


def test_card_to_file(tmp_path: Path) -> None:
    out = tmp_path / "cards" / "bajie.json"
    code, _, _ = run("card", "bajie", "--out", str(out))
    assert code == 0
    assert json.loads(out.read_text(encoding="utf-8"))["data"]["name"] == "猪八戒"


def test_console_script_is_installed() -> None:
    exe = shutil.which("xiyou", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("the xiyou console script is not installed in this environment (pip install -e .)")
    proc = subprocess.run([exe, "card", "wukong"], capture_output=True, text=True, check=True)
    assert json.loads(proc.stdout)["data"]["system_prompt"] == load_characters()["wukong"].meta_instruction

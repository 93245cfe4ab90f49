"""`xiyou room` refuses a character named twice and a person who takes a name of the four, in one clear line."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from xiyou.cli import main


def _room(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["room", *args], env={"XIYOU_ENDPOINTS": "", "XIYOU_NOVEL": "/nonexistent"})
    return result.exit_code, result.output


def test_a_character_named_twice_is_a_usage_error_not_a_traceback() -> None:
    code, out = _room("--members", "wukong,bajie,wukong", "你好")
    assert code == 2, out
    assert "Traceback" not in out
    assert "wukong named more than once" in out and "each character can be in the room once" in out


@pytest.mark.parametrize("person", ["猪八戒", "八戒", "Monkey King", "师父"])
def test_the_person_cannot_take_a_name_of_the_four(person: str) -> None:
    code, out = _room("--members", "wukong", "--person", person, "你好")
    assert code == 2, out
    assert f"“{person}” is a name of" in out and "choose another name" in out

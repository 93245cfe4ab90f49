"""The character files: all four load, match the specification, and broken files fail clearly."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from pydantic import ValidationError

from xiyou.character import CHARACTERS_DIR, CharacterError, get_character, load_characters

IDS = ["sanzang", "wukong", "bajie", "wujing"]


def test_all_four_load_in_order() -> None:
    chars = load_characters()
    assert list(chars) == IDS
    assert [c.name for c in chars.values()] == ["唐三藏", "孙悟空", "猪八戒", "沙悟净"]
    for c in chars.values():
        assert len(c.sample_questions) >= 10
        assert c.model_id.startswith("JimmyMa99/")
        assert c.name in c.names and set(c.aliases) <= set(c.names)


def test_aliases_cover_the_names_the_novel_uses() -> None:
    chars = load_characters()
    assert {"行者", "大圣", "猴王", "美猴王", "齐天大圣"} <= set(chars["wukong"].aliases)
    assert {"八戒", "呆子", "悟能", "天蓬元帅"} <= set(chars["bajie"].aliases)
    assert {"沙僧", "沙和尚", "悟净"} <= set(chars["wujing"].aliases)
    assert {"三藏", "唐僧", "长老", "圣僧"} <= set(chars["sanzang"].aliases)
    assert "贫僧" in chars["sanzang"].self_refs and "俺老孙" in chars["wukong"].self_refs
    assert "老猪" in chars["bajie"].self_refs and "老沙" in chars["wujing"].self_refs


def _spec_block(personas: str, character_id: str, label: str) -> str:
    section = personas.split(f"## {character_id}:")[1].split("\n## ")[0]
    match = re.search(label + r"[^\n]*:\s*```text\n(.*?)\n```", section, re.S)
    assert match, f"{label} not found for {character_id} in personas.md"
    return match.group(1)


@pytest.mark.parametrize("character_id", IDS)
def test_prompts_equal_the_specification_exactly(personas_path: Path, character_id: str) -> None:
    personas = personas_path.read_text(encoding="utf-8")
    c = get_character(character_id)
    assert c.meta_instruction == _spec_block(personas, character_id, "meta_instruction")
    assert c.persona_prompt == _spec_block(personas, character_id, "persona_prompt")
    model_line = re.search(r"## " + character_id + r":.*?model id: `([^`]+)` \(revision `([^`]+)`\)", personas, re.S)
    assert model_line and (c.model_id, c.revision) == model_line.groups()


def test_characters_are_immutable() -> None:
    c = get_character("wukong")
    with pytest.raises(ValidationError, match=r"(?s)1 validation error for Character\nname\n.*Instance is frozen") as e:
        c.name = "六耳猕猴"  # type: ignore[misc]
    assert e.value.errors()[0]["type"] == "frozen_instance" and e.value.errors()[0]["loc"] == ("name",)
    assert c.name == "孙悟空"


def test_unknown_id_lists_the_valid_ones() -> None:
    with pytest.raises(CharacterError, match=r"unknown character 'sunwukong'.*sanzang, wukong, bajie, wujing"):
        get_character("sunwukong")


# --- broken files -------------------------------------------------------------------------------------------


@pytest.fixture
def char_dir(tmp_path: Path) -> Path:
    d = tmp_path / "characters"
    shutil.copytree(CHARACTERS_DIR, d)
    return d


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_copy_of_the_builtin_files_loads(char_dir: Path) -> None:
    assert list(load_characters(char_dir)) == IDS


def test_missing_field_names_file_and_field(char_dir: Path) -> None:
    path = char_dir / "bajie.toml"
    text = path.read_text(encoding="utf-8")
    path.write_text(re.sub(r"(?m)^greeting = .*\n", "", text), encoding="utf-8")
    with pytest.raises(CharacterError) as e:
        load_characters(char_dir)
    assert "bajie.toml" in str(e.value) and "'greeting': missing" in str(e.value)


def test_wrong_type_names_file_field_and_value(char_dir: Path) -> None:
    _edit(char_dir / "wukong.toml", "talkativeness = 0.8", 'talkativeness = "high"')
    with pytest.raises(CharacterError) as e:
        load_characters(char_dir)
    msg = str(e.value)
    assert "wukong.toml" in msg and "'talkativeness'" in msg and "'high'" in msg


def test_nested_wrong_type(char_dir: Path) -> None:
    _edit(char_dir / "wujing.toml", "max_new_tokens = 512", "max_new_tokens = 0")
    with pytest.raises(CharacterError, match=r"wujing\.toml: field 'generation\.max_new_tokens'"):
        load_characters(char_dir)


def test_empty_alias_list(char_dir: Path) -> None:
    path = char_dir / "sanzang.toml"
    path.write_text(re.sub(r"(?m)^aliases = .*$", "aliases = []", path.read_text(encoding="utf-8")), encoding="utf-8")
    with pytest.raises(CharacterError, match=r"sanzang\.toml: field 'aliases': .*at least 1"):
        load_characters(char_dir)


def test_duplicate_ids(char_dir: Path) -> None:
    # a maintainer copies a file to start a new character and forgets to change the id
    shutil.copy(char_dir / "wukong.toml", char_dir / "zz_liuer.toml")
    with pytest.raises(CharacterError) as e:
        load_characters(char_dir)
    msg = str(e.value)
    assert "zz_liuer.toml: field 'id': duplicate id 'wukong'" in msg and "wukong.toml" in msg.split("already")[1]


def test_unknown_field_is_refused(char_dir: Path) -> None:
    _edit(char_dir / "bajie.toml", "talkativeness = 0.7", "talkativeness = 0.7\ntalkativness = 0.9")
    with pytest.raises(CharacterError, match=r"bajie\.toml: field 'talkativness': unknown field"):
        load_characters(char_dir)


def test_invalid_toml(char_dir: Path) -> None:
    (char_dir / "wujing.toml").write_text("id = \n", encoding="utf-8")
    with pytest.raises(CharacterError, match=r"wujing\.toml: not valid TOML"):
        load_characters(char_dir)


def test_unknown_id_in_a_custom_directory(char_dir: Path) -> None:
    (char_dir / "wujing.toml").unlink()
    chars = load_characters(char_dir)
    with pytest.raises(CharacterError, match=r"valid ids: sanzang, wukong, bajie$"):
        get_character("wujing", chars)


# --- names (xiyou.names reads these fields) ---------------------------------------------------------------------


def test_an_ambiguous_name_must_be_an_alias(char_dir: Path) -> None:
    _edit(char_dir / "sanzang.toml", '"师父" = "', '"师傅" = "')
    with pytest.raises(
        CharacterError, match=r"sanzang\.toml: ambiguous_in_narration: '师傅' is not one"
    ):
        load_characters(char_dir)


def test_a_chapter_rule_must_name_an_alias(char_dir: Path) -> None:
    _edit(char_dir / "wukong.toml", '[narration_chapters."猴王"]', '[narration_chapters."六耳猕猴"]')
    with pytest.raises(
        CharacterError, match=r"wukong\.toml: .*narration_chapters: '六耳猕猴' is not one of the aliases"
    ):
        load_characters(char_dir)


def test_a_name_belongs_to_one_character(char_dir: Path) -> None:
    _edit(char_dir / "wujing.toml", 'english_names = ["Sha Wujing"', 'english_names = ["monkey king", "Sha Wujing"')
    with pytest.raises(CharacterError, match=r"wujing\.toml: the name 'monkey king' is also a name of 'wukong'"):
        load_characters(char_dir)
    _edit(char_dir / "wujing.toml", '"monkey king", ', "")
    _edit(char_dir / "wujing.toml", 'forms_of_address = ["沙师弟"', 'forms_of_address = ["行者", "沙师弟"')
    with pytest.raises(CharacterError, match=r"wujing\.toml: the name '行者' is also a name of 'wukong'"):
        load_characters(char_dir)


def test_forms_of_address_may_be_shared(char_dir: Path) -> None:
    # 沙僧 calls both 悟空 and 八戒 师兄: a shared form of address calls nobody in particular
    _edit(char_dir / "bajie.toml", 'forms_of_address = ["二师兄"', 'forms_of_address = ["师兄", "二师兄"')
    assert "师兄" in load_characters(char_dir)["bajie"].forms_of_address


def test_how_he_calls_the_others_names_another_character(char_dir: Path) -> None:
    assert load_characters(char_dir)["bajie"].calls == {"wukong": ("哥哥", "哥", "师兄")}
    _edit(char_dir / "bajie.toml", "calls = { wukong =", "calls = { sunwukong =")
    with pytest.raises(CharacterError, match=r"bajie\.toml: calls: 'sunwukong' is not a character here; valid ids"):
        load_characters(char_dir)
    _edit(char_dir / "bajie.toml", "calls = { sunwukong =", "calls = { bajie =")
    with pytest.raises(CharacterError, match=r"bajie\.toml: .*calls: 'bajie' is this character"):
        load_characters(char_dir)


def test_english_names_are_latin_letters(char_dir: Path) -> None:
    _edit(char_dir / "bajie.toml", '"Pigsy"', '"Pigsy:"')
    with pytest.raises(CharacterError, match=r"bajie\.toml: field 'english_names\.2': String should match pattern"):
        load_characters(char_dir)


def test_duplicate_names_in_one_field(char_dir: Path) -> None:
    _edit(char_dir / "wukong.toml", '"Wukong", ', '"Wukong", "WUKONG", ')
    with pytest.raises(
        CharacterError, match=r"wukong\.toml: field 'english_names': duplicate name 'WUKONG' \(got \["
    ):
        load_characters(char_dir)

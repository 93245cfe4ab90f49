"""The scene catalogue, validated against the novel, and `xiyou scenes`."""

from __future__ import annotations

import dataclasses

import pytest
from click.testing import CliRunner

from pipeline.evaluation.leaks import first_mentions, leaks
from xiyou.cli import main
from xiyou.story import StoryError, get_scene, list_scenes, validate_scenes
from xiyou.story.scenes import KINDS, Line


def test_at_least_twenty_scenes_across_the_book() -> None:
    scenes = list_scenes()
    assert len(scenes) >= 20
    assert min(s.first for s in scenes) <= 5 and max(s.last for s in scenes) >= 95
    assert {s.kind for s in scenes} == set(KINDS)
    names = {s.name for s in scenes}
    for wanted in ("高老庄收八戒", "三打白骨精", "四圣试禅心", "五庄观人参果", "火焰山借芭蕉扇", "西梁女国"):
        assert wanted in names


def test_every_scene_matches_the_novel(canon) -> None:
    assert validate_scenes(canon.novel) == []
    for s in list_scenes():
        assert s.opening, s.id
        for line in s.opening:
            assert canon.novel.chapter(line.chapter).text[line.offset :].startswith(line.text)


def test_validation_finds_a_misplaced_quote_and_an_absent_pilgrim(canon) -> None:
    scene = get_scene("gaolaozhuang")
    moved = dataclasses.replace(
        scene,
        opening=(Line("行者", 18, scene.opening[0].offset + 1, scene.opening[0].text),),
        first=7,
        last=7,
    )
    problems = validate_scenes(canon.novel, (moved,))
    assert any(f"is not at offset {scene.opening[0].offset + 1}" in p for p in problems)
    assert any(p.startswith("gaolaozhuang: bajie is present") for p in problems)


def test_a_scene_setting_tells_nothing_after_its_chapter(canon) -> None:
    table = first_mentions(canon)
    for s in list_scenes():
        assert leaks(s.setting(), s.chapter, table=table) == [], s.id


def test_get_scene_by_id_or_name_and_a_helpful_error() -> None:
    assert get_scene("三打白骨精") is get_scene("baigujing")
    with pytest.raises(StoryError, match=r"no scene 'nowhere'.*baigujing"):
        get_scene("nowhere")


def test_xiyou_scenes_lists_and_shows() -> None:
    runner = CliRunner()
    listing = runner.invoke(main, ["scenes"])
    assert listing.exit_code == 0, listing.output
    assert len(listing.output.splitlines()) == len(list_scenes())
    assert "baigujing" in listing.output and "三打白骨精" in listing.output
    one = runner.invoke(main, ["scenes", "baigujing"])
    assert one.exit_code == 0
    assert "【三打白骨精】第二十七回 · 白虎岭" in one.output
    assert "三藏道：“女菩萨，你语言差了。" in one.output
    bad = runner.invoke(main, ["scenes", "nowhere"])
    assert bad.exit_code == 2 and "no scene 'nowhere'" in bad.output

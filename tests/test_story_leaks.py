"""The future-knowledge leak metric on known-leaking and known-clean replies."""

from __future__ import annotations

import pytest

from pipeline.evaluation.leaks import CURATED, POPULAR, Leak, first_mentions, leaks
from xiyou.backends.base import Citation


@pytest.fixture(scope="module")
def table(canon) -> dict[str, int]:
    return first_mentions(canon)


def test_first_mentions_come_from_the_novel(table) -> None:
    assert table["八戒"] == 19 and table["唐僧"] == 14 and table["白骨夫人"] == 27
    assert table["火焰山"] == 40 and table["芭蕉扇"] == 34 and table["人参果"] == 24
    assert table["白骨精"] == 27 and table["女儿国"] == table["西梁女国"]  # popular names take the novel's
    assert table["红孩儿"] == 40 and table["花果山"] == 1
    missing = [n for n in CURATED if n not in table]
    assert missing == []  # every curated name is in the novel
    assert set(POPULAR) <= set(table)
    assert "国王" not in table  # role words are not names


@pytest.mark.parametrize(
    ("reply", "chapter", "expected"),
    [
        ("俺老孙三打白骨精，好不委屈！", 20, [Leak("name", "白骨精", 27)]),
        ("那火焰山八百里火焰，须借芭蕉扇。", 30, [Leak("name", "火焰山", 40), Leak("name", "芭蕉扇", 34)]),
        ("此事见于第五十九回。", 50, [Leak("chapter", "第五十九回", 59)]),
        ("见第60回", 50, [Leak("chapter", "第60回", 60)]),
        ("八戒，你这呆子！", 18, [Leak("name", "八戒", 19)]),
    ],
)
def test_known_leaking_replies(table, reply: str, chapter: int, expected: list[Leak]) -> None:
    assert sorted(leaks(reply, chapter, table=table), key=str) == sorted(expected, key=str)


@pytest.mark.parametrize(
    ("reply", "chapter"),
    [
        ("俺老孙在花果山水帘洞快活，谁敢管我！", 5),
        ("三打白骨精，好不委屈！", 27),
        ("那火焰山八百里火焰，须借芭蕉扇。", 59),
        ("此事见于第十四回。", 14),
        ("师父，我们往西天去罢。", 14),
    ],
)
def test_known_clean_replies(table, reply: str, chapter: int) -> None:
    assert leaks(reply, chapter, table=table) == []


def test_a_citation_after_the_chapter_leaks_and_none_means_the_whole_book(table) -> None:
    assert leaks("师父！", 10, [Citation(27, "唐三藏")], table=table) == [Leak("chapter", "第二十七回", 27)]
    assert leaks("师父！", 30, [Citation(27, "唐三藏")], table=table) == []
    assert leaks("三打白骨精（第二十七回）", None, [Citation(27)], table=table) == []


def test_a_longer_name_is_counted_once(table) -> None:
    assert leaks("金角大王拿了我", 20, table=table) == [Leak("name", "金角大王", 32)]


@pytest.mark.slow
def test_pipeline_eval_reports_a_persona_runs_leaks_with_its_mode(
    monkeypatch: pytest.MonkeyPatch, tmp_path, novel_path, canon
) -> None:
    import json

    from scripted_openai import ScriptedOpenAI

    from pipeline import eval as evaluation
    from xiyou.character import load_characters
    from xiyou.prompts import build_messages

    questions = tmp_path / "q.txt"
    questions.write_text("你见过白骨精吗？\n", encoding="utf-8")
    monkeypatch.delenv("XIYOU_ENDPOINTS", raising=False)
    with ScriptedOpenAI(reply="俺老孙在白虎岭打过白骨夫人。") as server:  # a reply that knows chapter 27
        monkeypatch.setenv("XIYOU_API_BASE_URL", server.base_url)
        monkeypatch.setenv("XIYOU_API_MODEL", "general")
        code = evaluation.main([
            "--backend", "endpoints", "--characters", "wukong", "--novel", str(novel_path), "--chapter", "20",
            "--questions", str(questions), "--no-sample-questions", "--out", str(tmp_path / "run"),
        ])  # fmt: skip
        [request] = server.chat_requests()
    assert code == 0
    monkeypatch.setenv("XIYOU_NOVEL", str(novel_path))
    wukong = load_characters()["wukong"]  # asked with who he is by chapter 20, not the whole book's description
    asked = [{"role": "user", "content": "你见过白骨精吗？"}]
    assert request.messages == build_messages(wukong, asked, "persona", chapter=20)
    run = json.loads((tmp_path / "run" / "metrics.json").read_text(encoding="utf-8"))["run"]
    assert run["modes"] == {"wukong": "persona"} and run["leaks"]["wukong"]["leaking"] == 1
    report = (tmp_path / "run" / "report.md").read_text(encoding="utf-8")
    assert "## Future-knowledge leaks (after chapter 20)" in report
    assert "| wukong | persona | 1 | 1 | 100.0% | 白骨夫人 ×1、白虎岭 ×1 |" in report

"""Evaluation: the who-said-it classifier, the metrics on answers whose character we know, and the whole run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline import eval as evaluation
from pipeline.evaluation.classifier import train_from_canon
from pipeline.evaluation.metrics import compute_metrics
from xiyou.character import load_characters

IDS = ["sanzang", "wukong", "bajie", "wujing"]

ASSISTANT_ANSWERS = [
    "作为一个AI助手，我没有个人经历，但我可以为您介绍相关信息。",
    "我是一个人工智能语言模型，无法品尝食物，但很乐意为您推荐几道菜。",
    "这是一个很好的问题。首先，我们需要明确目标；其次，制定计划；最后，坚持执行。",
    "作为人工智能，我建议您保持积极的心态，多与朋友交流。",
]


@pytest.fixture(scope="module")
def trained(canon):
    return train_from_canon(canon, IDS)


def test_classifier_tells_the_four_apart_on_unseen_chapters(trained) -> None:
    _, held = trained
    assert held.n_test >= 500 and held.n_train >= 2000
    assert held.accuracy > 0.6
    assert held.balanced_accuracy > 0.45  # chance is 0.25
    # the three talkative ones are each recognised well above chance on their own held-out lines
    for i, row in enumerate(held.confusion[:3]):
        assert row[i] / sum(row) > 0.4, (held.labels[i], row)


def _held_out_lines(canon, cid: str, n: int = 40) -> list[str]:
    return [u.text for u in canon.lines(cid) if u.chapter % 5 == 0 and len(u.text) >= 12][:n]


def test_canon_lines_score_high_and_assistant_answers_are_flagged(canon, trained) -> None:
    classifier, _ = trained
    characters = load_characters()
    lines = {cid: [u.text for u in canon.lines(cid)] for cid in IDS}
    in_role = compute_metrics({cid: _held_out_lines(canon, cid) for cid in IDS}, characters, classifier, lines)
    generic = compute_metrics({cid: ASSISTANT_ANSWERS for cid in IDS}, characters, classifier, lines)
    for cid in IDS:
        good, bad = in_role.characters[cid], generic.characters[cid]
        assert good.broken_persona_rate == 0.0
        assert bad.broken_persona_rate == 0.75  # three of the four assistant answers say what they are
        assert bad.self_ref_rate == 0.0
        assert good.canon_similarity > 0.99  # each line is its own nearest canon line
        assert good.canon_similarity > bad.canon_similarity + 0.3
    assert sum(m.who_said_it for m in in_role.characters.values()) / 4 > 0.6
    assert in_role.characters["wukong"].self_ref_rate > generic.characters["wukong"].self_ref_rate
    # identical answers for everyone: nobody is distinct; the canon voices are
    assert all(m.distinctness < 1e-6 for m in generic.characters.values())
    assert all(m.distinctness > 0.05 for m in in_role.characters.values())
    assert sum(map(sum, in_role.confusion)) == sum(len(_held_out_lines(canon, c)) for c in IDS)


@pytest.mark.slow
def test_canon_run_writes_report_charts_json_and_resumes(novel_path: Path, tmp_path: Path, capsys) -> None:
    questions = tmp_path / "held.txt"
    questions.write_text("# a comment\n你想家吗？\n前面有妖怪，怎么办？\n", encoding="utf-8")
    out = tmp_path / "run1"
    args = ["--backend", "canon", "--novel", str(novel_path), "--questions", str(questions), "--out", str(out)]
    assert evaluation.main(args) == 0
    for name in ("report.md", "metrics.json", "confusion.png", "metrics.png", "replies.jsonl"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert list(data["characters"]) == IDS
    n_per_char = len(load_characters()["wukong"].sample_questions) + 2
    assert data["run"]["replies"] == 4 * n_per_char
    assert data["classifier"]["accuracy"] > 0.6
    # the canon backend answers with canon lines: it sounds like the canon, in role
    for cid in IDS:
        assert data["characters"][cid]["broken_persona_rate"] == 0.0
        assert data["characters"][cid]["canon_similarity"] > 0.9
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "who-said-it accuracy" in report and "confusion.png" in report
    # each reply is exactly a canon line of its character; its chapter is data beside it, not in the text
    from xiyou.canon import get_canon

    canon = get_canon(novel_path)
    records = [json.loads(line) for line in (out / "replies.jsonl").read_text(encoding="utf-8").splitlines()]
    for record in records:
        chapters = {u.chapter for u in canon.lines(record["character"]) if u.text == record["text"]}
        assert chapters, record
        assert record["citation"]["chapter"] in chapters
        assert record["citation"]["label"].startswith("第") and "回" in record["citation"]["label"]

    # rerun: everything is already there, nothing is asked twice
    lines_before = (out / "replies.jsonl").read_text(encoding="utf-8").count("\n")
    assert evaluation.main(args) == 0
    assert (out / "replies.jsonl").read_text(encoding="utf-8").count("\n") == lines_before

    # compare with the first run: the change table appears
    # (one character alone: distinctness is not defined, shown as "–", never "nan"; the heading names the run)
    out2 = tmp_path / "run2"
    args2 = [*args[:-1], str(out2), "--compare", str(out / "metrics.json"), "--characters", "wukong"]
    capsys.readouterr()
    assert evaluation.main(args2) == 0
    printed = capsys.readouterr().out
    assert "distinct –" in printed and "nan" not in printed
    report2 = (out2 / "report.md").read_text(encoding="utf-8")
    assert f"## Change since `{out}` (backend canon, started " in report2
    assert "| wukong | who-said-it accuracy |" in report2
    assert "| wukong | distinctness | 0." in report2 and "| – | – |" in report2 and "nan" not in report2
    assert "different backends" not in report2


def test_bad_arguments_fail_clearly(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        evaluation.main(["--backend", "canon", "--out", str(tmp_path), "--compare", str(tmp_path / "nope.json")])
    assert e.value.code == 2
    assert "nope.json: no such file" in capsys.readouterr().err
    assert evaluation.main(["--backend", "canon", "--out", str(tmp_path), "--characters", "erlang"]) == 2
    assert "unknown character 'erlang'" in capsys.readouterr().err


def test_endpoints_run_flags_an_assistant_that_forgot_its_role(novel_path: Path, tmp_path: Path) -> None:
    """悟空 served by a model that answers like a generic assistant; 八戒 by one that stays in role."""
    from scripted_openai import ScriptedOpenAI

    def reply(request) -> str:
        if request.json["model"] == "wukong":
            return "作为一个AI助手，我没有个人经历，但我很乐意为您解答。"
        return "哥啊，老猪肚里饥了，且化些斋饭来吃，再去赶路不迟。"

    questions = tmp_path / "held.txt"
    questions.write_text("你想家吗？\n", encoding="utf-8")
    with ScriptedOpenAI(reply=reply, latency=0.0) as server:
        endpoints = tmp_path / "endpoints.toml"
        endpoints.write_text(
            f'[wukong]\nbase_url = "{server.base_url}"\nmodel = "wukong"\n'
            f'[bajie]\nbase_url = "{server.base_url}"\nmodel = "bajie"\n',
            encoding="utf-8",
        )
        out = tmp_path / "run"
        code = evaluation.main([
            "--backend", "endpoints", "--endpoints", str(endpoints), "--characters", "wukong,bajie",
            "--novel", str(novel_path), "--questions", str(questions), "--out", str(out), "--samples", "2",
        ])
        assert code == 0
        sent = server.chat_requests()
    assert {r.json["model"] for r in sent} == {"wukong", "bajie"}
    meta = {cid: c.meta_instruction for cid, c in load_characters().items()}
    assert all(r.messages[0] == {"role": "system", "content": meta[r.json["model"]]} for r in sent)
    data = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    wukong, bajie = data["characters"]["wukong"], data["characters"]["bajie"]
    assert wukong["broken_persona_rate"] == 1.0 and wukong["self_ref_rate"] == 0.0
    assert bajie["broken_persona_rate"] == 0.0 and bajie["self_ref_rate"] == 1.0
    assert bajie["who_said_it"] == 1.0
    assert data["run"]["replies"] == 2 * 2 * (len(load_characters()["wukong"].sample_questions) + 1)


def _metrics_data(backend: str) -> dict:
    numbers = dict(who_said_it=0.5, self_ref_rate=0.2, broken_persona_rate=0.0, distinctness=0.3,
                   canon_similarity=0.4, mean_length=30.0, median_length=28.0)  # fmt: skip
    run = dict(backend=backend, questions=1, samples=1, replies=4, errors=0, started="s", finished="f")
    return {
        "run": run,
        "classifier": {"accuracy": 0.8, "balanced_accuracy": 0.8, "n_test": 10, "n_train": 90},
        "characters": {"wukong": numbers},
        "confusion": {"labels": ["wukong"], "matrix": [[1]]},
    }


def test_a_comparison_across_backends_says_their_stop_handling_differs() -> None:
    from pipeline.evaluation.report import backend_note, render_markdown

    base, tuned = _metrics_data("transformers"), _metrics_data("endpoints")
    assert backend_note(base, _metrics_data("transformers")) is None
    note = backend_note(base, tuned)
    assert "different backends (transformers before, endpoints now)" in note and "ends a reply its own way" in note
    markdown = render_markdown(tuned, [("wukong", "distinctness", 0.3, float("nan"), float("nan"))], "`base`", note)
    assert note in markdown and "| wukong | distinctness | 0.300 | – | – |" in markdown

"""Persona mode end to end: the endpoints file's `prompt` and `[default]`, the XIYOU_API_* shortcut, a real
`transformers serve`, what the server receives (scripted server), and a room mixing persona and meta members."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from scripted_openai import ScriptedOpenAI

from xiyou import env
from xiyou.backends.base import GenerationSettings, collect
from xiyou.backends.factory import make_backend
from xiyou.backends.openai_backend import OpenAIBackend
from xiyou.character import load_characters
from xiyou.endpoints import EndpointError, configured_endpoints, load_endpoints
from xiyou.prompts import build_messages, describe, mode_of, room_preamble, system_prompt

C = load_characters()
SHORTCUT = ("XIYOU_API_BASE_URL", "XIYOU_API_MODEL")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in (*SHORTCUT, "XIYOU_ENDPOINTS", "XIYOU_BACKEND", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)


def shortcut(monkeypatch: pytest.MonkeyPatch, base_url: str, model: str) -> None:
    monkeypatch.setenv("XIYOU_API_BASE_URL", base_url)
    monkeypatch.setenv("XIYOU_API_MODEL", model)


# --- configuration ---------------------------------------------------------------------------------------------
def test_default_table_applies_to_everyone_not_listed(tmp_path: Path) -> None:
    path = tmp_path / "endpoints.toml"
    path.write_text(
        '[bajie]\nbase_url = "http://127.0.0.1:23333/v1"\nmodel = "bajie"\n\n'
        '[default]\nbase_url = "http://127.0.0.1:11434/v1"\nmodel = "qwen2.5:7b"\nprompt = "persona"\n',
        encoding="utf-8",
    )
    configs = load_endpoints(path)
    assert list(configs) == list(C)  # every character, in order
    assert (configs["bajie"].model, configs["bajie"].prompt) == ("bajie", "meta")  # his own table, default mode
    for cid in ("sanzang", "wukong", "wujing"):
        assert (configs[cid].base_url, configs[cid].model) == ("http://127.0.0.1:11434/v1", "qwen2.5:7b")
        assert configs[cid].prompt == "persona"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[wukong]\nbase_url = "http://h/v1"\nprompt = "chatty"\n', "table [wukong]: field 'prompt'"),
        ('[default]\nbase_url = "ftp://h"\n', "table [default]: base_url must start with http"),
        ('default = "persona"\n', "'default' must be a table"),
    ],
)
def test_bad_prompt_and_default_tables_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "endpoints.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(EndpointError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_endpoints(path)


def test_env_shortcut_puts_all_four_in_persona_mode(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert configured_endpoints() == {}
    shortcut(monkeypatch, "http://127.0.0.1:11434/v1", "qwen2.5:7b")
    configs = configured_endpoints()
    assert list(configs) == list(C)
    assert {(c.base_url, c.model, c.prompt, c.api_key_env) for c in configs.values()} == {
        ("http://127.0.0.1:11434/v1", "qwen2.5:7b", "persona", None)  # keyless (Ollama)
    }
    assert env.backend_kind() == "openai"  # the apps follow the shortcut without XIYOU_BACKEND
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    backend = make_backend(C["wukong"])
    assert isinstance(backend, OpenAIBackend) and backend.model == "qwen2.5:7b"
    assert backend.api_key_env == "OPENAI_API_KEY" and mode_of(backend) == "persona"
    assert describe(backend).startswith("人设模式 · persona prompt on ") and "qwen2.5:7b" in describe(backend)
    assert "sk-test" not in describe(backend)
    # a file's own tables win over the shortcut; the shortcut fills in the rest
    path = tmp_path / "endpoints.toml"
    path.write_text('[bajie]\nbase_url = "http://127.0.0.1:23333/v1"\nmodel = "bajie"\n', encoding="utf-8")
    mixed = configured_endpoints(path)
    assert (mixed["bajie"].model, mixed["bajie"].prompt) == ("bajie", "meta")
    assert (mixed["wukong"].model, mixed["wukong"].prompt) == ("qwen2.5:7b", "persona")
    assert mode_of(make_backend(C["bajie"], endpoint=mixed["bajie"])) == "meta"


def test_half_a_shortcut_says_what_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XIYOU_API_BASE_URL", "http://127.0.0.1:11434/v1")
    with pytest.raises(EndpointError, match="set XIYOU_API_MODEL"):
        configured_endpoints()


# --- a real server -----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_persona_mode_on_transformers_serve(tiny_server, tiny_model, monkeypatch: pytest.MonkeyPatch, novel_path):
    monkeypatch.setenv("XIYOU_NOVEL", str(novel_path))
    shortcut(monkeypatch, tiny_server.base_url, tiny_server.model)
    backend = make_backend(C["wukong"])
    messages = build_messages(
        C["wukong"], [{"role": "user", "content": "大圣，你的金箍棒从哪里来？"}], mode_of(backend)
    )
    assert C["wukong"].description in messages[0]["content"] and "（第" in messages[0]["content"]
    reply = collect(backend, messages, GenerationSettings(max_new_tokens=64, temperature=0.0))
    assert reply == tiny_model.reply + tiny_model.after  # transformers serve stops at EOS only (tests/tiny_model.py)


def test_the_server_receives_the_persona_prompt_and_canon_examples(monkeypatch: pytest.MonkeyPatch, novel_path):
    monkeypatch.setenv("XIYOU_NOVEL", str(novel_path))
    question = [{"role": "user", "content": "大圣，你的金箍棒从哪里来？"}]
    with ScriptedOpenAI(reply="俺老孙的棒子，东海龙宫里得来的！") as server:
        shortcut(monkeypatch, server.base_url, "qwen2.5:7b")
        backend = make_backend(C["wukong"])
        reply = collect(backend, build_messages(C["wukong"], question, mode_of(backend)), GenerationSettings())
        [request] = server.chat_requests()
    assert reply == "俺老孙的棒子，东海龙宫里得来的！"
    assert request.json["model"] == "qwen2.5:7b"
    system = request.messages[0]
    assert system == {"role": "system", "content": system_prompt(C["wukong"], "persona", conversation=question)}
    assert C["wukong"].description in system["content"]
    examples = system["content"].split("以下是《西游记》原著中孙悟空说过的话", 1)[1]
    assert re.search(r"\n孙悟空：.+（第[一二三四五六七八九十百]+回）", examples)  # his lines, each with its chapter
    assert request.messages[1:] == question


# --- a room with persona and meta members ------------------------------------------------------------------------
def test_room_mixes_a_meta_member_with_persona_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, novel_path):
    from xiyou.room import Room, TurnEnded
    from xiyou.room.lineup import build_lineup

    monkeypatch.setenv("XIYOU_NOVEL", str(novel_path))
    with ScriptedOpenAI(reply=lambda req: f"{req.json['model']}在此。") as server:
        endpoints = tmp_path / "endpoints.toml"
        endpoints.write_text(
            f'[bajie]\nbase_url = "{server.base_url}"\nmodel = "bajie-ft"\nprompt = "meta"\n\n'
            f'[default]\nbase_url = "{server.base_url}"\nmodel = "general"\nprompt = "persona"\n',
            encoding="utf-8",
        )
        lineup = build_lineup(["wukong", "bajie"], endpoints)
        assert [lineup.member(i).label.split(" · ")[0] for i in ("wukong", "bajie")] == ["人设模式", "微调模型"]
        room = Room(lineup.members(["wukong", "bajie"]), person="小明", policy="all", banter_turns=0)
        room.say("悟空、八戒，你们好")
        spoken = [e.entry.text for e in room.run() if isinstance(e, TurnEnded)]
        requests = {r.json["model"]: r for r in server.chat_requests()}
    assert sorted(spoken) == ["bajie-ft在此。", "general在此。"]
    present = [C["wukong"], C["bajie"]]
    meta = requests["bajie-ft"].messages[0]["content"]
    assert meta.startswith(f"{C['bajie'].meta_instruction}\n\n{room_preamble(C['bajie'], present, '小明')}")
    persona = requests["general"].messages[0]["content"]
    assert persona.startswith("你就是孙悟空") and C["wukong"].description in persona
    assert room_preamble(C["wukong"], present, "小明") in persona and "原著中孙悟空说过的话" in persona
    assert C["bajie"].description not in meta


# --- the CLI ------------------------------------------------------------------------------------------------------
def test_xiyou_room_and_prompt_follow_the_shortcut(monkeypatch: pytest.MonkeyPatch, novel_path) -> None:
    with ScriptedOpenAI(reply="贫僧在此。") as server:
        env_vars = {
            **os.environ,
            "XIYOU_API_BASE_URL": server.base_url,
            "XIYOU_API_MODEL": "general",
            "XIYOU_NOVEL": str(novel_path),
        }
        xiyou = [sys.executable, "-m", "xiyou.cli"]
        proc = subprocess.run(
            [*xiyou, "room", "师父，你好", "--members", "sanzang", "--turns", "0"],
            env=env_vars, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        [request] = server.chat_requests()
    assert "persona mode on XIYOU_API_BASE_URL" in proc.stderr
    assert '"text": "贫僧在此。"' in proc.stdout
    assert request.json["model"] == "general" and C["sanzang"].description in request.messages[0]["content"]
    shown = subprocess.run(
        [*xiyou, "prompt", "sanzang", "师父，你好"], env=env_vars, capture_output=True, text=True, timeout=120
    )
    assert shown.returncode == 0 and "prompt mode: persona" in shown.stderr
    monkeypatch.setenv("XIYOU_NOVEL", str(novel_path))
    ask = [{"role": "user", "content": "师父，你好"}]
    assert (
        shown.stdout
        == f"── system ──\n{system_prompt(C['sanzang'], 'persona', conversation=ask)}\n\n── user ──\n师父，你好\n\n"
    )


# --- the pages and the evaluation ---------------------------------------------------------------------------------
@pytest.fixture
def pages_env(monkeypatch: pytest.MonkeyPatch, page_store: Path, novel_path: Path) -> None:
    monkeypatch.setenv("XIYOU_NOVEL", str(novel_path))


def test_the_app_follows_the_shortcut_and_says_so(pages_env, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    from xiyou.env import REPO_ROOT

    with ScriptedOpenAI(reply="俺老猪来也。") as server:
        shortcut(monkeypatch, server.base_url, "general")  # no XIYOU_BACKEND: the app follows the shortcut
        at = AppTest.from_file(str(REPO_ROOT / "apps" / "bajie" / "app.py"), default_timeout=120).run()
        assert not at.exception, at.exception
        captions = [c.value for c in at.sidebar.caption]
        assert any(c.startswith("人设模式 · persona prompt on ") and "general" in c for c in captions), captions
        at.chat_input[0].set_value("二师兄，吃了吗？").run()
        at.run()
        [request] = server.chat_requests()
    assert request.json["model"] == "general"
    ask = [{"role": "user", "content": "二师兄，吃了吗？"}]
    assert request.messages == build_messages(C["bajie"], ask, "persona")


def test_the_hub_follows_the_shortcut_and_lists_each_members_mode(pages_env, monkeypatch) -> None:
    from streamlit.testing.v1 import AppTest

    from xiyou.env import REPO_ROOT

    with ScriptedOpenAI(reply="贫僧在此。") as server:
        shortcut(monkeypatch, server.base_url, "general")
        at = AppTest.from_file(str(REPO_ROOT / "hub" / "app.py"), default_timeout=120).run()
        assert not at.exception, at.exception
        captions = [c.value for c in at.sidebar.caption]
        assert sum(c.startswith("人设模式 · persona prompt on ") for c in captions) == 4, captions
        banter = next(w for w in at.slider if str(w.key).startswith("hub_banter"))
        banter.set_value(0).run()
        next(w for w in at.chat_input if str(w.key).startswith("hub_input")).set_value("师父，你好").run()
        requests = server.chat_requests()
    assert requests and requests[0].json["model"] == "general"
    system = requests[0].messages[0]["content"]
    assert system.startswith("你就是唐三藏") and C["sanzang"].description in system and "【群聊】" in system


def test_eval_asks_in_persona_mode_on_the_shortcut(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, novel_path):
    from pipeline import eval as evaluation

    questions = tmp_path / "q.txt"
    questions.write_text("你想家吗？\n", encoding="utf-8")
    with ScriptedOpenAI(reply="俺老孙想花果山了。") as server:
        shortcut(monkeypatch, server.base_url, "general")
        code = evaluation.main([
            "--backend", "endpoints", "--characters", "wukong", "--novel", str(novel_path),
            "--questions", str(questions), "--no-sample-questions", "--out", str(tmp_path / "run"),
        ])  # fmt: skip
        [request] = server.chat_requests()
    assert code == 0
    monkeypatch.setenv("XIYOU_NOVEL", str(novel_path))
    assert request.messages == build_messages(C["wukong"], [{"role": "user", "content": "你想家吗？"}], "persona")

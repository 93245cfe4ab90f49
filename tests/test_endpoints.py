"""The endpoints file, the backend factory and client-side stop strings."""

from __future__ import annotations

from pathlib import Path

import pytest
from scripted_openai import ScriptedOpenAI

from xiyou.backends.base import BackendError, GenerationSettings
from xiyou.backends.factory import make_backend
from xiyou.backends.openai_backend import OpenAIBackend
from xiyou.backends.stops import apply_stops
from xiyou.character import get_character
from xiyou.endpoints import EndpointConfig, EndpointError, dump_endpoints, load_endpoints, write_endpoints

EXAMPLE = """
[wukong]
base_url = "http://127.0.0.1:23333/v1"
model = "wukong"
[bajie]
base_url = "http://127.0.0.1:23333/v1"   # same LMDeploy server, another LoRA adapter
model = "bajie"
api_key_env = "BAJIE_KEY"
send_top_k = true
timeout = 5
[sanzang]
backend = "canon"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "endpoints.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_loads_the_documented_example(tmp_path: Path) -> None:
    endpoints = load_endpoints(write(tmp_path, EXAMPLE))
    assert list(endpoints) == ["wukong", "bajie", "sanzang"]
    assert endpoints["wukong"].backend == "openai" and endpoints["wukong"].model == "wukong"
    assert endpoints["bajie"].api_key_env == "BAJIE_KEY" and endpoints["bajie"].send_top_k
    assert endpoints["bajie"].timeout == 5.0
    assert endpoints["sanzang"].backend == "canon" and endpoints["sanzang"].base_url is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[sunwukong]\nbase_url = "http://x/v1"\n', ["[sunwukong]", "unknown character id", "wukong"]),
        ('[wukong]\nmodel = "wukong"\n', ["[wukong]", "base_url"]),
        ('[wukong]\nbase_url = "http://x/v1"\nmodle = "w"\n', ["[wukong]", "'modle'", "unknown field"]),
        ('[wukong]\nbase_url = "http://x/v1"\ntimeout = -1\n', ["[wukong]", "'timeout'"]),
        ('[wukong]\nbackend = "lmdeploy"\n', ["[wukong]", "'backend'"]),
        ('[wukong]\nbase_url = "127.0.0.1:23333"\n', ["[wukong]", "http://"]),
        ("[wukong\n", ["not valid TOML"]),
    ],
)
def test_broken_files_name_the_file_table_and_field(tmp_path: Path, text: str, expected: list[str]) -> None:
    path = write(tmp_path, text)
    with pytest.raises(EndpointError) as err:
        load_endpoints(path)
    message = str(err.value)
    assert str(path) in message
    for part in expected:
        assert part in message


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(EndpointError, match="no such endpoints file"):
        load_endpoints(tmp_path / "missing.toml")


def test_written_files_read_back(tmp_path: Path) -> None:
    endpoints = load_endpoints(write(tmp_path, EXAMPLE))
    out = write_endpoints(tmp_path / "out" / "endpoints.toml", endpoints)
    assert load_endpoints(out) == endpoints
    text = dump_endpoints({"wukong": {"base_url": "http://h/v1", "model": '悟空 "LoRA"'}})
    assert load_endpoints(write(tmp_path, text))["wukong"].model == '悟空 "LoRA"'
    with pytest.raises(EndpointError):
        write_endpoints(tmp_path / "bad.toml", {"nobody": EndpointConfig(backend="canon")})


# --- the factory ----------------------------------------------------------------------------------------------
def test_factory_builds_openai_backends_from_the_endpoints_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XIYOU_ENDPOINTS", str(write(tmp_path, EXAMPLE)))
    monkeypatch.setenv("BAJIE_KEY", "sk-bajie")
    monkeypatch.setenv("XIYOU_BACKEND", "openai")
    bajie = make_backend(get_character("bajie"))
    assert isinstance(bajie, OpenAIBackend)
    assert bajie.model == "bajie" and bajie.base_url == "http://127.0.0.1:23333/v1" and bajie.send_top_k
    assert bajie.timeout == 5.0
    # no table for wujing, no OPENAI_BASE_URL: a clear error naming both ways to fix it
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(BackendError, match=r"no \[wujing\] table") as err:
        make_backend(get_character("wujing"))
    assert "OPENAI_BASE_URL" in str(err.value) and "XIYOU_BACKEND=canon" in str(err.value)


def test_factory_falls_back_to_openai_base_url(monkeypatch) -> None:
    monkeypatch.delenv("XIYOU_ENDPOINTS", raising=False)
    with ScriptedOpenAI(reply=lambda req: f"model={req.json['model']}") as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-data-generation")
        backend = make_backend(get_character("wujing"), kind="openai")
        assert "".join(backend.stream([{"role": "user", "content": "大师兄呢"}], GenerationSettings())) == (
            "model=wujing"
        )
        assert server.chat_requests()[0].api_key == "sk-data-generation"


def test_factory_refuses_an_unknown_backend_kind(monkeypatch) -> None:
    monkeypatch.setenv("XIYOU_BACKEND", "gpt")
    with pytest.raises(BackendError, match="XIYOU_BACKEND"):
        make_backend(get_character("wukong"))


def test_factory_uses_the_endpoint_kind(tmp_path: Path, tiny_model_dir: Path, monkeypatch) -> None:
    monkeypatch.setenv("XIYOU_BACKEND", "openai")  # the endpoint's own kind wins
    backend = make_backend(
        get_character("sanzang"), endpoint=EndpointConfig(backend="transformers", model_path=str(tiny_model_dir))
    )
    assert backend.label.startswith("transformers:")


# --- stop strings ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("deltas", "stops", "expected"),
    [
        (["俺老孙", "来也\n猪", "八戒：", "师兄"], ["\n猪八戒："], "俺老孙来也"),
        (["甲", "乙", "丙"], [], "甲乙丙"),
        (["你好\n猪", "头"], ["\n猪八戒："], "你好\n猪头"),  # a prefix that did not complete is given back
        (["abc"], ["c", "bc"], "a"),
        (["\n", "八", "戒"], ["\n八戒"], ""),
    ],
)
def test_stop_strings_cut_the_reply(deltas: list[str], stops: list[str], expected: str) -> None:
    out = list(apply_stops(deltas, stops))
    assert "".join(out) == expected and all(out)


def test_stop_filter_holds_back_exactly_the_text_that_may_become_a_stop_string() -> None:
    """Against a brute-force reference, on random deltas over a small alphabet (many near-misses)."""
    import random

    from xiyou.backends.stops import StopFilter

    rng = random.Random(7)
    for _ in range(500):
        stops = ["".join(rng.choice("ab<|") for _ in range(rng.randint(1, 5))) for _ in range(rng.randint(1, 4))]
        text = "".join(rng.choice("ab<|x") for _ in range(rng.randint(0, 30)))
        cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
        expected = text[: min(cuts)] if cuts else text
        f, shown = StopFilter(stops), ""
        pos = 0
        while pos < len(text) and not f.stopped:
            step = rng.randint(1, 4)
            shown += f.push(text[pos : pos + step])
            pos = min(pos + step, len(text))
            if not f.stopped:  # held back: exactly the longest tail that could still become a stop string
                seen = text[:pos]
                longest = next(
                    (k for k in range(len(seen), 0, -1) if any(len(s) > k and s.startswith(seen[-k:]) for s in stops)),
                    0,
                )
                assert shown == seen[: len(seen) - longest], (stops, seen, shown)
        shown += f.flush()
        assert shown == expected, (stops, text)

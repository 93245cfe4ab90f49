"""A hostile OpenAI-compatible server against the client layer (issue 15 items 1, 3, 4): a server that echoes
the API key back in its error bodies, one that sends text no encoder can write, one that ignores max_tokens.

Each case is seen where a person would see it: the backend's errors and label (the app's and hub's notices show
them), `xiyou room`'s output, the pipeline engine's failures and manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from scripted_openai import Fault, ScriptedOpenAI

from pipeline.llm import EngineConfig, Request, run_requests, write_manifest
from xiyou.backends.base import BackendError, GenerationSettings
from xiyou.backends.openai_backend import OpenAIBackend
from xiyou.backends.reply import MAX_REPLY_CHARS, reply_char_limit
from xiyou.cli import main as xiyou_cli

MESSAGES = [{"role": "system", "content": "你是孙悟空"}, {"role": "user", "content": "大圣，你好"}]
SK_KEY = "sk-hostile-0123456789abcdef"
PLAIN_KEY = "correct-horse-battery-staple-42"  # a key that looks like nothing: only knowing it redacts it


# --- item 1: the key never reaches a person ---------------------------------------------------------------------
@pytest.mark.parametrize("key", [SK_KEY, PLAIN_KEY])
@pytest.mark.parametrize("status", [401, 422, 500])
def test_an_echoed_key_appears_in_no_backend_error(key: str, status: int, monkeypatch) -> None:
    monkeypatch.setenv("HOSTILE_KEY", key)
    with ScriptedOpenAI() as server:
        server.queue_faults(Fault.echo_headers(status))
        backend = OpenAIBackend(server.base_url, "wukong", api_key_env="HOSTILE_KEY", max_retries=0)
        with pytest.raises(BackendError) as err:
            list(backend.stream(MESSAGES, GenerationSettings()))
        [request] = server.chat_requests()
    assert request.api_key == key  # the key was sent, and the server echoed it back …
    message = str(err.value)
    assert f"HTTP {status}" in message and "you sent" in message  # … the body is still shown …
    assert key not in message and key[:12] not in message  # … without the key
    assert "Bearer ***" in message


def test_a_url_password_appears_in_no_label_or_error() -> None:
    with ScriptedOpenAI() as server:
        url = server.base_url.replace("http://", "http://maitreya:pa55w0rd-secret@")
        backend = OpenAIBackend(url, "wukong", max_retries=0)
        assert "pa55w0rd" not in backend.label and "maitreya" not in backend.label
        assert backend.label == f"openai: wukong @ {server.base_url}"
        server.queue_faults(Fault.echo_headers(500))
        with pytest.raises(BackendError) as err:
            list(backend.stream(MESSAGES, GenerationSettings()))
    assert "pa55w0rd" not in str(err.value)


def test_xiyou_room_prints_no_key(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOSTILE_KEY", PLAIN_KEY)
    with ScriptedOpenAI() as server:
        server.queue_faults(Fault.echo_headers(401))
        endpoints = tmp_path / "endpoints.toml"
        endpoints.write_text(
            f'[bajie]\nbase_url = "{server.base_url}"\napi_key_env = "HOSTILE_KEY"\nmax_retries = 0\n',
            encoding="utf-8",
        )
        result = CliRunner().invoke(
            xiyou_cli,
            ["room", "--endpoints", str(endpoints), "--members", "bajie", "--turns", "0", "八戒"],
            env={"XIYOU_ENDPOINTS": "", "HOSTILE_KEY": PLAIN_KEY},
        )
        assert server.chat_requests()[0].api_key == PLAIN_KEY
    output = result.stdout + result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert any("HTTP 401" in line.get("error", "") for line in lines), output  # the error is shown …
    assert PLAIN_KEY not in output  # … without the key


def test_the_engine_records_no_echoed_key(tmp_path: Path) -> None:
    with ScriptedOpenAI() as server:
        server.queue_faults(*[Fault.echo_headers(500)] * 3)
        config = EngineConfig(
            base_url=server.base_url, model="m", api_key=PLAIN_KEY, max_retries=2, backoff=0.01, progress=False
        )
        stats = run_requests(config, [Request(id="r0", messages=MESSAGES)], lambda r, t: None)
    assert stats.failed == 1 and "you sent" in stats.failures[0]["error"]
    manifest = write_manifest(tmp_path / "out.jsonl", {"stats": stats.as_dict()}).read_text(encoding="utf-8")
    assert PLAIN_KEY not in json.dumps(stats.as_dict()) and PLAIN_KEY not in manifest


# --- item 3: text no encoder can write --------------------------------------------------------------------------
HOSTILE_TEXT = "俺老孙\ud800来也\ud83d\ude00！"  # a lone surrogate, then a pair the stream splits in two


def test_unencodable_text_is_replaced_at_the_backend() -> None:
    with ScriptedOpenAI(reply=HOSTILE_TEXT, chunk_chars=1) as server:
        backend = OpenAIBackend(server.base_url, "wukong")
        deltas = list(backend.stream(MESSAGES, GenerationSettings()))
    text = "".join(deltas)
    for delta in deltas:
        delta.encode("utf-8")  # every piece can be written anywhere
    assert text == "俺老孙\ufffd来也😀！"


@pytest.mark.parametrize("stream", [False, True])
def test_unencodable_text_is_replaced_in_the_engine(stream: bool) -> None:
    got: dict[str, str] = {}
    with ScriptedOpenAI(reply=HOSTILE_TEXT, chunk_chars=1) as server:
        config = EngineConfig(base_url=server.base_url, model="m", stream=stream, progress=False)
        run_requests(config, [Request(id="r0", messages=MESSAGES)], lambda r, t: got.__setitem__(r.id, t))
    assert got == {"r0": "俺老孙\ufffd来也😀！"}


def test_xiyou_room_survives_unencodable_text(tmp_path: Path) -> None:
    with ScriptedOpenAI(reply=HOSTILE_TEXT) as server:
        endpoints = tmp_path / "endpoints.toml"
        endpoints.write_text(f'[bajie]\nbase_url = "{server.base_url}"\n', encoding="utf-8")
        result = CliRunner().invoke(
            xiyou_cli,
            ["room", "--endpoints", str(endpoints), "--members", "bajie", "--turns", "0", "八戒"],
            env={"XIYOU_ENDPOINTS": ""},
        )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert lines[-1]["id"] == "bajie" and lines[-1]["text"] == "俺老孙\ufffd来也😀！"


# --- item 4: a server that ignores max_tokens -------------------------------------------------------------------
RUNAWAY = "无穷无尽" * 25_000  # 100,000 characters, whatever max_tokens says


def test_a_runaway_reply_is_cut_and_the_stream_says_so() -> None:
    with ScriptedOpenAI(reply=RUNAWAY, chunk_chars=40) as server:
        backend = OpenAIBackend(server.base_url, "wukong")
        stream = backend.stream(MESSAGES, GenerationSettings(max_new_tokens=64))
        text = "".join(stream)
        assert server.chat_requests()[0].json["max_tokens"] == 64
    assert text == RUNAWAY[: reply_char_limit(64)]
    assert stream.truncated and f"cut at {reply_char_limit(64):,} characters" in (stream.notice or "")
    with ScriptedOpenAI(reply="俺老孙来也") as server:
        honest = OpenAIBackend(server.base_url, "wukong").stream(MESSAGES, GenerationSettings(max_new_tokens=64))
        assert "".join(honest) == "俺老孙来也"
    assert not honest.truncated and honest.notice is None


def test_no_reply_grows_past_the_hard_ceiling() -> None:
    with ScriptedOpenAI(reply=RUNAWAY, chunk_chars=500) as server:
        backend = OpenAIBackend(server.base_url, "wukong")
        text = "".join(backend.stream(MESSAGES, GenerationSettings(max_new_tokens=1_000_000)))
    assert len(text) == MAX_REPLY_CHARS < len(RUNAWAY)


@pytest.mark.parametrize("stream", [False, True])
def test_the_engine_caps_a_runaway_reply(stream: bool) -> None:
    got: dict[str, str] = {}
    with ScriptedOpenAI(reply=RUNAWAY, chunk_chars=500) as server:
        config = EngineConfig(base_url=server.base_url, model="m", max_tokens=256, stream=stream, progress=False)
        run_requests(config, [Request(id="r0", messages=MESSAGES)], lambda r, t: got.__setitem__(r.id, t))
    assert got["r0"] == RUNAWAY[: reply_char_limit(256)]


# --- the one redaction routine ----------------------------------------------------------------------------------
def test_the_redaction_routine_masks_keys_and_passwords_and_nothing_else(caplog) -> None:
    import logging

    from xiyou.redact import install_log_filter, public_url, redact, register_secret

    register_secret("plain-registered-value-77")
    cases = {
        "HTTP 401: Bearer sk-abc123def456ghi": "HTTP 401: Bearer ***",
        '{"authorization": "Basic dXNlcjpwYXNz"}': '{"authorization": "Basic ***"}',
        "see http://monkey:peaches@host:8080/v1 now": "see http://***@host:8080/v1 now",
        "GET /v1?api_key=abcdef123&x=1": "GET /v1?api_key=***&x=1",
        "x-api-key: zyx987654": "x-api-key: ***",
        "echo plain-registered-value-77!": "echo ***!",
        "max_tokens: 64; the token limit; 俺老孙来也": "max_tokens: 64; the token limit; 俺老孙来也",
    }
    for text, expected in cases.items():
        assert redact(text) == expected
    assert public_url("https://me:pw@api.example.com:8443/v1?key=sk-q#frag") == "https://api.example.com:8443/v1"

    logger = logging.getLogger("xiyou-test-redact")
    with caplog.at_level(logging.INFO, logger=logger.name):
        install_log_filter()  # the root logger's handlers, caplog's among them
        logger.info("calling %s with %s", "http://u:p4ss@h/v1", "Bearer sk-zzzzzzzzzz")
    assert "p4ss" not in caplog.text and "sk-zzzzzzzzzz" not in caplog.text and "Bearer ***" in caplog.text


# --- a 200 that holds no reply (LMDeploy's proxy routing to a server that died) ----------------------------------
@pytest.mark.parametrize("stream", [True, False])
def test_a_json_error_with_status_200_is_an_error_not_an_empty_reply(stream: bool) -> None:
    with ScriptedOpenAI() as server:
        server.queue_faults(Fault.error_body())
        backend = OpenAIBackend(server.base_url, "wukong", max_retries=0)
        with pytest.raises(BackendError) as err:
            list(backend.stream(MESSAGES, GenerationSettings()))
        assert "10402" in str(err.value)
        # the engine (the data steps) reads the same answer as a failure too, never as an empty record
        server.queue_faults(Fault.error_body())
        config = EngineConfig(base_url=server.base_url, model="wukong", max_retries=0, stream=stream, progress=False)
        got: dict[str, str] = {}
        stats = run_requests(config, [Request(id="r0", messages=MESSAGES)], lambda r, t: got.__setitem__(r.id, t))
    assert got == {} and stats.failed == 1 and "10402" in stats.failures[0]["error"]


def test_the_room_says_a_runaway_reply_was_cut() -> None:
    from xiyou.character import load_characters
    from xiyou.room import Room
    from xiyou.room.member import Member

    with ScriptedOpenAI(reply=RUNAWAY, chunk_chars=500) as server:
        backend = OpenAIBackend(server.base_url, "wukong", max_retries=0)
        settings = GenerationSettings(max_new_tokens=64)
        room = Room([Member(load_characters()["wukong"], backend, timeout=30.0, settings=settings)])
        room.say("悟空，说说你的本事")
        list(room.run(banter=0))
    [entry] = [e for e in room.entries if e.speaker == "wukong"]
    assert len(entry.text) == reply_char_limit(64) < len(RUNAWAY)
    [cut] = [n for n in room.notices if n.kind == "truncated"]
    assert cut.speaker == "wukong" and cut.position == len(room.entries)  # shown right after the cut reply

"""The OpenAI-compatible backend: against a real server (`transformers serve` on the tiny model) and against the
scripted server for faults (connection refused, 500, stalls): clear errors, never a hang past the timeout."""

from __future__ import annotations

import threading

import pytest
from scripted_openai import Fault, ScriptedOpenAI
from servers import free_port
from tiny_model import TinyModel

from xiyou.backends.base import BackendError, GenerationSettings
from xiyou.backends.openai_backend import OpenAIBackend

MESSAGES = [{"role": "system", "content": "你是孙悟空"}, {"role": "user", "content": "大圣，你好"}]
STANDARD_FIELDS = {"model", "messages", "max_tokens", "temperature", "top_p", "stream", "stop", "seed"}


# --- a real server ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_streams_a_reply_from_transformers_serve(tiny_server, tiny_model: TinyModel) -> None:
    backend = OpenAIBackend(tiny_server.base_url, tiny_server.model, timeout=60)
    deltas = list(backend.stream(MESSAGES, GenerationSettings(max_new_tokens=64)))
    assert len(deltas) >= 5 and all(deltas)
    # transformers serve stops at the model's EOS only, so it says AFTER too (tests/tiny_model.py); no [DONE] sent.
    assert "".join(deltas) == tiny_model.reply + tiny_model.after
    cut = "".join(backend.stream(MESSAGES, GenerationSettings(stop=("莫怕",), max_new_tokens=64)))
    assert cut == tiny_model.reply.split("莫怕")[0]
    short = "".join(backend.stream(MESSAGES, GenerationSettings(max_new_tokens=3)))
    assert short and tiny_model.reply.startswith(short) and len(short) < len(tiny_model.reply)
    # the end-of-turn marker as a stop string: the server stops there, and only the reply arrives
    turn = "".join(backend.stream(MESSAGES, GenerationSettings(stop=("<|im_end|>",), max_new_tokens=64)))
    assert turn == tiny_model.reply


@pytest.mark.slow
def test_real_server_refusals_are_clear_errors(tiny_server) -> None:
    # transformers serve refuses LMDeploy's top_k (HTTP 422): the error says which switch to turn off.
    lmdeploy_style = OpenAIBackend(tiny_server.base_url, tiny_server.model, send_top_k=True, top_k=40, max_retries=0)
    with pytest.raises(BackendError, match="send_top_k") as err:
        list(lmdeploy_style.stream(MESSAGES, GenerationSettings()))
    assert "422" in str(err.value)
    unknown = OpenAIBackend(tiny_server.base_url, "/no/such/model", max_retries=0)
    with pytest.raises(BackendError, match="/no/such/model"):
        list(unknown.stream(MESSAGES, GenerationSettings()))


# --- what is sent -----------------------------------------------------------------------------------------------
def test_sends_standard_fields_and_lmdeploy_extras_only_when_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WUKONG_KEY", "sk-secret-wukong")
    settings = GenerationSettings(max_new_tokens=33, temperature=0.5, top_p=0.9, repetition_penalty=1.1)
    with ScriptedOpenAI(reply="俺老孙来也", send_done=False) as server:
        plain = OpenAIBackend(server.base_url, "wukong", api_key_env="WUKONG_KEY")
        assert "".join(plain.stream(MESSAGES, settings)) == "俺老孙来也"  # no [DONE]: still a whole reply
        extras = OpenAIBackend(server.base_url, "wukong", send_top_k=True, send_repetition_penalty=True, top_k=40)
        assert "".join(extras.stream(MESSAGES, settings)) == "俺老孙来也"
        first, second = server.chat_requests()
    assert set(first.json) <= STANDARD_FIELDS
    assert first.json["model"] == "wukong" and first.json["max_tokens"] == 33 and first.json["stream"] is True
    assert first.json["temperature"] == 0.5 and first.json["top_p"] == 0.9
    assert first.json["messages"] == MESSAGES
    assert first.api_key == "sk-secret-wukong"
    assert set(second.json) - STANDARD_FIELDS == {"top_k", "repetition_penalty"}
    assert second.json["top_k"] == 40 and second.json["repetition_penalty"] == 1.1
    assert second.api_key != "sk-secret-wukong"  # a keyless endpoint never borrows another's key


def test_the_reply_ends_at_the_end_of_turn_and_at_every_stop_string() -> None:
    reply = "俺老孙来也！师父莫怕<|im_end|>\n<|im_start|>user\n八戒又偷懒"
    with ScriptedOpenAI(reply=reply, chunk_chars=3) as server:
        backend = OpenAIBackend(server.base_url, "wukong")
        assert "".join(backend.stream(MESSAGES, GenerationSettings())) == "俺老孙来也！师父莫怕"
        six = ("甲", "乙", "丙", "丁", "戊", "莫怕")
        assert "".join(backend.stream(MESSAGES, GenerationSettings(stop=six))) == "俺老孙来也！师父"
        plain, limited = server.chat_requests()
    assert "stop" not in plain.json  # nothing asked: the end of turn is cut on our side only
    assert limited.json["stop"] == ["甲", "乙", "丙", "丁"]  # the API takes four; the other two are applied here


def test_a_server_that_refuses_stop_gets_the_request_again_without_it() -> None:
    with ScriptedOpenAI(reply="俺老孙来也<|im_end|>后文", refuse_fields=["stop"]) as server:
        backend = OpenAIBackend(server.base_url, "wukong", max_retries=0)
        settings = GenerationSettings(stop=("<|im_end|>",))
        assert "".join(backend.stream(MESSAGES, settings)) == "俺老孙来也"
        assert "".join(backend.stream(MESSAGES, settings)) == "俺老孙来也"
        sent = server.chat_requests()
    assert ["stop" in r.json for r in sent] == [True, False, False]


def test_missing_key_variable_is_named_and_no_key_leaks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BAJIE_KEY", raising=False)
    with pytest.raises(BackendError, match="BAJIE_KEY"):
        OpenAIBackend("http://127.0.0.1:9/v1", "bajie", api_key_env="BAJIE_KEY")
    monkeypatch.setenv("BAJIE_KEY", "sk-very-secret")
    with ScriptedOpenAI() as server:
        server.queue_faults(Fault.server_error(401))
        backend = OpenAIBackend(server.base_url, "bajie", api_key_env="BAJIE_KEY", max_retries=0)
        with pytest.raises(BackendError) as err:
            list(backend.stream(MESSAGES, GenerationSettings()))
    assert "401" in str(err.value) and "BAJIE_KEY" in str(err.value)
    assert "sk-very-secret" not in str(err.value)


# --- faults -----------------------------------------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_connection_refused_is_a_clear_error() -> None:
    backend = OpenAIBackend(f"http://127.0.0.1:{free_port()}/v1", "wukong", max_retries=0, timeout=5)
    with pytest.raises(BackendError, match="cannot reach the server") as err:
        list(backend.stream(MESSAGES, GenerationSettings()))
    assert "127.0.0.1" in str(err.value)


@pytest.mark.timeout(30)
def test_server_error_is_reported_and_retried_once_configured() -> None:
    with ScriptedOpenAI(reply="俺老孙来也") as server:
        server.queue_faults(Fault.server_error(500))
        no_retry = OpenAIBackend(server.base_url, "wukong", max_retries=0)
        with pytest.raises(BackendError, match="HTTP 500") as err:
            list(no_retry.stream(MESSAGES, GenerationSettings()))
        assert "server failed" in str(err.value)
        server.queue_faults(Fault.server_error(500))
        retrying = OpenAIBackend(server.base_url, "wukong", max_retries=1)
        assert "".join(retrying.stream(MESSAGES, GenerationSettings())) == "俺老孙来也"


@pytest.mark.timeout(30)
@pytest.mark.parametrize("where", ["before_headers", "mid_stream"])
def test_a_stalled_server_times_out_instead_of_hanging(where: str) -> None:
    with ScriptedOpenAI(reply="俺老孙来也！师父莫怕") as server:
        server.queue_faults(Fault.stall(seconds=60, where=where))
        backend = OpenAIBackend(server.base_url, "wukong", timeout=1.0, max_retries=0)
        got: list[str] = []
        with pytest.raises(BackendError, match="no answer within 1 s"):
            for delta in backend.stream(MESSAGES, GenerationSettings()):
                got.append(delta)
    if where == "mid_stream":
        assert got  # what came before the stall was shown


@pytest.mark.timeout(30)
def test_a_dropped_or_malformed_stream_is_an_error_not_a_reply() -> None:
    with ScriptedOpenAI(reply="俺老孙来也！师父莫怕") as server:
        backend = OpenAIBackend(server.base_url, "wukong", max_retries=0, timeout=5)
        server.queue_faults(Fault.drop(where="before_headers"))
        with pytest.raises(BackendError):
            list(backend.stream(MESSAGES, GenerationSettings()))
        server.queue_faults(Fault.drop(where="mid_stream"))
        with pytest.raises(BackendError):
            list(backend.stream(MESSAGES, GenerationSettings()))
        server.queue_faults(Fault.malformed())
        with pytest.raises(BackendError, match=r"broke off|bad response"):
            list(backend.stream(MESSAGES, GenerationSettings()))


def test_cancel_stops_the_stream() -> None:
    with ScriptedOpenAI(reply="一二三四五六七八九十" * 5, chunk_chars=2, chunk_delay=0.01) as server:
        backend = OpenAIBackend(server.base_url, "wukong")
        cancel = threading.Event()
        got = []
        for delta in backend.stream(MESSAGES, GenerationSettings(), cancel):
            got.append(delta)
            if len(got) == 2:
                cancel.set()
    assert len(got) == 2


def test_a_whole_answer_is_guarded_exactly_as_a_stream() -> None:
    """The engine's non-streamed answers go through `whole_reply`, streams through `ReplyGuard`: same result."""
    import random

    from xiyou.backends.reply import ReplyGuard, ReplyStream, whole_reply

    rng = random.Random(3)
    pieces = ["俺", "老孙", "<|im_end|>", "<|im_", "end|>", "莫怕", "\ud83d", "\ude00", "\ud800", "x" * 500, "！"]
    for _ in range(300):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
        stops = tuple(rng.sample(["莫怕", "老孙来", "！x"], rng.randint(0, 2)))
        max_new = rng.choice([None, 1, 2000, 5000])
        cut = sorted(rng.sample(range(len(text) + 1), min(len(text), rng.randint(0, 8))))
        chunks = [text[a:b] for a, b in zip([0, *cut], [*cut, len(text)]) if b > a]
        streamed = "".join(ReplyStream(chunks, ReplyGuard(stops, max_new)))
        assert whole_reply(text, stops, max_new) == streamed, (text[:80], stops, max_new)

"""The scripted fault server itself: it must behave like an OpenAI-compatible server, and fail as scripted."""

from __future__ import annotations

import http.client
import json
import threading
import time

import openai
import pytest
from openai import OpenAI
from scripted_openai import Fault, ScriptedOpenAI

KEY = "sk-scripted-test-key"
MESSAGES = [{"role": "system", "content": "你是孙悟空"}, {"role": "user", "content": "你叫什么名字？"}]


@pytest.fixture
def server():
    with ScriptedOpenAI(reply=lambda req: f"俺老孙答：{req.last_user}") as s:
        yield s


def _client(server: ScriptedOpenAI, **kw) -> OpenAI:
    kw.setdefault("max_retries", 0)
    kw.setdefault("timeout", 5)
    return OpenAI(base_url=server.base_url, api_key=KEY, **kw)


def _raw(server: ScriptedOpenAI, body: dict) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("POST", "/v1/chat/completions", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def test_non_streaming_reply_and_recorded_request(server):
    out = _client(server).chat.completions.create(model="wukong", messages=MESSAGES, temperature=0.3)
    assert out.choices[0].message.content == "俺老孙答：你叫什么名字？"
    assert out.model == "wukong"
    [req] = server.chat_requests()
    assert req.json["model"] == "wukong"
    assert req.json["temperature"] == 0.3
    assert req.messages == MESSAGES
    assert req.api_key == KEY


@pytest.mark.parametrize("send_done", [True, False])
def test_streaming_with_and_without_done(send_done):
    with ScriptedOpenAI(reply="齐天大圣孙悟空在此", chunk_chars=3, send_done=send_done) as s:
        stream = _client(s).chat.completions.create(model="m", messages=MESSAGES, stream=True)
        deltas = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
        assert "".join(deltas) == "齐天大圣孙悟空在此"
        assert len(deltas) == 3
        status, headers, body = _raw(s, {"model": "m", "messages": MESSAGES, "stream": True})
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert body.rstrip().endswith(b"data: [DONE]") is send_done


def test_models_endpoint():
    with ScriptedOpenAI(models=["wukong", "bajie"]) as s:
        assert [m.id for m in _client(s).models.list()] == ["wukong", "bajie"]


def test_rate_limit_sends_retry_after_and_sdk_retries(server):
    server.queue_faults(Fault.rate_limit(retry_after=0.05))
    status, headers, body = _raw(server, {"model": "m", "messages": MESSAGES})
    assert status == 429 and headers["retry-after"] == "0.05"
    assert json.loads(body)["error"]["type"] == "rate_limit_exceeded"
    server.queue_faults(Fault.rate_limit(retry_after=0.05))
    out = _client(server, max_retries=1).chat.completions.create(model="m", messages=MESSAGES)
    assert out.choices[0].message.content.startswith("俺老孙答")
    assert len(server.chat_requests()) == 3


def test_server_error(server):
    server.queue_faults(Fault.server_error(503))
    with pytest.raises(openai.InternalServerError) as e:
        _client(server).chat.completions.create(model="m", messages=MESSAGES)
    assert e.value.status_code == 503
    # the next request is fine: faults are per request
    assert _client(server).chat.completions.create(model="m", messages=MESSAGES).choices[0].message.content


def test_stall_before_headers_times_out_the_client(server):
    server.queue_faults(Fault.stall(10))
    with pytest.raises(openai.APITimeoutError):
        _client(server, timeout=0.3).chat.completions.create(model="m", messages=MESSAGES)


def test_stall_mid_stream_times_out_after_first_text(server):
    server.queue_faults(Fault.stall(10, where="mid_stream"))
    got = []
    with pytest.raises(openai.APITimeoutError):
        for chunk in _client(server, timeout=0.3).chat.completions.create(model="m", messages=MESSAGES, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
    assert got == ["俺老孙答"]  # the first piece arrived, then nothing


def test_dropped_connection(server):
    server.queue_faults(Fault.drop())
    with pytest.raises(openai.APIConnectionError):
        _client(server).chat.completions.create(model="m", messages=MESSAGES)


def test_malformed_json_body(server):
    server.queue_faults(Fault.malformed())
    status, _, body = _raw(server, {"model": "m", "messages": MESSAGES})
    assert status == 200
    with pytest.raises(ValueError):
        json.loads(body)
    server.queue_faults(Fault.malformed())
    with pytest.raises(json.JSONDecodeError):  # the SDK cannot parse it: clients must count it as a failure
        _client(server).chat.completions.create(model="m", messages=MESSAGES)


def test_dropped_and_malformed_mid_stream(server):
    server.queue_faults(Fault.drop(where="mid_stream"))
    with pytest.raises(openai.APIConnectionError):
        list(_client(server).chat.completions.create(model="m", messages=MESSAGES, stream=True))
    server.queue_faults(Fault.malformed())
    with pytest.raises(json.JSONDecodeError):
        list(_client(server).chat.completions.create(model="m", messages=MESSAGES, stream=True))


def test_script_function_and_transient_rate():
    with ScriptedOpenAI(script=lambda req: Fault.server_error() if "坏" in req.last_user else None) as s:
        c = _client(s)
        with pytest.raises(openai.InternalServerError):
            c.chat.completions.create(model="m", messages=[{"role": "user", "content": "坏问题"}])
        assert c.chat.completions.create(model="m", messages=[{"role": "user", "content": "好问题"}])
    with ScriptedOpenAI(transient_rate=0.5, seed=1) as s:
        c = _client(s)
        failures = 0
        for _ in range(40):
            try:
                c.chat.completions.create(model="m", messages=MESSAGES)
            except openai.APIError:
                failures += 1
        assert 8 <= failures <= 32
        assert failures == sum(1 for r in s.chat_requests() if r.fault is not None)


def test_many_concurrent_connections_are_served_together():
    def reply(request) -> str:
        # every answer waits until all 40 requests are being handled at once (or 20 s pass): a server that
        # handled them one by one, or a few at a time, would never get there
        deadline = time.monotonic() + 20
        while s.max_in_flight < 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        return f"scripted reply to: {request.last_user}"

    with ScriptedOpenAI(reply=reply) as s:
        c = _client(s)
        results: list[str] = []

        def ask(i: int) -> None:
            r = c.chat.completions.create(model="m", messages=[{"role": "user", "content": f"q{i}"}])
            results.append(r.choices[0].message.content)

        threads = [threading.Thread(target=ask, args=(i,)) for i in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    assert sorted(results) == sorted(f"scripted reply to: q{i}" for i in range(40))
    assert s.max_in_flight == 40


def test_hostile_scripts_echo_headers_refuse_fields_and_send_surrogates():
    with ScriptedOpenAI(reply="悟空\ud800", refuse_fields=["top_k"]) as s:
        s.queue_faults(Fault.echo_headers(401))
        with pytest.raises(openai.AuthenticationError) as err:
            _client(s).chat.completions.create(model="m", messages=MESSAGES)
        assert f"authorization: Bearer {KEY}" in str(err.value.body)  # the key comes back, as from some proxies
        status, _, body = _raw(s, {"model": "m", "messages": MESSAGES, "top_k": 5})
        assert status == 422 and b"top_k" in body
        status, _, body = _raw(s, {"model": "m", "messages": MESSAGES})
    assert status == 200 and b"\\ud800" in body  # a lone surrogate goes out as an escape
    assert json.loads(body)["choices"][0]["message"]["content"] == "悟空\ud800"

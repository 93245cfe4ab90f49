"""The shared request engine against the scripted fault server: retries, timeouts, limits, the key."""

from __future__ import annotations

import asyncio
import time

import pytest
from scripted_openai import Fault, ScriptedOpenAI

from pipeline.llm import Engine, EngineConfig, FatalAPIError, Request, load_api_key, run_requests

MSG = [{"role": "user", "content": "你叫什么名字？"}]


def _config(server: ScriptedOpenAI, **kw) -> EngineConfig:
    kw.setdefault("timeout", 2.0)
    kw.setdefault("backoff", 0.01)
    return EngineConfig(base_url=server.base_url, model="m", api_key="sk-engine-test", progress=False, **kw)


def _run(server, n=1, **kw):
    got: dict[str, str] = {}
    reqs = [Request(id=f"r{i}", messages=[{"role": "user", "content": f"问题{i}"}]) for i in range(n)]
    stats = run_requests(_config(server, **kw), reqs, lambda r, t: got.__setitem__(r.id, t))
    return got, stats


@pytest.mark.parametrize("stream", [False, True])
def test_every_transient_fault_is_retried_and_counted(stream):
    with ScriptedOpenAI(reply=lambda r: "答：" + r.last_user) as s:
        s.queue_faults(
            Fault.rate_limit(retry_after=0.01),
            Fault.server_error(500),
            Fault.server_error(503),
            Fault.drop(),
            Fault.stall(5),
            Fault.malformed(),
            *([Fault.stall(5, where="mid_stream"), Fault.drop(where="mid_stream")] if stream else []),
        )
        got, stats = _run(s, timeout=0.4, stream=stream)
        assert got == {"r0": "答：问题0"}
        expected = {"http_429": 1, "http_500": 1, "http_503": 1, "connection": 1, "timeout": 1, "bad_answer": 1}
        if stream:
            expected["timeout"] += 1
            expected["connection"] += 1
        assert dict(stats.retries_by_reason) == expected
        assert stats.retries == len(s.chat_requests()) - 1
        assert stats.succeeded == 1 and stats.failed == 0


class FrozenClock:
    """A clock that never moves and a sleep that only records how long it was asked to wait."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def time(self) -> float:
        return 1000.0

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


def _run_engine(server, n=1, **kw):
    clock = FrozenClock()
    engine = Engine(_config(server, **kw), clock=clock.time, sleep=clock.sleep)
    got: dict[str, str] = {}
    reqs = [Request(id=f"r{i}", messages=[{"role": "user", "content": f"问题{i}"}]) for i in range(n)]

    async def main():
        try:
            return await engine.run(reqs, lambda r, t: got.__setitem__(r.id, t))
        finally:
            await engine.aclose()

    return got, asyncio.run(main()), clock.waits


def test_retry_after_is_honoured():
    with ScriptedOpenAI() as s:
        s.queue_faults(Fault.rate_limit(retry_after=7), Fault.rate_limit(retry_after=None))
        got, stats, waits = _run_engine(s, backoff=0.001, backoff_max=0.01)
    assert got == {"r0": "scripted reply to: 问题0"} and stats.retries == 2
    first, second = waits
    assert 7 <= first <= 7.1  # waited as the server said (plus at most 10% of a second), not the 1 ms backoff
    assert second <= 0.011  # no Retry-After: the configured backoff


def test_gives_up_after_max_retries_and_carries_on():
    with ScriptedOpenAI(script=lambda r: Fault.server_error() if r.last_user == "问题1" else None) as s:
        got, stats = _run(s, n=3, max_retries=2)
        assert set(got) == {"r0", "r2"}
        assert stats.failed == 1 and stats.succeeded == 2 and stats.retries == 2
        assert stats.failures == [{"id": "r1", "reason": "http_500", "error": stats.failures[0]["error"]}]
        assert stats.status == "incomplete"


def test_permanent_errors_are_not_retried():
    with ScriptedOpenAI() as s:
        s.queue_faults(Fault.server_error(400))
        got, stats = _run(s, n=1)
        assert stats.failed == 1 and stats.retries == 0 and not got


def test_bad_key_stops_the_run_with_a_clear_message():
    with ScriptedOpenAI() as s:
        s.queue_faults(*[Fault.server_error(401)] * 50)
        with pytest.raises(FatalAPIError, match="refused the API key") as e:
            _run(s, n=20)
        assert "sk-engine-test" not in str(e.value)
        assert len(s.chat_requests()) < 20  # stopped early instead of failing each request


def test_concurrency_is_bounded_and_used():
    def reply(request) -> str:
        # the first answers wait until 8 requests are in flight at once (or 20 s pass): an engine that sent them
        # one by one would never get there; then everything flows, and no more than 8 may ever be in flight
        deadline = time.monotonic() + 20
        while s.max_in_flight < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        return "答：" + request.last_user

    with ScriptedOpenAI(reply=reply) as s:
        got, _ = _run(s, n=40, concurrency=8, timeout=30)
    assert len(got) == 40
    assert s.max_in_flight == 8


def test_requests_per_minute_limit():
    with ScriptedOpenAI() as s:
        got, _, waits = _run_engine(s, n=4, rpm=300, concurrency=4)  # one start every 0.2 s
    assert len(got) == 4
    # the clock stands still: the first request starts at once, each other waits its turn 0.2 s after the last
    assert sorted(waits) == pytest.approx([0.2, 0.4, 0.6])


def test_sends_model_sampling_and_key():
    with ScriptedOpenAI() as s:
        _run(s, temperature=0.3, max_tokens=64, top_p=0.9, seed=7)
        [req] = s.chat_requests()
        assert req.json["model"] == "m"
        assert req.json["temperature"] == 0.3
        assert req.json["max_tokens"] == 64 and req.json["top_p"] == 0.9 and req.json["seed"] == 7
        assert req.api_key == "sk-engine-test"
        assert req.messages == [{"role": "user", "content": "问题0"}]


def test_key_from_environment_then_dotenv(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert load_api_key() is None
    (tmp_path / ".env").write_text("OPENAI_API_KEY=sk-from-dotenv\n")
    assert load_api_key() == "sk-from-dotenv"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    assert load_api_key() == "sk-from-env"


def test_recorded_parameters_hold_no_secret():
    config = EngineConfig(base_url="https://user:sk-in-url@api.example.com:8443/v1?key=sk-q", model="m", api_key="sk-x")
    params = config.parameters()
    assert params["base_url"] == "https://api.example.com:8443/v1"
    assert "api_key" not in params and "sk-" not in repr(params)
    assert "sk-x" not in repr(config)


@pytest.mark.parametrize("stream", [False, True])
def test_replies_end_at_the_stop_strings_and_always_at_the_end_of_turn(stream):
    with ScriptedOpenAI(reply=lambda r: "答：好<|im_end|>八戒又偷懒") as s:
        with_stop, _ = _run(s, stream=stream, stop=("好",))
        without, _ = _run(s, stream=stream)
        first, second = s.chat_requests()
    assert first.json["stop"] == ["好"] and "stop" not in second.json
    assert with_stop == {"r0": "答："}  # the stop string, cut on our side whatever the server did
    assert without == {"r0": "答：好"}  # the chat format's end of turn: nothing after it reaches the data


def test_a_server_that_refuses_stop_is_asked_again_without_it():
    with ScriptedOpenAI(reply=lambda r: "答：好<|im_end|>后文", refuse_fields=["stop"]) as s:
        got, stats = _run(s, n=3, concurrency=1, stop=("<|im_end|>",))
        sent = s.chat_requests()
    assert got == {"r0": "答：好", "r1": "答：好", "r2": "答：好"}
    assert stats.failed == 0
    assert "stop" in sent[0].json and all("stop" not in r.json for r in sent[1:])
    assert len(sent) == 4  # refused once, then never sent again


@pytest.mark.slow
@pytest.mark.parametrize("stream", [False, True])
def test_a_real_server_stops_at_the_end_of_turn_when_asked(tiny_server, tiny_model, stream):
    """`transformers serve` stops at EOS only: without `stop` the tiny model's text after `<|im_end|>` follows."""
    got: dict[str, str] = {}
    for stop in ((), ("<|im_end|>",)):
        config = EngineConfig(
            base_url=tiny_server.base_url, model=tiny_server.model, max_tokens=64, stop=stop, stream=stream,
            temperature=0.0, progress=False,
        )  # fmt: skip
        run_requests(config, [Request(id=str(bool(stop)), messages=MSG)], lambda r, t: got.__setitem__(r.id, t))
    assert got == {"False": tiny_model.reply + tiny_model.after, "True": tiny_model.reply}


# --- what a person reads when a request fails (one attempt each) ------------------------------------------------
def test_an_unreadable_event_in_a_stream_says_what_the_server_sent():
    with ScriptedOpenAI() as s:
        s.queue_faults(Fault.malformed())
        got, stats = _run(s, stream=True, max_retries=0)
    assert got == {} and stats.failed == 1
    [failure] = stats.failures
    assert failure["reason"] == "bad_answer"
    assert "bad response from the server: a streamed event is not JSON: '{this is not json'" in failure["error"]


def test_a_stream_that_breaks_off_says_so_and_one_never_answered_says_the_server_is_unreachable():
    with ScriptedOpenAI() as s:
        s.queue_faults(Fault.drop(where="mid_stream"))
        _, stats = _run(s, stream=True, max_retries=0)
        port = s.port
    assert stats.failures[0]["reason"] == "connection"
    assert "the reply broke off" in stats.failures[0]["error"]
    # the server is gone now: nothing listens on its port
    config = EngineConfig(base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=0, progress=False)
    stats = run_requests(config, [Request(id="r0", messages=MSG)], lambda r, t: None)
    assert stats.failures[0]["reason"] == "connection"
    assert "cannot reach the server" in stats.failures[0]["error"]


def test_a_proxy_from_the_environment_is_used(monkeypatch):
    """HTTP_PROXY as for the SDK: the request for an unresolvable host reaches the scripted server standing in
    for the proxy, asked in the proxy's absolute form (it has no such route, so it answers 404: a stopped run)."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    with ScriptedOpenAI() as proxy:
        monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.port}")
        config = EngineConfig(base_url="http://api.example.invalid/v1", model="m", max_retries=0, progress=False)
        with pytest.raises(FatalAPIError, match="HTTP 404"):
            run_requests(config, [Request(id="r0", messages=MSG)], lambda r, t: None)
        [req] = proxy.chat_requests()
    assert req.path == "http://api.example.invalid/v1/chat/completions"


def test_credentials_in_the_url_are_sent_as_basic_auth():
    """A reverse proxy's user:password in base_url authenticate the request (as the SDK does), and never show."""
    with ScriptedOpenAI() as s:
        url = s.base_url.replace("http://", "http://bajie:p4ss-w0rd@")
        got, stats = {}, None
        config = EngineConfig(base_url=url, model="m", api_key="sk-engine-test", max_retries=0, progress=False)
        stats = run_requests(config, [Request(id="r0", messages=MSG)], lambda r, t: got.__setitem__(r.id, t))
        [req] = s.chat_requests()
    assert got == {"r0": "scripted reply to: 你叫什么名字？"} and stats.failed == 0
    assert req.headers["authorization"] == "Basic YmFqaWU6cDRzcy13MHJk"  # bajie:p4ss-w0rd
    assert "p4ss" not in req.path


def test_the_account_headers_go_with_every_request(monkeypatch):
    """OPENAI_ORG_ID / OPENAI_PROJECT_ID, which the SDK sends for a hosted API, go with the engine's requests too."""
    monkeypatch.setenv("OPENAI_ORG_ID", "org-xiyou")
    monkeypatch.setenv("OPENAI_PROJECT_ID", "proj_bajie")
    with ScriptedOpenAI() as s:
        config = EngineConfig(base_url=s.base_url, model="m", api_key="sk-engine-test", max_retries=0, progress=False)
        stats = run_requests(config, [Request(id="r0", messages=MSG)], lambda r, t: None)
        [req] = s.chat_requests()
    assert stats.failed == 0
    assert req.headers["openai-organization"] == "org-xiyou" and req.headers["openai-project"] == "proj_bajie"

"""One client for chat against any OpenAI-compatible server (LMDeploy's api_server, vLLM, Ollama, `transformers
serve`, hosted APIs), through the OpenAI SDK. The characters' `OpenAIBackend` and the pipeline's request engine
(`pipeline.llm`) both use it; each keeps only its own policy (the backend: one reply at a time, the SDK's
retries before the first delta; the engine: concurrency, a rate limit, tenacity retries, manifest counts).

What lives here, once:
- the request body: standard fields only, plus LMDeploy's `top_k` / `repetition_penalty` when the endpoint
  says the server accepts them (plain OpenAI servers refuse them); at most `MAX_STOP_STRINGS` stop strings, and
  none again for a server that refused `stop` once (the request is repeated without it);
- chunk parsing: a reply ends at the chunk carrying a `finish_reason` or when the stream closes (`[DONE]` is
  optional); an error reported inside the stream is an error;
- every reply goes through a `ReplyGuard` (xiyou/backends/reply.py): unencodable text replaced, cut at the stop
  strings and always at the chat format's end-of-turn markers, its growth capped;
- `NO_KEY`, the key sent to a keyless server (it keeps the SDK from picking up OPENAI_API_KEY for another one);
- failures: `failure_reason` (a short name for counts), `is_transient` (a retry may help), `is_fatal` (every
  further request would fail the same way) and `ChatClient.explain` (what failed and what to do). Everything a
  person sees passes through `xiyou.redact`, and the key sent is registered there.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import httpx2
import openai
from openai.types.chat import ChatCompletionChunk

from xiyou.backends.reply import ReplyGuard, ReplyStream, whole_reply
from xiyou.backends.stops import MAX_STOP_STRINGS
from xiyou.redact import public_url, redact, register_secret

#: Sent as the key when none is configured: local servers (LMDeploy, vLLM, transformers serve) ignore it.
NO_KEY = "not-needed"
_STOP_FIELD = re.compile(r"\bstop\b", re.IGNORECASE)


class BadAnswer(Exception):
    """The server answered but the answer is unusable (unreadable JSON, no choices, an error mid-stream)."""


class BrokenReply(Exception):
    """The stream broke off after it had started (the connection dropped, a chunk was unreadable)."""


# --- failures --------------------------------------------------------------------------------------------------
def failure_reason(exc: BaseException) -> str:
    """A short, key-free name for what went wrong: 'http_429', 'timeout', 'connection', 'bad_answer', …"""
    if isinstance(exc, BrokenReply) and exc.__cause__ is not None:
        exc = exc.__cause__
    if isinstance(exc, openai.APIStatusError):
        return f"http_{exc.status_code}"
    if isinstance(exc, (openai.APITimeoutError, asyncio.TimeoutError, TimeoutError, httpx2.TimeoutException)):
        return "timeout"
    if isinstance(exc, (openai.APIConnectionError, httpx2.TransportError)):
        return "connection"
    if isinstance(exc, (BadAnswer, BrokenReply, json.JSONDecodeError, openai.APIResponseValidationError)):
        return "bad_answer"
    return type(exc).__name__


def is_transient(exc: BaseException) -> bool:
    """Whether the same request may succeed if tried again (rate limits, 5xx, timeouts, drops, bad answers)."""
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 425, 429) or exc.status_code >= 500
    return isinstance(
        exc,
        (
            openai.APITimeoutError,
            openai.APIConnectionError,
            asyncio.TimeoutError,
            TimeoutError,
            httpx2.TransportError,
            BadAnswer,
            BrokenReply,
            json.JSONDecodeError,
            openai.APIResponseValidationError,
        ),
    )


def is_fatal(exc: BaseException) -> bool:
    """Whether every further request to this server would fail the same way (bad key, no access, no model)."""
    return isinstance(exc, openai.APIStatusError) and exc.status_code in (401, 403, 404)


def body_text(exc: BaseException) -> str:
    """What the server said, short and redacted: the error body's message when there is one, else its text."""
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        body = inner.get("message", inner) if isinstance(inner, dict) else inner
        body = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    if not body:
        try:
            body = exc.response.text  # type: ignore[attr-defined]
        except Exception:
            body = ""
    text = " ".join(str(body or getattr(exc, "message", "") or "no details").split())
    return _short(redact(text), 300)


def _cause(exc: BaseException) -> str:
    text = str(getattr(exc, "message", "") or exc or type(exc).__name__)
    cause = exc.__cause__ or exc.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {cause}"
    return _short(redact(text), 300)


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- chunks and answers ----------------------------------------------------------------------------------------
def chunk_delta(chunk: Any) -> tuple[str, bool]:
    """(the text of one streamed chunk, whether it ends the reply). An error inside the stream is BadAnswer."""
    error = getattr(chunk, "error", None)
    if error:
        raise BadAnswer(f"the server reported an error mid-reply: {error}")
    choices = getattr(chunk, "choices", None)
    if not choices:
        return "", False
    choice = choices[0]
    delta = getattr(choice.delta, "content", None) if choice.delta is not None else None
    return (delta if isinstance(delta, str) else ""), bool(choice.finish_reason)


def answer_text(data: Any) -> str:
    """The assistant's text of a chat.completion JSON object; BadAnswer when it has none."""
    try:
        message = data["choices"][0]["message"]
    except (KeyError, IndexError, TypeError):
        said = _short(json.dumps(data, ensure_ascii=False), 300)
        raise BadAnswer(f"the answer has no choices[0].message; the server said: {said}") from None
    content = message.get("content") if isinstance(message, dict) else None
    if content is not None and not isinstance(content, str):
        raise BadAnswer(f"the answer's content is not text: {type(content).__name__}")
    return content or ""


def _not_streamed(response: httpx2.Response, body: bytes) -> BadAnswer:
    kind = response.headers.get("content-type", "") or "no content type"
    text = body.decode("utf-8", "replace").strip() or "an empty body"
    return BadAnswer(f"HTTP {response.status_code} with {kind} instead of a stream of the reply: {_short(text, 300)}")


def _expect_event_stream(response: httpx2.Response) -> None:
    """A stream answered with plain JSON (LMDeploy's proxy says `{"error_code": …}` with 200 when the server it
    routed to has died) holds no reply: BadAnswer with what the server said, never an empty reply."""
    if "text/event-stream" not in response.headers.get("content-type", ""):
        raise _not_streamed(response, response.read())


async def _aexpect_event_stream(response: httpx2.Response) -> None:
    if "text/event-stream" not in response.headers.get("content-type", ""):
        raise _not_streamed(response, await response.aread())


def _refuses_stop(exc: BaseException) -> bool:
    return (
        isinstance(exc, openai.APIStatusError)
        and exc.status_code in (400, 422)
        and bool(_STOP_FIELD.search(body_text(exc)))
    )


# --- the client ------------------------------------------------------------------------------------------------
class ChatClient:
    """Chat with `model` at `base_url` (…/v1). Thread-safe for the sync calls; the async calls belong to one
    event loop (the engine's). `label` is what messages call it: "openai: MODEL @ URL", redacted."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        key_env: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 0,
        send_top_k: bool = False,
        send_repetition_penalty: bool = False,
        top_k: int | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.key_env = key_env
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.send_top_k = send_top_k
        self.send_repetition_penalty = send_repetition_penalty
        self.top_k = top_k
        self.sends_stop = True  # turned off for good once the server refuses `stop`
        self.label = redact(f"openai: {model} @ {public_url(self.base_url)}")
        self._api_key = api_key or NO_KEY
        register_secret(api_key)
        self._sync: openai.OpenAI | None = None
        self._async: openai.AsyncOpenAI | None = None
        self._lock = threading.Lock()

    # --- requests -------------------------------------------------------------------------------------------
    def body(
        self,
        messages: Sequence[dict[str, str]],
        *,
        max_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        stop: Sequence[str] = (),
        seed: int | None = None,
        top_k: int | None = None,
        repetition_penalty: float | None = None,
        stream: bool = True,
    ) -> dict[str, Any]:
        """The JSON body of a chat-completions request."""
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
        }
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        if temperature is not None:
            body["temperature"] = temperature
        if top_p is not None:
            body["top_p"] = top_p
        stops = [s for s in stop if s][:MAX_STOP_STRINGS]
        if stops and self.sends_stop:
            body["stop"] = stops
        if seed is not None:
            body["seed"] = seed
        top_k = top_k if top_k is not None else self.top_k
        if self.send_top_k and top_k is not None:
            body["top_k"] = top_k
        if self.send_repetition_penalty and repetition_penalty is not None:
            body["repetition_penalty"] = repetition_penalty
        if stream:
            body["stream"] = True
        return body

    def _without_stop(self, exc: BaseException, body: dict[str, Any]) -> dict[str, Any] | None:
        """The body again without `stop` when the server refused that field (remembered); else None."""
        if "stop" not in body or not _refuses_stop(exc):
            return None
        self.sends_stop = False
        return {k: v for k, v in body.items() if k != "stop"}

    # --- sync: one streamed reply ----------------------------------------------------------------------------
    def sync_client(self) -> openai.OpenAI:
        with self._lock:
            if self._sync is None:
                self._sync = openai.OpenAI(
                    base_url=self.base_url,
                    api_key=self._api_key,
                    timeout=openai.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
                    max_retries=self.max_retries,
                )
            return self._sync

    def stream(
        self,
        body: dict[str, Any],
        *,
        stops: Sequence[str] = (),
        max_new_tokens: int | None = None,
        cancel: threading.Event | None = None,
        explain_as: type[Exception] | None = None,
    ) -> ReplyStream:
        """The reply's text deltas as the server sends them, guarded (stops, end of turn, length cap).

        Raises the SDK's errors, BadAnswer or BrokenReply; with `explain_as`, that exception type instead, its
        message `explain(exc)`."""
        guard = ReplyGuard(stops, max_new_tokens)
        deltas = self._deltas(dict(body, stream=True))
        if explain_as is not None:
            deltas = self._explained(deltas, explain_as)
        return ReplyStream(deltas, guard, cancel)

    def _explained(self, deltas: Iterator[str], explain_as: type[Exception]) -> Iterator[str]:
        try:
            yield from deltas
        except explain_as:
            raise
        except Exception as e:  # the SDK's errors, a malformed chunk, a connection dropped mid-reply
            raise explain_as(self.explain(e)) from e

    def _deltas(self, body: dict[str, Any]) -> Iterator[str]:
        client = self.sync_client()
        try:
            response = client.post(
                "/chat/completions",
                body=body,
                cast_to=ChatCompletionChunk,
                stream=True,
                stream_cls=openai.Stream[ChatCompletionChunk],
            )
        except openai.APIStatusError as e:
            retry = self._without_stop(e, body)
            if retry is None:
                raise
            yield from self._deltas(retry)
            return
        started = False
        try:
            _expect_event_stream(response.response)
            for chunk in response:
                text, finished = chunk_delta(chunk)
                if text:
                    started = True
                    yield text
                if finished:  # the reply is complete: do not wait for [DONE]
                    break
        except (openai.APITimeoutError, httpx2.TimeoutException, BadAnswer):
            raise
        except (openai.APIError, httpx2.TransportError, ValueError) as e:
            if not started:
                raise
            raise BrokenReply(_cause(e)) from e
        finally:
            response.close()

    # --- async: the engine's requests -----------------------------------------------------------------------
    def async_client(self) -> openai.AsyncOpenAI:
        if self._async is None:
            self._async = openai.AsyncOpenAI(
                base_url=self.base_url, api_key=self._api_key, timeout=self.timeout, max_retries=self.max_retries
            )
        return self._async

    async def complete(
        self, body: dict[str, Any], *, stops: Sequence[str] = (), max_new_tokens: int | None = None
    ) -> str:
        """The whole reply text (streamed or not, as `body["stream"]` says), guarded like a stream."""
        try:
            if body.get("stream"):
                guard = ReplyGuard(stops, max_new_tokens)
                parts = [guard.push(text) async for text in self._adeltas(body, guard)]
                parts.append(guard.flush())
                return "".join(parts)
            # The SDK's generic POST, answer read as plain JSON: `create()` would first walk the (already plain
            # JSON) body through its type-driven transform and then build typed models of the answer, ~1 ms of
            # CPU per request together, which limits throughput at high concurrency on a small machine. Errors
            # (status codes, timeouts, connections) are the SDK's as usual.
            response = await self.async_client().post("/chat/completions", body=body, cast_to=httpx2.Response)
            return whole_reply(answer_text(json.loads(response.content)), stops, max_new_tokens)
        except openai.APIStatusError as e:
            retry = self._without_stop(e, body)
            if retry is None:
                raise
            return await self.complete(retry, stops=stops, max_new_tokens=max_new_tokens)

    async def _adeltas(self, body: dict[str, Any], guard: ReplyGuard) -> AsyncIterator[str]:
        stream = await self.async_client().post(
            "/chat/completions",
            body=body,
            cast_to=ChatCompletionChunk,
            stream=True,
            stream_cls=openai.AsyncStream[ChatCompletionChunk],
        )
        async with stream:  # closes the connection on a timeout, a cancel or an early stop
            await _aexpect_event_stream(stream.response)
            async for chunk in stream:
                text, finished = chunk_delta(chunk)
                if text:
                    yield text
                if finished or guard.stopped:
                    break

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()

    async def aclose(self) -> None:
        if self._async is not None:
            await self._async.close()

    # --- what to tell a person ------------------------------------------------------------------------------
    def explain(self, exc: BaseException) -> str:
        """What failed and what to do about it, in one redacted line."""
        where = self.label
        if isinstance(exc, (openai.APITimeoutError, asyncio.TimeoutError, TimeoutError, httpx2.TimeoutException)):
            text = (
                f"{where}: no answer within {self.timeout:g} s (the server is stalled or overloaded); "
                "try again, or raise the endpoint's timeout"
            )
        elif isinstance(exc, openai.APIConnectionError):
            text = (
                f"{where}: cannot reach the server ({_cause(exc)}); is it running? "
                'Start it (see "Serving with LMDeploy" in the README) or fix base_url'
            )
        elif isinstance(exc, openai.APIStatusError):
            text = f"{where}: HTTP {exc.status_code}: {body_text(exc)}; {self._hint(exc.status_code)}"
        elif isinstance(exc, BrokenReply):
            text = f"{where}: the reply broke off ({exc}); try again"
        elif isinstance(exc, (BadAnswer, openai.APIError, json.JSONDecodeError)):
            text = f"{where}: bad response from the server: {_cause(exc)}"
        else:
            text = f"{where}: the reply broke off ({type(exc).__name__}: {_short(str(exc), 200)}); try again"
        return redact(text)

    def _hint(self, status: int) -> str:
        key = self.key_env or "the key variable (api_key_env)"
        hints = {
            401: f"the server refused the API key; check {key} (in the environment or .env; it is never printed)",
            403: f"the server refused access for this key; check {key}",
            404: f"the server has no model {self.model!r} (check `model` against the server's /v1/models, and that "
            "base_url ends in /v1)",
            422: "the server refused a field; if it is top_k or repetition_penalty, turn send_top_k / "
            "send_repetition_penalty off for this endpoint",
            429: "the server is rate-limiting; wait and try again",
        }
        return hints.get(status, "the server failed; check its log" if status >= 500 else "the request was refused")

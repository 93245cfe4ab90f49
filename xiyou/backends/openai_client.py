"""One client for chat against any OpenAI-compatible server (LMDeploy's api_server, vLLM, Ollama, `transformers
serve`, hosted APIs). The characters' `OpenAIBackend` and the pipeline's request engine (`pipeline.llm`) both use
it; each keeps only its own policy (the backend: one reply at a time, the SDK's retries before the first delta;
the engine: concurrency, a rate limit, tenacity retries, manifest counts).

Two transports, one client: the backend's sync calls go through the OpenAI SDK; the engine's async calls go
through aiohttp, the HTTP client the SDK itself offers for concurrency (`openai[aiohttp]`), used directly with
a prebuilt session: the SDK's per-request machinery (options models, header merging, URL building, httpx) costs
~1.5 ms of CPU per request, which at 32 requests in flight on a small machine queues whole waves behind each
other; aiohttp's costs ~0.4 ms. The engine's failures are still the SDK's exception types (status errors built
by the SDK from the answer, `APIConnectionError`, `APITimeoutError`), so everything below treats both alike.

What lives here, once:
- the request body: standard fields only, plus LMDeploy's `top_k` / `repetition_penalty` when the endpoint
  says the server accepts them (plain OpenAI servers refuse them); at most `MAX_STOP_STRINGS` stop strings, and
  none again for a server that refused `stop` once (the request is repeated without it);
- chunk parsing (chunks as plain JSON objects, no per-chunk models): a reply ends at the chunk carrying a
  `finish_reason` or when the stream closes (`[DONE]` is optional); an error reported inside the stream, or a
  chunk that is not a JSON object, is an error;
- every reply goes through a `ReplyGuard` (xiyou/backends/reply.py): unencodable text replaced, cut at the stop
  strings and always at the chat format's end-of-turn markers, its growth capped;
- `NO_KEY`, the key sent to a keyless server (it keeps the SDK from picking up OPENAI_API_KEY for another one);
- failures: `failure_reason` (a short name for counts), `is_transient` (a retry may help), `is_fatal` (every
  further request would fail the same way) and `ChatClient.explain` (what failed and what to do). Everything a
  person sees passes through `xiyou.redact`, and the key sent is registered there.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import ssl
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

import aiohttp
import httpx2
import openai
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

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
    """(the text of one streamed chunk, a JSON object, whether it ends the reply). An error inside the stream, or
    a chunk that is not a chat.completion.chunk, is BadAnswer."""
    if not isinstance(chunk, dict):
        raise BadAnswer(f"a streamed chunk is not a JSON object: {_short(json.dumps(chunk, ensure_ascii=False), 300)}")
    error = chunk.get("error")
    if error:
        raise BadAnswer(f"the server reported an error mid-reply: {error}")
    choices = chunk.get("choices")
    if not choices:
        return "", False
    choice = choices[0] if isinstance(choices, list) else None
    if not isinstance(choice, dict):
        said = _short(json.dumps(chunk, ensure_ascii=False), 300)
        raise BadAnswer(f"a streamed chunk has no choices[0] object; the server said: {said}")
    delta = choice.get("delta")
    text = delta.get("content") if isinstance(delta, dict) else None
    return (text if isinstance(text, str) else ""), bool(choice.get("finish_reason"))


async def sse_data(lines: AsyncIterator[bytes]) -> AsyncIterator[Any]:
    """The JSON payloads of a server-sent event stream (its `data:` fields, one per event), until `[DONE]` or the
    end of the stream. An event that is not JSON, or one named `error`, is BadAnswer saying what the server sent."""
    data: list[bytes] = []
    event = b""
    async for raw in lines:
        line = raw.rstrip(b"\r\n")
        if line:
            name, _, value = line.partition(b":")
            value = value[1:] if value.startswith(b" ") else value
            if name == b"data":
                data.append(value)
            elif name == b"event":
                event = value
            continue  # a comment (": keep-alive"), `id:` and `retry:` carry nothing for a reply
        if data:
            payload = _sse_payload(event, data)
            if payload is _DONE:
                return
            yield payload
        data, event = [], b""
    if data:  # the server closed the stream without the blank line after its last event
        payload = _sse_payload(event, data)
        if payload is not _DONE:
            yield payload


_DONE = object()


def _sse_payload(event: bytes, data: list[bytes]) -> Any:
    text = b"\n".join(data).decode("utf-8", "replace")
    if text == "[DONE]":
        return _DONE
    try:
        payload = json.loads(text)
    except ValueError:
        raise BadAnswer(f"a streamed event is not JSON: {_short(text, 300)!r}") from None
    if event == b"error":
        raise BadAnswer(f"the server reported an error mid-reply: {_short(text, 300)}")
    return payload


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


def _not_streamed(status: int, content_type: str, body: bytes) -> BadAnswer:
    kind = content_type or "no content type"
    text = body.decode("utf-8", "replace").strip() or "an empty body"
    return BadAnswer(f"HTTP {status} with {kind} instead of a stream of the reply: {_short(text, 300)}")


def _expect_event_stream(response: httpx2.Response) -> None:
    """A stream answered with plain JSON (LMDeploy's proxy says `{"error_code": …}` with 200 when the server it
    routed to has died) holds no reply: BadAnswer with what the server said, never an empty reply."""
    content_type = response.headers.get("content-type", "")
    if "text/event-stream" not in content_type:
        raise _not_streamed(response.status_code, content_type, response.read())


async def _aexpect_event_stream(response: aiohttp.ClientResponse) -> None:
    content_type = response.headers.get("Content-Type", "")
    if "text/event-stream" not in content_type:
        raise _not_streamed(response.status, content_type, await response.read())


def _account_headers() -> dict[str, str]:
    """The OpenAI account headers the SDK sends when OPENAI_ORG_ID / OPENAI_PROJECT_ID are set (a hosted API bills
    and authorises by them): the engine's own transport sends them too."""
    names = {"OpenAI-Organization": "OPENAI_ORG_ID", "OpenAI-Project": "OPENAI_PROJECT_ID"}
    return {header: value for header, var in names.items() if (value := os.environ.get(var, "").strip())}


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """The SDK's TLS settings (its CA bundle, SSL_CERT_FILE honoured), loaded once per process: ~0.1 s each time."""
    return httpx2.create_ssl_context()


def json_body(body: dict[str, Any]) -> bytes:
    """A request body as the OpenAI SDK encodes it (compact UTF-8 JSON, no NaN)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _refuses_stop(exc: BaseException) -> bool:
    return (
        isinstance(exc, openai.APIStatusError)
        and exc.status_code in (400, 422)
        and bool(_STOP_FIELD.search(body_text(exc)))
    )


# --- the client ------------------------------------------------------------------------------------------------
class ChatClient:
    """Chat with `model` at `base_url` (…/v1). Thread-safe for the sync calls; the async calls belong to one
    event loop (the engine's) and make one attempt each (`max_retries` is the sync calls' SDK retries; the
    engine retries itself). `label` is what messages call it: "openai: MODEL @ URL", redacted."""

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
        self._session: aiohttp.ClientSession | None = None
        self._url = f"{self.base_url}/chat/completions"
        # the engine's: the same URL parsed once, without credentials; those (a reverse proxy's basic auth) are
        # sent instead of the key, as the SDK does
        url = URL(self._url)
        self._post_url = url.with_user(None)
        self._basic_auth = aiohttp.BasicAuth.from_url(url)
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
            response = client.post(  # chunks as plain JSON objects: no per-chunk models
                "/chat/completions", body=body, cast_to=object, stream=True, stream_cls=openai.Stream[object]
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
    def async_session(self) -> aiohttp.ClientSession:
        """The engine's HTTP session: key and content type set once, connections kept alive, no cookies; built in
        (and bound to) the running event loop on first use. A proxy from the environment (HTTPS_PROXY, NO_PROXY,
        …) and the CA certificates are looked up once here, as the SDK does per client: aiohttp's `trust_env`
        would look them up again in a thread for every request."""
        if self._session is None:
            try:
                proxy, proxy_auth = get_env_proxy_for_url(self._post_url)
            except LookupError:  # no proxy for this URL
                proxy, proxy_auth = None, None
            basic = self._basic_auth
            self._session = aiohttp.ClientSession(
                headers={
                    "Authorization": basic.encode() if basic else f"Bearer {self._api_key}",
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                    **_account_headers(),
                },
                connector=aiohttp.TCPConnector(limit=1000, ssl=_ssl_context()),  # the SDK's connection limit
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout, sock_read=self.timeout),
                proxy=proxy,
                proxy_auth=proxy_auth,
                cookie_jar=aiohttp.DummyCookieJar(),
                read_bufsize=1 << 20,  # an event stream's lines are read whole; a long one must fit
            )
        return self._session

    @contextlib.asynccontextmanager
    async def _apost(self, body: dict[str, Any]) -> AsyncIterator[aiohttp.ClientResponse]:
        """POST `body` to the chat endpoint; the answer when its status is 2xx/3xx, else the SDK's status error.
        aiohttp's failures, while sending or while the answer is read, become the SDK's connection and timeout
        errors (and the connection is dropped, not reused)."""
        try:
            session = self.async_session()
            async with session.post(self._post_url, data=json_body(body)) as response:
                if response.status >= 400:
                    raise self._status_error(response.status, response.raw_headers, await response.read())
                yield response
        except aiohttp.ServerTimeoutError as e:
            raise openai.APITimeoutError(request=httpx2.Request("POST", self._url)) from e
        except aiohttp.ClientError as e:
            message = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            raise openai.APIConnectionError(message=message, request=httpx2.Request("POST", self._url)) from e

    def _status_error(self, status: int, headers: Any, content: bytes) -> openai.APIStatusError:
        """The SDK's own error for an HTTP error answer (RateLimitError for 429, …, with the body and headers, so
        `Retry-After` and the server's message are read as from any SDK call)."""
        response = httpx2.Response(status, headers=headers, content=content, request=httpx2.Request("POST", self._url))
        return self.sync_client()._make_status_error_from_response(response)

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
            async with self._apost(body) as response:
                content = await response.read()
            return whole_reply(answer_text(json.loads(content)), stops, max_new_tokens)
        except openai.APIStatusError as e:
            retry = self._without_stop(e, body)
            if retry is None:
                raise
            return await self.complete(retry, stops=stops, max_new_tokens=max_new_tokens)

    async def _adeltas(self, body: dict[str, Any], guard: ReplyGuard) -> AsyncIterator[str]:
        started = False
        try:
            async with self._apost(body) as response:  # closes the connection on a timeout, a cancel, a stop
                await _aexpect_event_stream(response)
                async for chunk in sse_data(response.content):
                    text, finished = chunk_delta(chunk)
                    if text:
                        started = True
                        yield text
                    if finished or guard.stopped:
                        break
        except openai.APIConnectionError as e:  # the connection dropped (a timeout is a timeout, started or not)
            if not started or isinstance(e, openai.APITimeoutError):
                raise
            raise BrokenReply(_cause(e)) from e

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        self.close()

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
                'Start it (see docs/serving.md) or fix base_url'
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

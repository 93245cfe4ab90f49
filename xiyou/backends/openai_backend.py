"""A character on an OpenAI-compatible server: LMDeploy's `api_server` (one LoRA adapter per character) or any
compatible API, through the OpenAI SDK (its retries and timeouts).

Sends only standard fields (model, messages, max_tokens, temperature, top_p, stop, seed, stream), plus LMDeploy's
`top_k` / `repetition_penalty` when configured (plain OpenAI servers refuse them). Streams; ends the reply at
the chunk that carries a `finish_reason` or when the server closes the stream, so a missing `[DONE]` changes
nothing. `timeout` bounds the connection and each wait between chunks: a stalled server is an error, not a hang.
Errors are BackendErrors saying what failed and what to do; the API key never appears in them.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

from xiyou.backends.base import BackendError, GenerationSettings, Message, validate_messages
from xiyou.backends.stops import StopFilter

#: Sent as the key when none is configured: local servers (LMDeploy, vLLM, transformers serve) ignore it, and it
#: keeps the SDK from picking up OPENAI_API_KEY (the data-generation key) for some other server.
NO_KEY = "not-needed"


class OpenAIBackend:
    """Streams a character's replies from `base_url` (…/v1), asking for `model`."""

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        api_key_env: str | None = None,
        timeout: float = 60.0,
        send_top_k: bool = False,
        send_repetition_penalty: bool = False,
        max_retries: int = 2,
        top_k: int | None = None,
    ) -> None:
        import openai

        if api_key is None and api_key_env:
            api_key = os.environ.get(api_key_env, "").strip() or None
            if api_key is None:
                raise BackendError(
                    f"the API key for {base_url} is expected in the environment variable {api_key_env}, which is "
                    f"not set; export {api_key_env}=… (or put it in .env), or remove api_key_env for a keyless server"
                )
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = float(timeout)
        self.send_top_k = send_top_k
        self.send_repetition_penalty = send_repetition_penalty
        self.top_k = top_k
        self.label = f"openai: {model} @ {self.base_url}"
        self._client = openai.OpenAI(
            base_url=self.base_url,
            api_key=api_key or NO_KEY,
            timeout=openai.Timeout(self.timeout, connect=min(self.timeout, 10.0)),
            max_retries=max_retries,
        )

    def request_fields(self, messages: Sequence[Message], settings: GenerationSettings) -> dict[str, Any]:
        """The body of the chat-completions request (without `stream`)."""
        fields: dict[str, Any] = {
            "model": self.model,
            "messages": [{"role": m["role"], "content": m["content"]} for m in messages],
            "max_tokens": settings.max_new_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
        }
        if settings.stop:
            fields["stop"] = list(settings.stop)[:4]  # the API allows four; all are applied on our side too
        if settings.seed is not None:
            fields["seed"] = settings.seed
        extra: dict[str, Any] = {}
        top_k = settings.top_k if settings.top_k is not None else self.top_k
        if self.send_top_k and top_k is not None:
            extra["top_k"] = top_k
        if self.send_repetition_penalty:
            extra["repetition_penalty"] = settings.repetition_penalty
        if extra:
            fields["extra_body"] = extra
        return fields

    def stream(
        self,
        messages: Sequence[Message],
        settings: GenerationSettings,
        cancel: threading.Event | None = None,
    ) -> Iterator[str]:
        """Yield the reply's text deltas as the server sends them."""
        validate_messages(messages)
        return self._stream(self.request_fields(messages, settings), settings, cancel or threading.Event())

    def _stream(self, fields: dict[str, Any], settings: GenerationSettings, cancel: threading.Event) -> Iterator[str]:
        import openai

        response = None
        try:
            response = self._client.chat.completions.create(stream=True, **fields)
            stops = StopFilter(settings.stop)
            for chunk in response:
                if cancel.is_set():
                    return
                if getattr(chunk, "error", None):  # some servers report failures inside the stream
                    raise BackendError(f"{self.label}: the server reported an error mid-reply: {chunk.error}")
                if not chunk.choices:
                    continue
                choice = chunk.choices[0]
                delta = getattr(choice.delta, "content", None) if choice.delta is not None else None
                if delta:
                    out = stops.push(delta)
                    if out:
                        yield out
                    if stops.stopped:
                        return
                if choice.finish_reason:  # the reply is complete: do not wait for [DONE]
                    break
            tail = stops.flush()
            if tail:
                yield tail
        except openai.APITimeoutError as e:
            raise BackendError(
                f"{self.label}: no answer within {self.timeout:g} s (the server is stalled or overloaded); "
                "try again, or raise the endpoint's timeout"
            ) from e
        except openai.APIConnectionError as e:
            raise BackendError(
                f"{self.label}: cannot reach the server ({_cause(e)}); is it running? "
                f'Start it (see "Serving with LMDeploy" in the README) or fix base_url'
            ) from e
        except openai.APIStatusError as e:
            raise BackendError(self._status_message(e)) from e
        except openai.APIError as e:
            raise BackendError(f"{self.label}: bad response from the server: {_cause(e)}") from e
        except BackendError:
            raise
        except Exception as e:  # a malformed chunk, a connection dropped mid-reply: the reply is broken
            raise BackendError(
                f"{self.label}: the reply broke off ({type(e).__name__}: {str(e)[:200]}); try again"
            ) from e
        finally:
            if response is not None:
                response.close()

    def _status_message(self, e: Any) -> str:
        status = e.status_code
        detail = _body_text(e)
        hint = {
            401: f"the server refused the API key; check {self.api_key_env or 'the key variable (api_key_env)'}",
            403: "the server refused access for this key",
            404: f"the server has no model {self.model!r} (check `model` against the server's /v1/models)",
            422: "the server refused a field; if it is top_k or repetition_penalty, turn send_top_k / "
            "send_repetition_penalty off for this endpoint",
            429: "the server is rate-limiting; wait and try again",
        }.get(status, "the server failed; check its log" if status >= 500 else "the request was refused")
        return f"{self.label}: HTTP {status}: {detail}; {hint}"


def _body_text(e: Any) -> str:
    """What the server said, short: the error body's message when there is one, else the response text."""
    body = getattr(e, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        body = inner.get("message", inner) if isinstance(inner, dict) else inner
        body = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
    if not body:
        try:
            body = e.response.text
        except Exception:
            body = ""
    return " ".join(str(body or getattr(e, "message", "") or "no details").split())[:300]


def _cause(e: BaseException) -> str:
    text = str(getattr(e, "message", "") or e or type(e).__name__)
    cause = e.__cause__ or e.__context__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text}: {cause}"
    return text[:300]

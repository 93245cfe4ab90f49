"""A character on an OpenAI-compatible server: LMDeploy's `api_server` (one LoRA adapter per character) or any
compatible API, through the shared client (xiyou/backends/openai_client.py: the OpenAI SDK, its retries and
timeouts, before the first delta only).

Sends only standard fields (model, messages, max_tokens, temperature, top_p, stop, seed, stream), plus LMDeploy's
`top_k` / `repetition_penalty` when configured (plain OpenAI servers refuse them). Streams; ends the reply at
the chunk that carries a `finish_reason` or when the server closes the stream, so a missing `[DONE]` changes
nothing; cuts it at the stop strings and at the chat format's end-of-turn markers, and caps its length (the
returned `ReplyStream` says `.truncated` then). `timeout` bounds the connection and each wait between chunks:
a stalled server is an error, not a hang. Errors are BackendErrors saying what failed and what to do; they and
`label` are redacted (no key, no URL password).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence

from xiyou.backends.base import BackendError, GenerationSettings, Message, validate_messages
from xiyou.backends.openai_client import NO_KEY, ChatClient
from xiyou.backends.reply import ReplyStream
from xiyou.redact import public_url

__all__ = ["NO_KEY", "OpenAIBackend"]


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
        if api_key is None and api_key_env:
            api_key = os.environ.get(api_key_env, "").strip() or None
            if api_key is None:
                raise BackendError(
                    f"the API key for {public_url(base_url)} is expected in the environment variable {api_key_env}, "
                    f"which is not set; export {api_key_env}=… (or put it in .env), or remove api_key_env for a "
                    "keyless server"
                )
        self.client = ChatClient(
            base_url,
            model,
            api_key=api_key,
            key_env=api_key_env,
            timeout=timeout,
            max_retries=max_retries,
            send_top_k=send_top_k,
            send_repetition_penalty=send_repetition_penalty,
            top_k=top_k,
        )
        self.base_url = self.client.base_url
        self.model = model
        self.api_key_env = api_key_env
        self.timeout = self.client.timeout
        self.send_top_k = send_top_k
        self.send_repetition_penalty = send_repetition_penalty
        self.top_k = top_k
        self.label = self.client.label

    def stream(
        self,
        messages: Sequence[Message],
        settings: GenerationSettings,
        cancel: threading.Event | None = None,
    ) -> ReplyStream:
        """Yield the reply's text deltas as the server sends them (see the module doc)."""
        validate_messages(messages)
        body = self.client.body(
            messages,  # type: ignore[arg-type]
            max_tokens=settings.max_new_tokens,
            temperature=settings.temperature,
            top_p=settings.top_p,
            stop=settings.stop,
            seed=settings.seed,
            top_k=settings.top_k,
            repetition_penalty=settings.repetition_penalty,
        )
        return self.client.stream(
            body,
            stops=settings.stop,
            max_new_tokens=settings.max_new_tokens,
            cancel=cancel,
            explain_as=BackendError,
        )

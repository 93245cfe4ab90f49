"""Pick and build a character's backend: `make_backend(character, kind=None, endpoint=None)`.

- kind None: the endpoint's `backend` when an endpoint is given, else XIYOU_BACKEND (default "transformers").
- "transformers": local weights (the endpoint's `model_path`, else XIYOU_MODEL_<ID>, else ModelScope).
- "canon": the character's lines from the novel (XIYOU_NOVEL), offline.
- "openai": the endpoint; else the character's table (or `[default]`) in XIYOU_ENDPOINTS; else the persona-mode
  shortcut XIYOU_API_BASE_URL + XIYOU_API_MODEL; else OPENAI_BASE_URL (key OPENAI_API_KEY) with the character id
  as the model name.

The backend carries its endpoint's prompt mode as `prompt_mode` ("meta" or "persona"; xiyou.prompts.mode_of reads
it): whoever builds its messages builds them with `xiyou.prompts.build_messages(…, mode_of(backend))`.

Implementations are imported lazily: the canon backend does not pull in torch, the transformers one does.
"""

from __future__ import annotations

import os

from xiyou import env
from xiyou.backends.base import Backend, BackendError
from xiyou.character import Character
from xiyou.endpoints import EndpointConfig, EndpointError, configured_endpoints


def openai_endpoint(character: Character) -> EndpointConfig:
    """The OpenAI-compatible endpoint for `character`: XIYOU_ENDPOINTS, the persona shortcut, else OPENAI_BASE_URL."""
    path = env.endpoints_path()
    try:
        config = configured_endpoints(path).get(character.id)
    except EndpointError as e:
        raise BackendError(str(e)) from None
    if config is not None:
        return config
    base_url = os.environ.get("OPENAI_BASE_URL", "").strip()
    if base_url:
        return EndpointConfig(base_url=base_url, model=character.id, api_key_env="OPENAI_API_KEY")
    where = f"{path} has no [{character.id}] table, and " if path is not None else ""
    raise BackendError(
        f"{where}no OpenAI-compatible server is configured for {character.name}: set XIYOU_ENDPOINTS to an "
        f"endpoints file with a [{character.id}] table (base_url, model), or XIYOU_API_BASE_URL and "
        "XIYOU_API_MODEL (persona mode on any chat model), or OPENAI_BASE_URL; or use "
        "XIYOU_BACKEND=canon (offline) or XIYOU_BACKEND=transformers (local weights)"
    )


def make_backend(character: Character, kind: str | None = None, endpoint: EndpointConfig | None = None) -> Backend:
    """Build `character`'s backend (see the module doc). Raises BackendError with what to do when it cannot."""
    if kind is None:
        try:
            kind = endpoint.backend if endpoint is not None else env.backend_kind()
        except ValueError as e:  # a bad XIYOU_BACKEND
            raise BackendError(str(e)) from None
    if kind == "openai" and endpoint is None:
        endpoint = openai_endpoint(character)
    backend = _build(character, kind, endpoint)
    if kind != "canon" and endpoint is not None and endpoint.prompt != "meta":
        backend.prompt_mode = endpoint.prompt  # type: ignore[attr-defined]
    return backend


def _build(character: Character, kind: str, endpoint: EndpointConfig | None) -> Backend:
    if kind == "canon":
        from xiyou.backends.canon import CanonBackend
        from xiyou.canon import get_canon

        try:
            canon = get_canon()
        except ValueError as e:  # NovelError: no novel, or not the novel
            raise BackendError(f"the canon backend needs the novel: {e}") from e
        return CanonBackend(character, canon)
    if kind == "transformers":
        from xiyou.backends.transformers_backend import TransformersBackend

        path = endpoint.model_path if endpoint is not None else None
        return TransformersBackend(character, path)
    if kind == "openai":
        from xiyou.backends.openai_backend import OpenAIBackend

        config = endpoint if endpoint is not None else openai_endpoint(character)  # (make_backend resolved it)
        if config.backend != "openai" or not config.base_url:
            raise BackendError(f"{character.id}: the endpoint is a {config.backend!r} endpoint, not an openai one")
        return OpenAIBackend(
            config.base_url,
            config.model or character.id,
            api_key_env=config.api_key_env,
            timeout=config.timeout,
            send_top_k=config.send_top_k,
            send_repetition_penalty=config.send_repetition_penalty,
            max_retries=config.max_retries,
            top_k=config.top_k,
        )
    raise BackendError(f"unknown backend kind {kind!r}; use one of: {', '.join(env.BACKEND_KINDS)}")

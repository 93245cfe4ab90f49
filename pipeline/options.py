"""Command-line options shared by the steps that call an LLM (the run itself: pipeline/step.py).

Every such step takes the same engine options (`--base-url`, `--model`, `--concurrency`, `--rpm`, `--timeout`,
`--max-retries`, sampling settings).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from pipeline.llm import (
    DEFAULT_CONCURRENCY,
    KEY_ENV,
    NO_KEY,
    REDACTOR,
    EngineConfig,
    load_api_key,
)
from xiyou.backends.stops import END_OF_TURN, MAX_STOP_STRINGS
from xiyou.character import Character, CharacterError, get_character

log = logging.getLogger("pipeline")

#: Every data request asks the server to stop at the chat format's end of turn (InternLM2 / ChatML): a server that
#: stops only at EOS would otherwise put the model's text after `<|im_end|>` into the training data. (The client
#: cuts at every end-of-turn marker anyway; `stop` saves generating what is cut.)
CHAT_FORMAT_STOPS = END_OF_TURN[:MAX_STOP_STRINGS]


def add_engine_args(parser: argparse.ArgumentParser, *, temperature: float = 0.7, max_tokens: int = 1024) -> None:
    g = parser.add_argument_group("LLM API (any OpenAI-compatible server; the key comes from OPENAI_API_KEY or .env)")
    g.add_argument(
        "--base-url",
        default=os.environ.get("OPENAI_BASE_URL"),
        help="API base URL, e.g. https://api.openai.com/v1 or http://127.0.0.1:23333/v1 (default: $OPENAI_BASE_URL)",
    )
    g.add_argument("--model", required=False, help="model name as the server knows it")
    g.add_argument("--env-file", type=Path, default=None, help="a .env file to read OPENAI_API_KEY from")
    g.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="requests in flight (default 16)")
    g.add_argument("--rpm", type=float, default=None, help="at most this many requests per minute (default: no limit)")
    g.add_argument("--timeout", type=float, default=120.0, help="seconds allowed per request attempt (default 120)")
    g.add_argument("--max-retries", type=int, default=8, help="retries per request on transient errors (default 8)")
    g.add_argument("--backoff", type=float, default=1.0, help="first retry delay in seconds, doubling (default 1)")
    g.add_argument(
        "--temperature", type=float, default=temperature, help=f"sampling temperature (default {temperature})"
    )
    g.add_argument("--top-p", type=float, default=None, help="nucleus sampling (default: the server's)")
    g.add_argument(
        "--max-tokens", type=int, default=max_tokens, help=f"max new tokens per answer (default {max_tokens})"
    )
    g.add_argument("--seed", type=int, default=None, help="sampling seed sent to the server, where it supports one")
    g.add_argument("--stream", action="store_true", help="receive answers as streams (same result)")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.add_argument("-v", "--verbose", action="store_true", help="log retries and details")


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        if REDACTOR not in handler.filters:
            handler.addFilter(REDACTOR)
    # the HTTP client logs every request at INFO; keep it for --verbose only
    for name in ("httpx", "httpx2", "openai", "httpcore"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.WARNING)


def engine_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> EngineConfig:
    """The engine configuration from the parsed options; a missing or wrong option exits with a clear message."""
    if not args.base_url:
        parser.error("--base-url is required (or set OPENAI_BASE_URL), e.g. --base-url http://127.0.0.1:23333/v1")
    if not args.model:
        parser.error("--model is required: the model name as the server knows it")
    key = load_api_key(args.env_file)
    if key is None:
        log.info("%s is not set (environment or .env): sending no key, which local servers accept", KEY_ENV)
    try:
        return EngineConfig(
            base_url=args.base_url,
            model=args.model,
            api_key=key or NO_KEY,
            concurrency=args.concurrency,
            rpm=args.rpm,
            timeout=args.timeout,
            max_retries=args.max_retries,
            backoff=args.backoff,
            backoff_max=max(60.0, args.backoff),
            temperature=args.temperature,
            top_p=args.top_p,
            max_tokens=args.max_tokens,
            seed=args.seed,
            stop=CHAT_FORMAT_STOPS,
            stream=args.stream,
            progress=not args.no_progress,
        )
    except ValueError as e:
        parser.error(str(e))


def character_or_error(parser: argparse.ArgumentParser, character_id: str) -> Character:
    """The character of `--character`; an unknown id ends with the parser's error listing the valid ones."""
    try:
        return get_character(character_id)
    except CharacterError as e:
        parser.error(f"--character: {e}")

"""Command-line options shared by the steps that call an LLM, and the run wrapper that records each run.

Every such step takes the same engine options (`--base-url`, `--model`, `--concurrency`, `--rpm`, `--timeout`,
`--max-retries`, sampling settings), writes through a `JsonlStore`, and leaves a manifest next to its output.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pipeline.llm import (
    DEFAULT_CONCURRENCY,
    KEY_ENV,
    NO_KEY,
    REDACTOR,
    EngineConfig,
    FatalAPIError,
    Handler,
    Request,
    RunStats,
    load_api_key,
    now_iso,
    prompt_hashes,
    run_requests,
    write_manifest,
)

log = logging.getLogger("pipeline")


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
            stream=args.stream,
            progress=not args.no_progress,
        )
    except ValueError as e:
        parser.error(str(e))


def run_and_record(
    *,
    step: str,
    out: Path,
    config: EngineConfig,
    requests: Sequence[Request],
    handle: Handler,
    planned: int,
    already_done: int,
    prompts: dict[str, str],
    parameters: dict[str, Any],
    finish: Callable[[RunStats], dict[str, Any]] | None = None,
) -> int:
    """Run the requests, then write the manifest whatever happened; the exit code a step should return.

    0: every planned record is present. 1: some requests failed (rerun the same command to ask them again), or
    the answers gave no usable record (`finish` reported `records_total` 0; its `no_records_hint` says why).
    2: the API refused (key, model, URL). 130: interrupted by Ctrl-C (finished records are kept).
    """
    stats = RunStats(planned=planned, already_done=already_done)
    started = now_iso()
    code = 0
    report: dict[str, Any] = {}
    try:
        if requests:
            run_requests(config, requests, handle, desc=f"{step}", stats=stats)
        else:
            stats.started_at = started
        code = 1 if stats.failed else 0
    except KeyboardInterrupt:
        stats.interrupted = True
        code = 130
    except FatalAPIError as e:
        stats.fatal = str(e)
        code = 2
    finally:
        stats.finished_at = now_iso()
        stats.started_at = stats.started_at or started
        if finish is not None and code != 130:
            report = finish(stats)
        run = {
            "step": step,
            "model": config.model,
            "prompt_hashes": prompt_hashes(prompts),
            "parameters": {**config.parameters(), **parameters},
            "started_at": stats.started_at,
            "finished_at": stats.finished_at,
            "stats": stats.as_dict(),
        }
        if report:
            run["report"] = report
        if code == 0 and report.get("records_total") == 0:
            code = 1
            run["stats"]["status"] = "no_records"
        path = write_manifest(out, run)
    missing = planned - already_done - stats.succeeded
    if code == 130:
        print(
            f"interrupted: {already_done + stats.succeeded} of {planned} done and kept in {out}; "
            "run the same command again to continue",
            file=sys.stderr,
        )
    elif code == 2:
        print(f"error: {stats.fatal}", file=sys.stderr)
    elif run["stats"]["status"] == "no_records":
        print(
            f"{step}: no usable records in {out}: {report.get('no_records_hint', '')}; manifest {path}",
            file=sys.stderr,
        )
    elif code == 1:
        print(
            f"{stats.failed} requests failed after retries ({missing} records missing; see {path}); "
            "run the same command again to ask only those",
            file=sys.stderr,
        )
    elif "records_total" in report:  # records are made from the answers: count them, not the requests
        print(
            f"{step}: {report['records_total']} records in {out} from {planned} answers ({stats.succeeded} new, "
            f"{already_done} already there, {stats.retries} retries); manifest {path}",
            file=sys.stderr,
        )
    else:
        print(
            f"{step}: {planned} records in {out} ({stats.succeeded} new, {already_done} already there, "
            f"{stats.retries} retries); manifest {path}",
            file=sys.stderr,
        )
    return code

"""The shared request engine: many chat requests to any OpenAI-compatible API, fast, politely and safely.

- the shared OpenAI-compatible client (xiyou/backends/openai_client.py: its async transport, aiohttp with one
  kept-alive session, the request body, chunk parsing, end-of-turn and stop cuts, the length cap, failure
  classification as the SDK's errors, and messages) against `--base-url` / `--model`;
- the key from `OPENAI_API_KEY` or a `.env` file (python-dotenv), never logged or written out (log records,
  failure messages and manifests pass through `xiyou.redact` as a second line of defence);
- bounded concurrency (a fixed pool of workers, `--concurrency`, default 16) and an optional
  requests-per-minute limit (`--rpm`);
- retries with exponential backoff and jitter on 429, 5xx, timeouts, dropped connections and unreadable answers,
  honouring `Retry-After` (tenacity drives them, so every retry is counted; the client makes one attempt);
- a per-request timeout (a hard deadline on the whole request, stalls included);
- a tqdm progress bar with rate, ETA, failures and retries;
- a run manifest next to the output (model, prompt hashes, parameters, counts, failures, retries, start and end).

A step builds `Request`s with stable ids, filters out those already in its store, and hands the rest to
`run_requests` with a callback that writes each answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_exponential_jitter
from tqdm import tqdm

from xiyou.backends.openai_client import (
    NO_KEY,
    BadAnswer,
    ChatClient,
    failure_reason,
    is_fatal,
    is_transient,
)
from xiyou.io import write_text_atomic
from xiyou.redact import LOG_FILTER, public_url, redact
from xiyou.redact import register_secret as _register_secret

log = logging.getLogger("pipeline")

DEFAULT_CONCURRENCY = 16
KEY_ENV = "OPENAI_API_KEY"
#: Scrubs log records (the handlers `register_secret` / `pipeline.options.setup_logging` attach it to).
REDACTOR = LOG_FILTER


class FatalAPIError(RuntimeError):
    """Every further request would fail the same way (bad key, unknown model, wrong URL): the run stops."""


@dataclasses.dataclass(frozen=True)
class Request:
    """One chat request. `id` is stable for the same source item; `meta` travels to the callback untouched."""

    id: str
    messages: Sequence[dict[str, str]]
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class EngineConfig:
    base_url: str
    model: str
    api_key: str = dataclasses.field(default=NO_KEY, repr=False)
    concurrency: int = DEFAULT_CONCURRENCY
    rpm: float | None = None
    timeout: float = 120.0
    max_retries: int = 8
    backoff: float = 1.0  # first backoff in seconds; doubles each retry, plus jitter
    backoff_max: float = 60.0
    retry_after_max: float = 300.0  # a longer Retry-After is capped to this
    temperature: float = 0.7
    top_p: float | None = None
    max_tokens: int | None = 1024
    seed: int | None = None
    stop: tuple[str, ...] = ()  # sent where the server accepts it; cut client-side (and at end-of-turn) anyway
    stream: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"--concurrency must be at least 1, got {self.concurrency}")
        if self.rpm is not None and self.rpm <= 0:
            raise ValueError(f"--rpm must be positive, got {self.rpm}")
        if self.timeout <= 0:
            raise ValueError(f"--timeout must be positive, got {self.timeout}")
        if self.max_retries < 0:
            raise ValueError(f"--max-retries must be 0 or more, got {self.max_retries}")

    def parameters(self) -> dict[str, Any]:
        """What the manifest records about this configuration: everything but the key."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("api_key", "progress")}
        out["base_url"] = public_url(self.base_url)
        return out


@dataclasses.dataclass
class RunStats:
    planned: int = 0  # requests the step wanted in total
    already_done: int = 0  # found in the store, not requested again
    requested: int = 0  # handed to the engine this run
    succeeded: int = 0
    failed: int = 0
    retries: int = 0
    retries_by_reason: Counter[str] = dataclasses.field(default_factory=Counter)
    failures: list[dict[str, str]] = dataclasses.field(default_factory=list)
    interrupted: bool = False
    fatal: str | None = None
    started_at: str = ""
    finished_at: str = ""
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["retries_by_reason"] = dict(self.retries_by_reason)
        d["failures"] = self.failures[:200]
        d["failures_not_listed"] = max(0, len(self.failures) - 200)
        d["status"] = self.status
        return d

    @property
    def status(self) -> str:
        if self.fatal:
            return "stopped"
        if self.interrupted:
            return "interrupted"
        return "incomplete" if self.failed else "complete"


# --- the key ---------------------------------------------------------------------------------------------------
def load_api_key(env_file: str | os.PathLike[str] | None = None) -> str | None:
    """`OPENAI_API_KEY` from the environment, else from a `.env` file (the given one, or one found from the cwd)."""
    value = os.environ.get(KEY_ENV, "").strip()
    if value:
        return value
    from dotenv import dotenv_values, find_dotenv

    path = str(env_file) if env_file else find_dotenv(usecwd=True)
    if path and Path(path).is_file():
        value = (dotenv_values(path).get(KEY_ENV) or "").strip()
    return value or None


def register_secret(secret: str | None) -> None:
    """Make sure `secret` is scrubbed from log records, failure messages and manifests."""
    if secret and secret != NO_KEY:
        _register_secret(secret)
        for handler in logging.getLogger().handlers:
            if REDACTOR not in handler.filters:
                handler.addFilter(REDACTOR)


# --- retries ---------------------------------------------------------------------------------------------------
def retry_after_seconds(exc: BaseException | None) -> float | None:
    """The server's `Retry-After` (or `retry-after-ms`) in seconds, when it sent one."""
    response = getattr(exc, "response", None)
    if response is None:
        return None
    headers = response.headers
    for name, divisor in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / divisor)
        except ValueError:
            try:
                when = dt.datetime.strptime(value, "%a, %d %b %Y %H:%M:%S GMT").replace(tzinfo=dt.UTC)
                return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())
            except ValueError:
                return None
    return None


class _Wait:
    """Retry-After when the server sent one (plus a little jitter), else exponential backoff with jitter."""

    def __init__(self, config: EngineConfig) -> None:
        self.backoff = wait_exponential_jitter(initial=config.backoff, max=config.backoff_max, jitter=config.backoff)
        self.retry_after_max = config.retry_after_max

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        after = retry_after_seconds(exc)
        if after is not None:
            return min(after, self.retry_after_max) + random.uniform(0, min(after, 1.0) * 0.1)
        return self.backoff(state)


class _RateLimiter:
    """At most `rpm` request starts per minute, evenly spaced (retries count too)."""

    def __init__(
        self,
        rpm: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.interval = 60.0 / rpm if rpm else 0.0
        self.next_at = 0.0
        self.lock = asyncio.Lock()
        self.clock = clock
        self.sleep = sleep

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self.lock:
            now = self.clock()
            delay = self.next_at - now
            self.next_at = max(now, self.next_at) + self.interval
        if delay > 0:
            await self.sleep(delay)


# --- the engine ------------------------------------------------------------------------------------------------
Handler = Callable[[Request, str], Awaitable[None] | None]


class Engine:
    """Runs requests through the shared client. `clock` and `sleep` (the rate limit's and the retries' waits)
    default to the real ones; tests pass their own to check the waits without measuring time."""

    def __init__(
        self,
        config: EngineConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.config = config
        register_secret(config.api_key)
        self.client = ChatClient(
            config.base_url,
            config.model,
            api_key=config.api_key if config.api_key != NO_KEY else None,
            key_env=KEY_ENV,
            timeout=config.timeout,
            max_retries=0,  # tenacity retries, so every retry is seen and counted
        )
        self.sleep = sleep
        self.limiter = _RateLimiter(config.rpm, clock, sleep)
        self.stats = RunStats()

    def body(self, request: Request) -> dict[str, Any]:
        c = self.config
        return self.client.body(
            request.messages,
            max_tokens=c.max_tokens,
            temperature=c.temperature,
            top_p=c.top_p,
            stop=c.stop,
            seed=c.seed,
            stream=c.stream,
        )

    async def complete_once(self, request: Request) -> str:
        """One attempt: the reply text, or an exception (BadAnswer when the answer is unusable)."""
        await self.limiter.wait()
        async with asyncio.timeout(self.config.timeout):
            text = await self.client.complete(
                self.body(request), stops=self.config.stop, max_new_tokens=self.config.max_tokens
            )
        if not text.strip():
            raise BadAnswer("the answer is empty")
        return text

    def _count_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        reason = failure_reason(exc) if exc else "unknown"
        self.stats.retries += 1
        self.stats.retries_by_reason[reason] += 1
        log.debug("retrying a request after %s (attempt %d)", reason, state.attempt_number)

    async def complete(self, request: Request) -> str:
        """The reply text, after retries on transient failures."""
        retrying = AsyncRetrying(
            retry=retry_if_exception(is_transient),
            stop=stop_after_attempt(self.config.max_retries + 1),
            wait=_Wait(self.config),
            sleep=self.sleep,
            before_sleep=self._count_retry,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self.complete_once(request)
        raise AssertionError("unreachable")  # pragma: no cover

    async def run(self, requests: Sequence[Request], handle: Handler, desc: str = "requests") -> RunStats:
        stats = self.stats
        stats.requested += len(requests)
        if not requests:
            return stats
        queue: asyncio.Queue[Request] = asyncio.Queue()
        for r in requests:
            queue.put_nowait(r)
        bar = tqdm(
            total=len(requests),
            desc=desc,
            unit="req",
            disable=not self.config.progress,
            dynamic_ncols=True,
            mininterval=0.5 if sys.stderr.isatty() else 5.0,
            file=sys.stderr,
        )

        def show() -> None:
            bar.set_postfix(failed=stats.failed, retries=stats.retries, refresh=False)

        async def worker() -> None:
            while True:
                try:
                    request = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    text = await self.complete(request)
                except Exception as exc:
                    if is_fatal(exc):
                        raise FatalAPIError(self.client.explain(exc)) from None
                    stats.failed += 1
                    stats.failures.append(
                        {"id": request.id, "reason": failure_reason(exc), "error": _short(self.client.explain(exc))}
                    )
                else:
                    result = handle(request, text)
                    if asyncio.iscoroutine(result):
                        await result
                    stats.succeeded += 1
                if not bar.disable:  # a quiet run (progress off) skips formatting the counts
                    show()
                    bar.update(1)

        workers = [asyncio.ensure_future(worker()) for _ in range(min(self.config.concurrency, len(requests)))]
        try:
            done, _pending = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        except FatalAPIError as e:
            stats.fatal = str(e)
            raise
        except asyncio.CancelledError:
            stats.interrupted = True
            raise
        finally:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            bar.close()
        return stats

    async def aclose(self) -> None:
        await self.client.aclose()


def _short(text: str) -> str:
    return text if len(text) <= 300 else text[:297] + "…"


# --- the manifest ----------------------------------------------------------------------------------------------
def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def short_hash(text: str, n: int = 12) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:n]


def manifest_path(out: str | os.PathLike[str]) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".manifest.json") if out.suffix != ".jsonl" else out.with_suffix(".manifest.json")


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def write_manifest(out: str | os.PathLike[str], run: dict[str, Any]) -> Path:
    """Add this run to the manifest next to `out` (one entry per run; a resumed step adds a run)."""
    path = manifest_path(out)
    runs: list[dict[str, Any]] = []
    if path.exists():
        try:
            runs = list(json.loads(path.read_text(encoding="utf-8")).get("runs", []))
        except (ValueError, AttributeError):
            runs = []
    runs.append(run)
    manifest = {
        "output": str(out),
        "runs": runs,
        "totals": {
            "runs": len(runs),
            "succeeded": sum(r.get("stats", {}).get("succeeded", 0) for r in runs),
            "failed": sum(r.get("stats", {}).get("failed", 0) for r in runs),
            "retries": sum(r.get("stats", {}).get("retries", 0) for r in runs),
        },
    }
    text = json.dumps(manifest, ensure_ascii=False, indent=2)
    text = redact(text)
    write_text_atomic(path, text + "\n")
    return path


async def _run_async(
    config: EngineConfig, requests: Sequence[Request], handle: Handler, desc: str, stats_out: list[RunStats]
) -> RunStats:
    engine = Engine(config)
    stats_out.append(engine.stats)
    try:
        return await engine.run(requests, handle, desc)
    finally:
        await engine.aclose()


def run_requests(
    config: EngineConfig,
    requests: Sequence[Request],
    handle: Handler,
    *,
    desc: str = "requests",
    stats: RunStats | None = None,
) -> RunStats:
    """Run `requests` (blocking) and return the stats. Ctrl-C stops cleanly: stats.interrupted is set and
    KeyboardInterrupt propagates after every finished answer has been handed to `handle`."""
    holder: list[RunStats] = []
    started = time.monotonic()
    start_iso = now_iso()
    try:
        result = asyncio.run(_run_async(config, requests, handle, desc, holder))
    except KeyboardInterrupt:
        if holder:
            holder[0].interrupted = True
        raise
    finally:
        if holder:
            s = holder[0]
            s.started_at, s.finished_at, s.seconds = start_iso, now_iso(), round(time.monotonic() - started, 3)
            if stats is not None:
                _merge(stats, s)
    if stats is not None:
        return stats
    return result


def _merge(into: RunStats, s: RunStats) -> None:
    into.requested += s.requested
    into.succeeded += s.succeeded
    into.failed += s.failed
    into.retries += s.retries
    into.retries_by_reason.update(s.retries_by_reason)
    into.failures.extend(s.failures)
    into.interrupted = into.interrupted or s.interrupted
    into.fatal = into.fatal or s.fatal
    into.started_at = into.started_at or s.started_at
    into.finished_at = s.finished_at
    into.seconds += s.seconds


def prompt_hashes(prompts: dict[str, str]) -> dict[str, str]:
    return {name: text_hash(text) for name, text in prompts.items()}


def iter_unique(requests: Iterable[Request]) -> list[Request]:
    """Requests with duplicate ids removed (first kept)."""
    seen: set[str] = set()
    out = []
    for r in requests:
        if r.id not in seen:
            seen.add(r.id)
            out.append(r)
    return out

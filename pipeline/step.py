"""The one skeleton of the steps that ask an LLM (q2a, extract, long_dialogue).

A step says what to ask (`Request`s with stable ids) and what an answer becomes (a record, or `Rejected`);
`run_step` does the rest the same way for every step:

- `--dry-run`: how many requests are planned, how many are already answered, a prompt-token estimate; asks
  nothing;
- the engine asks what is missing (resumable), and each answer is written at once through a `JsonlStore`; an
  answer the step cannot use goes to `<out>.rejects.jsonl` with its raw text (asked again only with
  `--retry-rejects`);
- the run is recorded in the manifest whatever happened, and ends with one line saying what happened and what
  to do. Exit codes: 0 done; 1 some requests failed, no usable record came out, or a write failed (the line
  says which; rerun the same command); 2 the API refused (key, model, URL) or a store is damaged; 130 Ctrl-C.
A write that fails (a full disk) stops the run: what was written whole is kept, the run is never "complete".
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from pipeline.llm import (
    EngineConfig,
    FatalAPIError,
    Request,
    RunStats,
    now_iso,
    prompt_hashes,
    run_requests,
    short_hash,
    write_manifest,
)
from pipeline.options import add_engine_args, engine_config, setup_logging
from pipeline.store import JsonlStore, StoreError, existing_ids, read_jsonl
from xiyou.io import write_error
from xiyou.tokens import estimate_tokens


class Rejected(ValueError):
    """An answer the step cannot use (not the format asked for); the message says why."""


class WriteFailed(Exception):
    """Writing an output failed (a full disk, no permission): the run stops, keeping what was written whole."""

    def __init__(self, path: Path, error: OSError) -> None:
        super().__init__(write_error(path, error))
        self.path = path


@dataclasses.dataclass
class Step:
    """What one LLM step asks and what it keeps; `run_step` runs it."""

    name: str
    out: Path
    requests: Sequence[Request]
    #: the record kept for an answer (raise Rejected for an unusable one)
    answer: Callable[[Request, str], dict[str, Any]]
    #: dry-run wording of the plan, e.g. "7 questions × 3 = 21 requests"
    plan: str
    prompts: dict[str, str]
    parameters: dict[str, Any]
    #: where answers are kept (default: `out`); a step that rebuilds `out` from them keeps them in `<out>.raw.jsonl`
    store: Path | None = None
    #: whether unusable answers are kept in `<out>.rejects.jsonl` (else Rejected is a failed request)
    rejects: bool = True
    retry_rejects: bool = False
    #: called after the requests (not after Ctrl-C): rebuilds outputs, returns the manifest's report; a report
    #: with `records_total` 0 makes the run fail with its `no_records_hint`
    finish: Callable[[RunStats], dict[str, Any]] | None = None

    @property
    def store_path(self) -> Path:
        return self.store or self.out

    @property
    def rejects_path(self) -> Path:
        return side_path(self.out, "rejects")


def side_path(out: Path, kind: str) -> Path:
    """`data/long.jsonl` → `data/long.<kind>.jsonl`: the raw answers, the rejects."""
    stem = out.name.removesuffix(".jsonl")
    return out.with_name(f"{stem}.{kind}.jsonl")


def records_report(records: Sequence[dict[str, Any]], no_records_hint: str, **report: Any) -> dict[str, Any]:
    """A step's report on the records it rebuilt: `report`, the records per character and in total, and when there
    are none, the hint saying why (the run then fails with it)."""
    report["records"] = dict(Counter(r["character"] for r in records))
    report["records_total"] = len(records)
    if not records:
        report["no_records_hint"] = no_records_hint
    return report


def rejected_ids(path: Path) -> set[str]:
    """The request ids whose answers were rejected (files of older runs name them `passage`)."""
    if not path.exists():
        return set()
    return {r.get("request") or r.get("passage") for r in read_jsonl(path)} - {None}


def _append(store: JsonlStore, record: dict[str, Any]) -> None:
    try:
        store.append(record)
    except OSError as e:
        raise WriteFailed(store.path, e) from None


def add_step_args(
    parser: argparse.ArgumentParser, *, temperature: float = 0.7, max_tokens: int = 1024, rejects: bool = True
) -> None:
    """The options every LLM step has: --dry-run, --retry-rejects (when it keeps rejects), the engine's."""
    parser.add_argument(
        "--dry-run", action="store_true", help="print the request count and a token estimate, ask nothing"
    )
    if rejects:
        parser.add_argument(
            "--retry-rejects", action="store_true", help="ask again the requests whose answers were rejected"
        )
    add_engine_args(parser, temperature=temperature, max_tokens=max_tokens)


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse a step's command line and set up its logging (the key is scrubbed from every record)."""
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    return args


def run_step(step: Step, args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Dry run, or ask what is missing, keep each answer, finish, record the run; the exit code."""
    skip_rejected = step.rejects and not step.retry_rejects
    if args.dry_run:
        done = existing_ids(step.store_path) | (rejected_ids(step.rejects_path) if skip_rejected else set())
        todo = [r for r in step.requests if r.id not in done]
        tokens = sum(estimate_tokens(m["content"]) for r in todo for m in r.messages)
        print(
            f"{step.name}: {step.plan}; {len(step.requests) - len(todo)} already in {step.store_path}, "
            f"{len(todo)} to ask; ≈{tokens:,} prompt tokens (estimate: one per CJK character)"
        )
        return 0
    config = engine_config(args, parser)
    with ExitStack() as stack:
        try:
            store = stack.enter_context(JsonlStore(step.store_path))
            rejects = stack.enter_context(JsonlStore(step.rejects_path)) if step.rejects else None
        except StoreError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except OSError as e:
            print(f"error: {write_error(step.store_path, e)}", file=sys.stderr)
            return 1
        skip = rejected_ids(step.rejects_path) if skip_rejected else set()
        todo = [r for r in step.requests if r.id not in store and r.id not in skip]
        counts: Counter[str] = Counter()

        def handle(request: Request, answer: str) -> None:
            try:
                record = step.answer(request, answer)
            except Rejected as e:
                if rejects is None:
                    raise
                counts["rejected"] += 1
                _append(
                    rejects,
                    {
                        "id": f"{request.id}#{short_hash(answer, 8)}",
                        "request": request.id,
                        "error": str(e),
                        "raw": answer,
                    },
                )
                return
            _append(store, record)

        def finish(stats: RunStats) -> dict[str, Any]:
            report = step.finish(stats) if step.finish else {}
            if rejects is not None:
                report["rejected_this_run"] = counts["rejected"]
                report["rejects_total"] = len(rejects)
                if report.get("records_total") == 0 and len(rejects):
                    report["no_records_hint"] = (
                        report.get("no_records_hint", "")
                        + f"; {len(rejects)} answers were not in the format asked for (see {step.rejects_path}): "
                        "try a stronger --model, then rerun with --retry-rejects"
                    ).lstrip("; ")
            return report

        return run_and_record(
            step=step.name,
            out=step.out,
            config=config,
            requests=todo,
            handle=handle,
            planned=len(step.requests),
            already_done=len(step.requests) - len(todo),
            prompts=step.prompts,
            parameters=step.parameters,
            finish=finish,
        )
    raise AssertionError("unreachable")  # pragma: no cover


def run_and_record(
    *,
    step: str,
    out: Path,
    config: EngineConfig,
    requests: Sequence[Request],
    handle: Callable[[Request, str], None],
    planned: int,
    already_done: int,
    prompts: dict[str, str],
    parameters: dict[str, Any],
    finish: Callable[[RunStats], dict[str, Any]] | None = None,
) -> int:
    """Run the requests, then write the manifest whatever happened; the exit code (see the module's docstring)."""
    stats = RunStats(planned=planned, already_done=already_done)
    started = now_iso()
    code = 0
    status: str | None = None  # overrides the engine's status (complete/incomplete/…) when set
    report: dict[str, Any] = {}
    write_failed: str | None = None
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
    except WriteFailed as e:
        write_failed, code, status = str(e), 1, "write_failed"
    except Exception:  # a bug: the manifest must not say "complete"; the traceback follows
        code, status = 1, "failed"
        raise
    finally:
        stats.finished_at = now_iso()
        stats.started_at = stats.started_at or started
        if finish is not None and code != 130:
            try:
                report = finish(stats)
            except OSError as e:
                write_failed, code, status = write_error(getattr(e, "filename", None) or out, e), 1, "write_failed"
        if code == 0 and report.get("records_total") == 0:
            code, status = 1, "no_records"
        run = {
            "step": step,
            "model": config.model,
            "prompt_hashes": prompt_hashes(prompts),
            "parameters": {**config.parameters(), **parameters},
            "started_at": stats.started_at,
            "finished_at": stats.finished_at,
            "stats": stats.as_dict(),
        }
        if status:
            run["stats"]["status"] = status
        if write_failed:
            run["stats"]["write_error"] = write_failed
        if report:
            run["report"] = report
        try:
            path: Path | str = write_manifest(out, run)
        except OSError as e:
            path = f"(not written: {write_error(e.filename or out, e)})"
            code = code or 1
    missing = planned - already_done - stats.succeeded
    if write_failed:
        print(f"error: {write_failed} (what was written whole is kept; manifest {path})", file=sys.stderr)
    elif code == 130:
        print(
            f"interrupted: {already_done + stats.succeeded} of {planned} done and kept in {out}; "
            "run the same command again to continue",
            file=sys.stderr,
        )
    elif code == 2:
        print(f"error: {stats.fatal}", file=sys.stderr)
    elif code == 1 and stats.failed:
        print(
            f"{stats.failed} requests failed after retries ({missing} records missing; see {path}); "
            "run the same command again to ask only those",
            file=sys.stderr,
        )
    elif status == "no_records":
        print(
            f"{step}: no usable records in {out}: {report.get('no_records_hint', '')}; manifest {path}", file=sys.stderr
        )
    elif code == 1:
        print(f"error: the manifest could not be written: {path}", file=sys.stderr)
    elif "records_total" in report:  # records made from the answers: count them, not the requests
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

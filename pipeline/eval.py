"""Does each character still sound like itself? Ask, classify, measure, report.

    python -m pipeline.eval --backend canon --out runs/eval-canon
    python -m pipeline.eval --backend endpoints --endpoints endpoints.toml --samples 3 --out runs/eval-ft \\
        --compare runs/eval-base/metrics.json

Each character answers its own `sample_questions` plus a file of held-out questions (never used for training
data), several samples each. Replies are stored in `OUT/replies.jsonl` as they come (a rerun resumes: only missing
replies are asked). Then OUT gets metrics.json, report.md and PNG charts. See pipeline/evaluation/.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime as dt
import sys
import threading
from pathlib import Path

from tqdm import tqdm

from pipeline.evaluation.classifier import train_from_canon
from pipeline.evaluation.metrics import compute_metrics
from pipeline.evaluation.report import summary_line, write_report
from pipeline.llm import short_hash
from pipeline.questions import read_questions
from pipeline.store import JsonlStore
from xiyou.backends.base import Backend, BackendError, Citation, GenerationSettings, text_only
from xiyou.character import Character, CharacterError, get_character, load_characters
from xiyou.env import endpoints_path
from xiyou.prompts import build_messages, mode_of

HELD_OUT_QUESTIONS = Path(__file__).with_name("data") / "eval_questions.txt"


def reply_id(character_id: str, question: str, sample: int, chapter: int | None = None) -> str:
    return f"{character_id}:{short_hash(question)}:{sample}" + (f":c{chapter}" if chapter is not None else "")


def prompt_mode_label(kind: str, backend: Backend) -> str:
    """How a character answered in this run: "canon" (lines from the novel), "persona" (a general model with the
    persona prompt) or "fine-tuned" (the meta prompt, as trained)."""
    if kind == "canon":
        return "canon"
    return "persona" if mode_of(backend) == "persona" else "fine-tuned"


def make_backends(args: argparse.Namespace, characters: list[Character], canon) -> dict[str, Backend]:
    """One backend per character, as chosen on the command line."""
    if args.backend == "canon":
        from xiyou.backends.canon import CanonBackend

        return {c.id: CanonBackend(c, canon, max_chapter=args.chapter) for c in characters}
    from xiyou.backends.factory import make_backend

    if args.backend == "transformers":
        return {c.id: make_backend(c, "transformers") for c in characters}
    from xiyou.endpoints import configured_endpoints

    endpoints = configured_endpoints(args.endpoints)  # the file, its [default], the XIYOU_API_* persona shortcut
    if not args.endpoints and not endpoints:
        raise SystemExit(
            "error: --backend endpoints needs --endpoints FILE (or XIYOU_ENDPOINTS), or XIYOU_API_BASE_URL and "
            "XIYOU_API_MODEL (persona mode on one model)"
        )
    missing = [c.id for c in characters if c.id not in endpoints]
    if missing:
        where = args.endpoints or "XIYOU_API_BASE_URL"
        raise SystemExit(f"error: {where} has no table for {', '.join(missing)}; add one or pass --characters")
    return {c.id: make_backend(c, endpoint=endpoints[c.id]) for c in characters}


def ask_all(
    store: JsonlStore,
    jobs: list[tuple[Character, str, int]],
    backends: dict[str, Backend],
    settings: dict[str, GenerationSettings],
    concurrency: int,
    chapter: int | None = None,
) -> int:
    """Ask every job not yet in the store; returns the number of failures. Ctrl-C keeps what was finished.

    `chapter`: the conversation is set after that chapter (the system prompt also carries the story so far and
    what the character cannot know; canon backends are limited to it where they are made)."""
    todo = [j for j in jobs if reply_id(j[0].id, j[1], j[2], chapter) not in store]
    failures = 0
    lock = threading.Lock()
    stop = threading.Event()

    def ask(job: tuple[Character, str, int]) -> dict:
        character, question, sample = job
        ask = [{"role": "user", "content": question}]
        messages = build_messages(character, ask, mode_of(backends[character.id]), chapter=chapter)
        record = {
            "id": reply_id(character.id, question, sample, chapter),
            "character": character.id,
            "question": question,
            "sample": sample,
        }
        try:
            cited: list[Citation] = []
            stream = backends[character.id].stream(messages, settings[character.id], stop)
            record["text"] = "".join(text_only(stream, cited.append))
            if cited:
                record["citation"] = cited[-1].to_json()
        except BackendError as e:
            record["error"] = str(e)
        return record

    with tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="eval", unit="reply") as bar:
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=max(1, concurrency))
        try:
            futures = [pool.submit(ask, job) for job in todo]
            for future in concurrent.futures.as_completed(futures):
                record = future.result()
                with lock:
                    if "error" in record:
                        failures += 1  # failed replies are not stored: a rerun asks them again
                        bar.set_postfix(failed=failures)
                    else:
                        store.append(record)
                bar.update(1)
        except KeyboardInterrupt:
            stop.set()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown()
    return failures


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.eval",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    p.add_argument(
        "--backend",
        choices=["canon", "transformers", "endpoints"],
        required=True,
        help="canon: the novel's own lines (offline); transformers: local weights; endpoints: servers",
    )
    p.add_argument(
        "--endpoints",
        type=Path,
        default=endpoints_path(),
        help="endpoints TOML (as the hub's) for --backend endpoints (default: XIYOU_ENDPOINTS)",
    )
    p.add_argument("--characters", default=None, help="comma-separated ids (default: all four)")
    p.add_argument(
        "--questions",
        type=Path,
        default=HELD_OUT_QUESTIONS,
        help="held-out questions, one per line (default: pipeline/data/eval_questions.txt)",
    )
    p.add_argument("--no-sample-questions", action="store_true", help="skip the characters' own sample_questions")
    p.add_argument("--samples", type=int, default=1, help="replies per question (default 1)")
    p.add_argument("--novel", type=Path, default=None, help="the novel (default: XIYOU_NOVEL or ../shared/data)")
    p.add_argument("--out", type=Path, required=True, help="output directory (resumable)")
    p.add_argument("--compare", type=Path, default=None, help="an earlier run's metrics.json to compare with")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=None, help="default: each character's own")
    p.add_argument("--concurrency", type=int, default=None, help="parallel requests (default: 4 for endpoints, else 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--chapter",
        type=int,
        default=None,
        help="set every conversation after chapter N (1-100): canon lines up to it only; reports future-knowledge "
        "leaks (pipeline/evaluation/leaks.py)",
    )
    args = p.parse_args(argv)
    if args.chapter is not None and not 1 <= args.chapter <= 100:
        p.error(f"--chapter must be within 1..100, got {args.chapter}")
    if args.samples < 1:
        p.error("--samples must be at least 1")
    if args.compare is not None and not args.compare.is_file():
        p.error(f"--compare {args.compare}: no such file (give the metrics.json of an earlier run)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from xiyou.canon import NovelError, get_canon

    all_characters = load_characters()
    try:
        ids = args.characters.split(",") if args.characters else list(all_characters)
        characters = [get_character(i.strip(), all_characters) for i in ids if i.strip()]
    except CharacterError as e:
        print(f"error: --characters: {e}", file=sys.stderr)
        return 2
    try:
        canon = get_canon(args.novel)
    except NovelError as e:
        print(f"error: the who-said-it classifier is trained on the novel: {e}", file=sys.stderr)
        return 2
    if args.chapter is not None:  # who the story has not brought in by then has nothing to say: skipped
        from xiyou.story import membership

        absent = [m for m in (membership(c.id, args.chapter, canon) for c in characters) if not m.can_join]
        for m in absent:
            print(f"note: {m.character} skipped: {m.reason}", file=sys.stderr)
        characters = [c for c in characters if c.id not in {m.character for m in absent}]
        if not characters:
            print(f"error: none of the characters is in the story by chapter {args.chapter}", file=sys.stderr)
            return 2
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")

    classifier, held_out = train_from_canon(canon, list(all_characters), seed=args.seed)
    print(
        f"who-said-it classifier: held-out accuracy {held_out.accuracy:.3f} "
        f"(balanced {held_out.balanced_accuracy:.3f}) "
        f"({held_out.n_test} lines of unseen chapters, trained on {held_out.n_train})",
        file=sys.stderr,
    )

    held_questions = read_questions(args.questions)
    jobs: list[tuple[Character, str, int]] = []
    for c in characters:
        questions = ([] if args.no_sample_questions else list(c.sample_questions)) + held_questions
        jobs += [(c, q, s) for q in dict.fromkeys(questions) for s in range(args.samples)]
    if not jobs:
        print("error: no questions to ask", file=sys.stderr)
        return 2
    try:
        backends = make_backends(args, characters, canon)
    except (BackendError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    settings = {
        c.id: GenerationSettings.for_character(
            c,
            max_new_tokens=args.max_new_tokens,
            seed=args.seed,
            **({"temperature": args.temperature} if args.temperature is not None else {}),
        )
        for c in characters
    }
    concurrency = args.concurrency or (4 if args.backend == "endpoints" else 1)
    args.out.mkdir(parents=True, exist_ok=True)
    try:
        with JsonlStore(args.out / "replies.jsonl") as store:
            failures = ask_all(store, jobs, backends, settings, concurrency, args.chapter)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: finished replies are kept in {args.out / 'replies.jsonl'}; run again to resume",
            file=sys.stderr,
        )
        return 130

    wanted = {reply_id(c.id, q, s, args.chapter) for c, q, s in jobs}
    replies: dict[str, list[str]] = {c.id: [] for c in characters}
    kept = []
    for record in JsonlStore(args.out / "replies.jsonl").records():
        if record["id"] in wanted:
            replies[record["character"]].append(record["text"])
            kept.append(record)
    empty = [cid for cid, texts in replies.items() if not texts]
    if empty:
        print(
            f"error: no replies for {', '.join(empty)} ({failures} requests failed); see the errors above",
            file=sys.stderr,
        )
        return 1
    canon_lines = {c.id: [u.text for u in canon.lines(c.id)] for c in characters}
    metrics = compute_metrics(replies, {c.id: c for c in characters}, classifier, canon_lines)
    run = {
        "backend": args.backend,
        "characters": [c.id for c in characters],
        "questions": len({q for _, q, _ in jobs}),
        "samples": args.samples,
        "replies": sum(len(v) for v in replies.values()),
        "errors": failures,
        "novel_sha256": canon.novel.sha256,
        "started": started,
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    run["modes"] = {c.id: prompt_mode_label(args.backend, backends[c.id]) for c in characters}
    if args.chapter is not None:
        from pipeline.evaluation.leaks import first_mentions, leak_figures

        run["chapter"] = args.chapter
        run["leaks"] = leak_figures(kept, args.chapter, first_mentions(canon))
    from pipeline.evaluation.report import metrics_json

    paths = write_report(metrics_json(metrics, held_out, run), args.out, args.compare)
    for cid, m in metrics.characters.items():
        print(summary_line(cid, m))
    for cid, row in run.get("leaks", {}).items():
        print(
            f"{cid:8s} {run['modes'][cid]:10s} leaks after chapter {args.chapter}: "
            f"{row['leaking']}/{row['replies']} replies "
            f"({row['rate']:.1%}) {' '.join(row['what']) or ''}".rstrip()
        )
    print(f"report: {paths['report']}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

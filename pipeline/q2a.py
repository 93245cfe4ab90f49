"""Question-to-answer data: ask an LLM playing the character every question, N times each.

    python -m pipeline.q2a --character wukong --questions ../shared/data/questions.txt --repeat 5 \\
        --out data/wukong/q2a.jsonl --base-url https://api.example.com/v1 --model some-model

Each request is the character's `persona_prompt` followed by the question (as the original data was made); each
answer becomes an XTuner record whose `system` is the character's `meta_instruction`:

    {"id": "q2a-wukong-<question hash>-r0", "character": "wukong", "source": "q2a",
     "conversation": [{"system": "<meta_instruction>", "input": "<question>", "output": "<answer>"}]}

Ids are stable (character + question hash + repeat index), so a rerun or a resume asks only what is missing.
`--dry-run` prints the request count and an estimate of the prompt tokens, and asks nothing.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.llm import Request, short_hash
from pipeline.options import character_or_error
from pipeline.questions import read_questions
from pipeline.step import Step, add_step_args, parse_args, run_step
from xiyou.character import Character, character_ids

__all__ = ["main", "plan", "read_questions", "record_id", "to_record"]

STEP = "q2a"


def record_id(character_id: str, question: str, repeat: int) -> str:
    return f"q2a-{character_id}-{short_hash(question)}-r{repeat}"


def plan(character: Character, questions: Sequence[str], repeat: int) -> list[Request]:
    """Every request of the run, in order, with stable ids."""
    return [
        Request(
            id=record_id(character.id, q, r),
            messages=[{"role": "user", "content": character.persona_prompt + q}],
            meta={"question": q, "repeat": r},
        )
        for q in questions
        for r in range(repeat)
    ]


def to_record(character: Character, request: Request, answer: str) -> dict:
    return {
        "id": request.id,
        "character": character.id,
        "source": STEP,
        "conversation": [
            {"system": character.meta_instruction, "input": request.meta["question"], "output": answer.strip()}
        ],
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.q2a",
        description="Ask an LLM playing a character every question N times; write XTuner records (resumable).",
    )
    p.add_argument("--character", required=True, help=f"character id: {', '.join(character_ids())}")
    p.add_argument("--questions", type=Path, required=True, help="text file, one question per line")
    p.add_argument("--repeat", type=int, default=5, help="answers per question (default 5)")
    p.add_argument("--limit", type=int, default=None, help="only the first N questions (for a trial run)")
    p.add_argument("--out", type=Path, required=True, help="output JSONL; rerunning resumes it")
    add_step_args(p, rejects=False)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    character = character_or_error(parser, args.character)
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    questions = read_questions(args.questions)
    if args.limit is not None:
        questions = questions[: args.limit]
    if not questions:
        parser.error(f"--questions {args.questions}: no questions found (one per line)")
    requests = plan(character, questions, args.repeat)
    step = Step(
        name=STEP,
        out=args.out,
        requests=requests,
        answer=lambda request, answer: to_record(character, request, answer),
        plan=f"{character.id}: {len(questions)} questions × {args.repeat} = {len(requests)} requests",
        prompts={"persona_prompt": character.persona_prompt, "meta_instruction": character.meta_instruction},
        parameters={
            "character": character.id,
            "questions_file": str(args.questions.resolve()),
            "questions": len(questions),
            "repeat": args.repeat,
        },
        rejects=False,
    )
    return run_step(step, args, parser)


if __name__ == "__main__":
    sys.exit(main())

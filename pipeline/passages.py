"""Cutting the novel into passages for the LLM steps: windows within a chapter, ending at a sentence end.

One token is about one Chinese character for the models we use, so sizes are in characters. A passage's id
names its chapter and character span (`c027-001200-001730`), so it is stable for the same novel and sizes.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from pipeline.llm import Request
from pipeline.step import Step, run_step, side_path
from xiyou.canon import Chapter, Novel, NovelError, load_novel

_ENDS = "。！？!?\n"
_CLOSERS = "”’」』"


@dataclasses.dataclass(frozen=True)
class Passage:
    chapter: int
    start: int  # character offsets in the chapter text
    end: int
    text: str

    @property
    def id(self) -> str:
        return f"c{self.chapter:03d}-{self.start:06d}-{self.end:06d}"

    def record(self, **fields: object) -> dict[str, object]:
        """A stored answer about this passage: its id and span, and `fields`."""
        return {"id": self.id, "chapter": self.chapter, "start": self.start, "end": self.end, **fields}


def _snap(text: str, pos: int, limit: int) -> int:
    """The first position at or after `pos` (up to `limit` further) just past a sentence end (and its quote)."""
    stop = min(len(text), pos + limit)
    i = pos
    while i < stop:
        if text[i] in _ENDS:
            i += 1
            while i < len(text) and text[i] in _CLOSERS:
                i += 1
            return i
        i += 1
    return min(pos, len(text))


def chapter_passages(chapter: Chapter, size: int, overlap: int = 0) -> Iterator[Passage]:
    """Windows of about `size` characters over one chapter, each overlapping the previous by about `overlap`."""
    if size < 50:
        raise ValueError(f"passage size must be at least 50 characters, got {size}")
    if not 0 <= overlap < size // 2:
        raise ValueError(f"overlap must be within 0..{size // 2 - 1} characters, got {overlap}")
    text = chapter.text
    start = 0
    while start < len(text):
        end = len(text) if len(text) - start <= size * 1.2 else _snap(text, start + size, size // 5)
        if end <= start:
            end = min(len(text), start + size)
        yield Passage(chapter.number, start, end, text[start:end])
        if end >= len(text):
            return
        nxt = _snap(text, max(start + 1, end - overlap), overlap) if overlap else end
        start = nxt if start < nxt <= end else end


def novel_passages(novel: Novel, size: int, overlap: int = 0, chapters: Iterable[int] | None = None) -> list[Passage]:
    wanted = set(chapters) if chapters is not None else None
    return [
        p for c in novel.chapters if wanted is None or c.number in wanted for p in chapter_passages(c, size, overlap)
    ]


def parse_chapters(spec: str | None) -> list[int] | None:
    """'1-5,9' → [1, 2, 3, 4, 5, 9]; None → None (all chapters)."""
    if not spec:
        return None
    out: list[int] = []
    try:
        for part in spec.split(","):
            part = part.strip()
            if "-" in part:
                a, b = part.split("-", 1)
                out.extend(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise ValueError(f"--chapters {spec!r}: give chapter numbers and ranges, e.g. 1-10,27") from None
    return out


def passage_parser(step: str, description: str) -> argparse.ArgumentParser:
    """The command line of a step over the novel's passages, with --novel, --out and --chapters."""
    parser = argparse.ArgumentParser(prog=f"python -m pipeline.{step}", description=description)
    parser.add_argument("--novel", type=Path, default=None, help="the novel's text (default: $XIYOU_NOVEL)")
    parser.add_argument("--out", type=Path, required=True, help="XTuner records of the four (JSONL); rerunning resumes")
    parser.add_argument("--chapters", default=None, help="e.g. 1-10,27 (default: all)")
    return parser


def novel_and_passages(
    parser: argparse.ArgumentParser, args: argparse.Namespace, size: int, overlap: int = 0
) -> tuple[Novel, list[Passage]]:
    """The novel (`--novel`) and its passages of the `--chapters` asked for; a problem ends with a clear error."""
    novel = load_novel_or_exit(args.novel)
    try:
        passages = novel_passages(novel, size, overlap, parse_chapters(args.chapters))
    except ValueError as e:
        parser.error(str(e))
    if not passages:
        parser.error(f"--chapters {args.chapters}: no such chapters in the novel")
    return novel, passages


def run_passage_step(
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    novel: Novel,
    requests: list[Request],
    *,
    answer: Callable[[Request, str], dict[str, Any]],
    prompts: dict[str, str],
    sizes: dict[str, int],
    finish: Callable[[Path], dict[str, Any]],
) -> int:
    """Run a step over the novel's passages: answers kept in `<out>.raw.jsonl`, from which `finish(raw_path)`
    rebuilds `<out>` (and returns the report) at the end of every run; the exit code."""
    raw_path = side_path(args.out, "raw")
    step = Step(
        name=parser.prog.rsplit(".", 1)[-1],
        out=args.out,
        requests=requests,
        answer=answer,
        plan=f"{len(requests)} passages",
        prompts=prompts,
        parameters={"novel_sha256": novel.sha256, "chapters": args.chapters or "all", **sizes},
        store=raw_path,
        retry_rejects=args.retry_rejects,
        finish=lambda stats: finish(raw_path),
    )
    return run_step(step, args, parser)


def load_novel_or_exit(path: Path | None) -> Novel:
    """The novel at `path` (None: XIYOU_NOVEL / ../shared/data); a clear message and exit when there is none."""
    from xiyou.env import novel_path

    path = path or novel_path()
    if path is None:
        raise SystemExit("error: no novel: pass --novel PATH or set XIYOU_NOVEL to the text of 《西游记》")
    try:
        return load_novel(path)
    except NovelError as e:
        raise SystemExit(f"error: --novel: {e}") from None

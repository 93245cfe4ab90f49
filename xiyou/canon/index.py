"""BM25 retrieval over a character's exchanges (bm25s), tokenised as Chinese character unigrams + bigrams.

Character n-grams suit the novel's half-classical language better than a modern word segmenter, and tokenise a
whole novel in milliseconds (jieba would take seconds). Two indexes per character, aligned with its exchanges:
one over the contexts (what was said to the character), one over the replies (what the character said).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import bm25s
    import numpy as np

_CJK_RUN = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]+|[A-Za-z0-9]+")


def tokenize(text: str) -> list[str]:
    """Unigrams and bigrams of each run of Chinese characters (and whole Latin/digit words)."""
    tokens: list[str] = []
    for run in _CJK_RUN.findall(text):
        if run.isascii():
            tokens.append(run.lower())
            continue
        tokens.extend(run)
        tokens.extend(run[i : i + 2] for i in range(len(run) - 1))
    return tokens


class Index:
    """A BM25 index over documents given as texts; `scores(query)` returns one score per document."""

    def __init__(self, model: bm25s.BM25 | None, size: int) -> None:
        self.model = model
        self.size = size

    @classmethod
    def build(cls, texts: Sequence[str]) -> Index:
        import bm25s

        if not texts:
            return cls(None, 0)
        model = bm25s.BM25()
        corpus = [tokenize(t) for t in texts]
        if not any(corpus):
            corpus = [["\u3007"], *corpus[1:]]  # bm25s needs one token somewhere
        model.index(corpus, show_progress=False)
        return cls(model, len(texts))

    def scores(self, query: str) -> np.ndarray:
        import numpy as np

        ids = self.model.get_tokens_ids(tokenize(query)) if self.model is not None else []
        if not ids:
            return np.zeros(self.size, dtype=np.float32)
        return self.model.get_scores_from_ids(ids)

    def save(self, directory: Path) -> None:
        if self.model is not None:
            self.model.save(str(directory), show_progress=False)
        (directory / "size.txt").write_text(str(self.size), encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> Index:
        import bm25s

        size = int((directory / "size.txt").read_text(encoding="utf-8"))
        if size == 0:
            return cls(None, 0)
        model = bm25s.BM25.load(str(directory), show_progress=False, verbosity=0)
        return cls(model, size)


def top_k(scores: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[int]:
    """Indices of the k best positive scores, best first; ties broken by position (deterministic).

    `allowed` (a boolean mask, e.g. the exchanges up to a chapter): the others are masked out before the top k is
    taken, so a masked document is never returned and never pushes an allowed one out."""
    import numpy as np

    if k <= 0 or scores.size == 0:
        return []
    if allowed is not None:
        scores = np.where(allowed, scores, 0.0)
    order = np.argsort(-scores, kind="stable")[:k]
    return [int(i) for i in order if scores[i] > 0]

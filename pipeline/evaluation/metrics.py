"""Per-character metrics of a set of replies.

- who_said_it: share of replies the classifier attributes to the right character (and the confusion matrix);
- self_ref_rate: share using the character's first-person forms (贫僧, 俺老孙, 老猪…);
- broken_persona_rate: share stepping out of role ("作为一个AI…");
- distinctness: 1 − mean cosine similarity between this character's replies and each other character's
  (TF-IDF centroids): 0 means they all sound alike;
- canon_similarity: mean cosine similarity of a reply to its nearest canon line of the same character;
- length: mean and median reply length in characters.

Replies are text only: a canon reply's citation is data beside it (the `citation` field of a reply record,
see `xiyou.backends.base.Citation`), never part of the words, so nothing here has to strip it.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence

import numpy as np

from pipeline.evaluation.classifier import WhoSaidIt
from xiyou.character import Character
from xiyou.persona import broken_persona, uses_self_ref


@dataclasses.dataclass
class CharacterMetrics:
    character: str
    n: int
    who_said_it: float
    self_ref_rate: float
    broken_persona_rate: float
    distinctness: float
    canon_similarity: float
    mean_length: float
    median_length: float


@dataclasses.dataclass
class Metrics:
    characters: dict[str, CharacterMetrics]
    labels: tuple[str, ...]
    confusion: tuple[tuple[int, ...], ...]  # rows: the character asked, columns: who the classifier heard
    similarity: tuple[tuple[float, ...], ...]  # pairwise centroid cosine similarity between characters' replies


def compute_metrics(
    replies: dict[str, Sequence[str]],
    characters: dict[str, Character],
    classifier: WhoSaidIt,
    canon_lines: dict[str, Sequence[str]],
) -> Metrics:
    """`replies` maps character id → that character's reply texts; `canon_lines` → its canon lines."""
    labels = classifier.labels
    ids = [cid for cid in labels if replies.get(cid)]
    cleaned = {cid: [t.strip() for t in replies[cid]] for cid in ids}
    vec = classifier.vectorizer

    centroids = {}
    for cid in ids:
        m = vec.transform(cleaned[cid])
        c = np.asarray(m.mean(axis=0)).ravel()
        norm = np.linalg.norm(c)
        centroids[cid] = c / norm if norm else c
    sim = [
        [float(centroids[a] @ centroids[b]) if a in centroids and b in centroids else float("nan") for b in labels]
        for a in labels
    ]

    true: list[str] = []
    predicted: list[str] = []
    per: dict[str, CharacterMetrics] = {}
    for cid in ids:
        texts = cleaned[cid]
        guesses = classifier.predict(texts)
        true += [cid] * len(texts)
        predicted += guesses
        others = [sim[labels.index(cid)][labels.index(o)] for o in ids if o != cid]
        lines = [t for t in canon_lines.get(cid, ()) if t.strip()]
        if lines:
            nearest = (vec.transform(texts) @ vec.transform(lines).T).max(axis=1).toarray().ravel()
            canon_sim = float(nearest.mean())
        else:
            canon_sim = float("nan")
        lengths = [len(t) for t in texts]
        character = characters[cid]
        per[cid] = CharacterMetrics(
            character=cid,
            n=len(texts),
            who_said_it=float(np.mean([g == cid for g in guesses])),
            self_ref_rate=float(np.mean([uses_self_ref(character, t) for t in texts])),
            broken_persona_rate=float(np.mean([broken_persona(t) is not None for t in texts])),
            distinctness=1.0 - float(np.mean(others)) if others else float("nan"),
            canon_similarity=canon_sim,
            mean_length=float(np.mean(lengths)),
            median_length=float(statistics.median(lengths)),
        )
    return Metrics(per, tuple(labels), classifier.confusion(true, predicted), tuple(tuple(r) for r in sim))

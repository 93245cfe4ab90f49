"""The novel as data: loader, attributed dialogue, exchanges, retrieval (see docs/canon.md).

Cheap to import: the heavy libraries (bm25s, numpy, OpenCC) load on first use.
"""

from xiyou.canon.core import EXTRACTOR_VERSION, Canon, Hit, build_canon, cache_root, get_canon, passage_of
from xiyou.canon.dialogue import UNKNOWN, Utterance, extract_utterances
from xiyou.canon.exchanges import Exchange
from xiyou.canon.loader import Chapter, Novel, NovelError, chapter_ref, load_novel, parse_text
from xiyou.names import CHARACTER_IDS

__all__ = [
    "CHARACTER_IDS",
    "EXTRACTOR_VERSION",
    "UNKNOWN",
    "Canon",
    "Chapter",
    "Exchange",
    "Hit",
    "Novel",
    "NovelError",
    "Utterance",
    "build_canon",
    "cache_root",
    "chapter_ref",
    "extract_utterances",
    "get_canon",
    "load_novel",
    "parse_text",
    "passage_of",
]

"""`Canon`: everything built from one novel (utterances, scenes, exchanges, indexes), and `get_canon()`.

Built once per novel: the extracted utterances and the BM25 indexes are cached on disk under
`$XIYOU_CACHE_DIR` (default `~/.cache/xiyou`) in `canon/<sha256 of the normalised text>-<extractor fingerprint>/`, and
in the process by path + mtime + size, so the second `get_canon()` is instant and the second process skips the
extraction and indexing.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import threading
from pathlib import Path

from xiyou.canon.dialogue import UNKNOWN, Utterance, extract_utterances
from xiyou.canon.exchanges import Exchange, assign_scenes, build_exchanges, xtuner_records
from xiyou.canon.index import Index, top_k
from xiyou.canon.loader import Novel, NovelError, chapter_ref, load_novel
from xiyou.io import write_bytes_atomic, write_dir_atomic
from xiyou.names import CHARACTER_IDS

#: Bump when the cache layout changes. The disk cache is also keyed by `extractor_fingerprint()`, so editing the
#: attribution rules or the characters' aliases invalidates it by itself.
EXTRACTOR_VERSION = 2  # 2: utterances as JSON (was a pickle)
#: How much of the novel before a line `Canon.passage` shows (then cut back to a sentence's start).
PASSAGE_BEFORE = 200


@functools.cache
def extractor_fingerprint() -> str:
    """A short hash of the code and data the extraction depends on (rules, quote scanner, index, aliases)."""
    from xiyou.character import load_characters

    h = hashlib.sha256(str(EXTRACTOR_VERSION).encode())
    here = Path(__file__).parent
    for name in ("dialogue.py", "quotes.py", "exchanges.py", "index.py"):
        h.update((here / name).read_bytes())
    h.update((here.parent / "names.py").read_bytes())
    for c in load_characters().values():  # the names the attribution reads (xiyou.names.narration_names …)
        fields = c.model_dump(
            include={
                "id", "name", "aliases", "narration_names", "ambiguous_in_narration", "narration_chapters",
                "unnamed_scenes",
            }
        )
        h.update(json.dumps(fields, ensure_ascii=False, sort_keys=True).encode())
    return h.hexdigest()[:12]


@dataclasses.dataclass(frozen=True)
class Hit:
    exchange: Exchange
    score: float

    @property
    def ref(self) -> str:
        """The chapter as the novel names it: 第二十七回."""
        return chapter_ref(self.exchange.chapter)

    @property
    def chapter(self) -> int:
        return self.exchange.chapter


def cache_root() -> Path:
    value = os.environ.get("XIYOU_CACHE_DIR", "").strip()
    return Path(value).expanduser() if value else Path.home() / ".cache" / "xiyou"


def _check_id(character_id: str) -> None:
    if character_id not in CHARACTER_IDS:
        raise KeyError(f"unknown character {character_id!r}; the canon has lines for: {', '.join(CHARACTER_IDS)}")


class Canon:
    """The novel as data: `.novel`, `.utterances`, `.exchanges(id)`, `.lines(id)`, `.search(id, query)`,
    `.records(id)`."""

    def __init__(self, novel: Novel, utterances: list[Utterance] | None = None, cache_dir: Path | None = None) -> None:
        self.novel = novel
        self.utterances: list[Utterance] = utterances if utterances is not None else extract_utterances(novel)
        self.scenes: list[int] = assign_scenes(self.utterances, texts={c.number: c.text for c in novel.chapters})
        self._exchanges = build_exchanges(self.utterances, self.scenes)
        self.cache_dir = cache_dir
        self._indexes: dict[tuple[str, str], Index] = {}
        self._lock = threading.Lock()

    # --- the data ---------------------------------------------------------------------------------------------

    def exchanges(self, character_id: str) -> list[Exchange]:
        _check_id(character_id)
        return self._exchanges[character_id]

    def lines(self, character_id: str) -> list[Utterance]:
        return [ex.reply for ex in self.exchanges(character_id)]

    def passage(
        self, chapter: int, line: str, before: int = PASSAGE_BEFORE, speaker: str | None = None
    ) -> tuple[str, str] | None:
        """Where `line` stands in `chapter`: (the text leading to it, from the start of a sentence about `before`
        characters earlier, with … when it does not begin the chapter; the line as the novel has it). None unless
        the chapter holds it exactly once, or `speaker` (a character id) says it exactly once there as a whole line
        (三藏's 贫僧不知。 stands twice in chapter 82, once his); None for an edited reply, or one cut too short to
        place, such as 师父，."""
        line = line.strip()
        try:
            text = self.novel.chapter(chapter).text
        except KeyError:
            return None
        at = text.find(line) if line else -1
        if at >= 0 and text.find(line, at + 1) >= 0:  # more than once: where he says it, if he says it once
            said = [u for u in self.utterances if u.chapter == chapter and u.speaker == speaker]
            said = [u for u in said if u.text.strip() == line]
            at = text.find(line, said[0].offset) if len(said) == 1 else -1
        if at < 0:
            return None
        lead = text[max(0, at - before) : at]
        if at > before:  # begin after the first sentence end in it, not mid-sentence
            ends = [i for i in (lead.find(mark) for mark in "。！？\n") if i >= 0]
            lead = "…" + (lead[min(ends) + 1 :].lstrip("”’」』") if ends else lead).strip()
        return lead.strip(), text[at : at + len(line)]

    def records(self, character_id: str, system: str | None = None) -> list[dict]:
        """XTuner conversation records; `system` defaults to the character's meta_instruction."""
        if system is None:
            from xiyou.character import get_character

            system = get_character(character_id).meta_instruction
        return xtuner_records(character_id, system, self.exchanges(character_id), self.utterances, self.scenes)

    def stats(self) -> dict:
        counts = {cid: len(self._exchanges[cid]) for cid in CHARACTER_IDS}
        unknown = sum(1 for u in self.utterances if u.speaker == UNKNOWN)
        others = len(self.utterances) - unknown - sum(counts.values())
        return {
            "chapters": len(self.novel.chapters),
            "missing_chapters": list(self.novel.missing_chapters),
            "utterances": len(self.utterances),
            "per_character": counts,
            "other_speakers": others,
            "unknown": unknown,
            "unknown_share": unknown / len(self.utterances) if self.utterances else 0.0,
            "encoding": self.novel.encoding,
            "sha256": self.novel.sha256,
        }

    # --- retrieval --------------------------------------------------------------------------------------------

    def index(self, character_id: str, field: str) -> Index:
        """The BM25 index over one character's exchange contexts (`field="context"`) or replies (`"reply"`)."""
        _check_id(character_id)
        if field not in ("context", "reply"):
            raise ValueError(f"field must be 'context' or 'reply', got {field!r}")
        key = (character_id, field)
        index = self._indexes.get(key)
        if index is not None:
            return index
        with self._lock:
            if key not in self._indexes:
                self._indexes[key] = self._load_or_build(character_id, field)
            return self._indexes[key]

    def _load_or_build(self, character_id: str, field: str) -> Index:
        target = self.cache_dir / f"index-{character_id}-{field}" if self.cache_dir else None
        exchanges = self._exchanges[character_id]
        if target is not None and target.exists():
            try:
                # bm25s keeps an index as JSON and .npy arrays, loaded with allow_pickle=False: nothing executes
                index = Index.load(target)
                if index.size == len(exchanges):
                    return index
            except Exception:  # a damaged cache is rebuilt (and replaced below), never fatal
                pass
        if field == "context":
            texts = [ex.context.text if ex.context else "" for ex in exchanges]
        else:
            texts = [ex.reply.text for ex in exchanges]
        index = Index.build(texts)
        if target is not None:
            try:
                write_dir_atomic(target, index.save)  # replaces a damaged directory as a whole
            except OSError:
                pass  # a read-only cache only costs speed
        return index

    def build_indexes(self) -> None:
        """Build (or load) every index now instead of on first search."""
        for cid in CHARACTER_IDS:
            for field in ("context", "reply"):
                self.index(cid, field)

    def chapter_mask(self, character_id: str, max_chapter: int | None, min_chapter: int | None = None):
        """Boolean mask over the character's exchanges: True for chapters within min_chapter..max_chapter (None
        for both: no mask)."""
        if max_chapter is None and min_chapter is None:
            return None
        import numpy as np

        low, high = min_chapter or 1, max_chapter if max_chapter is not None else 10**6
        return np.asarray([low <= ex.chapter <= high for ex in self.exchanges(character_id)], dtype=bool)

    def search(
        self,
        character_id: str,
        query: str,
        k: int = 5,
        field: str = "both",
        max_chapter: int | None = None,
        min_chapter: int | None = None,
    ) -> list[Hit]:
        """The k exchanges of the character that best match `query` (BM25 over context + reply), best first.

        `field`: "both" (default), "context" (what was said to the character) or "reply" (the character's words).
        `max_chapter`, `min_chapter`: only exchanges from chapters within them (masked before the top k is taken).
        """
        fields = ("context", "reply") if field == "both" else (field,)
        scores = None
        for f in fields:
            s = self.index(character_id, f).scores(query)
            scores = s if scores is None else scores + s
        exchanges = self._exchanges[character_id]
        allowed = self.chapter_mask(character_id, max_chapter, min_chapter)
        return [Hit(exchanges[i], float(scores[i])) for i in top_k(scores, k, allowed)]


# --- building and caching ---------------------------------------------------------------------------------------

#: The cache holds data only: JSON (utterances, bm25s vocabularies) and .npy arrays read without pickle, so a file
#: planted in a writable cache directory can at worst be refused and rebuilt, never run.
UTTERANCES_FILE = "utterances.json"
#: Temporary files and directories older than this in a cache directory are left by an interrupted write.
STALE_TEMP_SECONDS = 600
_ROW_TYPES = (int, int, str, str, str, int)  # Utterance: chapter, offset, speaker, text, name, end


def _read_utterances(path: Path, novel: Novel) -> list[Utterance] | None:
    """The cached utterances if the file is whole, for this novel and these rules; else None (rebuild).

    The file is two lines of JSON: a header (novel sha256, extractor fingerprint, count, sha256 of the second
    line) and the rows."""
    try:
        header_line, body = path.read_bytes().split(b"\n", 1)
        header = json.loads(header_line)
        if header.get("sha256") != novel.sha256 or header.get("extractor") != extractor_fingerprint():
            return None
        if header.get("checksum") != hashlib.sha256(body).hexdigest():
            return None
        rows = json.loads(body)
        if not isinstance(rows, list) or header.get("count") != len(rows):
            return None
        for row in rows:  # types as declared: a tampered file is refused, never half-used
            if len(row) != len(_ROW_TYPES) or not all(type(v) is t for v, t in zip(row, _ROW_TYPES)):
                return None
        return [Utterance(*row) for row in rows]
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def _utterances_cached(novel: Novel, cache_dir: Path | None) -> list[Utterance]:
    path = cache_dir / UTTERANCES_FILE if cache_dir else None
    if path is not None and path.is_file():
        cached = _read_utterances(path, novel)
        if cached is not None:
            return cached
    utterances = extract_utterances(novel)
    if path is not None:
        _prune_stale(cache_dir)
        body = json.dumps([dataclasses.astuple(u) for u in utterances], ensure_ascii=False, separators=(",", ":"))
        body_bytes = body.encode("utf-8")
        header = {
            "sha256": novel.sha256,
            "extractor": extractor_fingerprint(),
            "source": novel.path,
            "count": len(utterances),
            "checksum": hashlib.sha256(body_bytes).hexdigest(),
        }
        try:
            write_bytes_atomic(path, json.dumps(header, ensure_ascii=False).encode("utf-8") + b"\n" + body_bytes)
        except OSError:
            pass
    return utterances


def _clean_stale_temps(cache_dir: Path, max_age: float = STALE_TEMP_SECONDS) -> None:
    """Remove what interrupted writes left in `cache_dir` (hidden `.name.*` temp files and directories) once they
    are older than `max_age` seconds: several processes (apps, hub, CLI) share the cache, and a write in progress in
    another one is left alone. (`xiyou.io.write_dir_atomic` also clears its own target's temps before writing.)"""
    import shutil
    import time

    try:
        entries = [p for p in cache_dir.iterdir() if p.name.startswith(".")]
    except OSError:
        return
    now = time.time()
    for p in entries:
        try:
            if now - p.lstat().st_mtime > max_age:
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
        except OSError:
            continue


def _prune_stale(cache_dir: Path) -> None:
    """Remove the caches of the same novel built by older extraction rules (best effort)."""
    import shutil

    prefix = cache_dir.name.rsplit("-", 1)[0] + "-"
    try:
        stale = [p for p in cache_dir.parent.iterdir() if p.name.startswith(prefix) and p.name != cache_dir.name]
    except OSError:
        return
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)


def build_canon(novel: Novel, cache: bool = True) -> Canon:
    """A Canon for a loaded novel, reusing the disk cache for that text when `cache`."""
    cache_dir = cache_root() / "canon" / f"{novel.sha256[:24]}-{extractor_fingerprint()}" if cache else None
    if cache_dir is not None:
        _clean_stale_temps(cache_dir)
    return Canon(novel, _utterances_cached(novel, cache_dir), cache_dir=cache_dir)


_CANONS: dict[tuple[str, int, int], Canon] = {}
_CANONS_LOCK = threading.Lock()


def passage_of(chapter: int, line: str, speaker: str | None = None) -> tuple[str, str] | None:
    """`Canon.passage` in the novel of `XIYOU_NOVEL` (what a page or the terminal chat shows for a cited line of
    `speaker`); None also when there is no novel to read."""
    try:
        return get_canon().passage(chapter, line, speaker=speaker)
    except (NovelError, OSError):
        return None


def get_canon(path: str | os.PathLike[str] | None = None) -> Canon:
    """The Canon of the novel at `path` (None: `XIYOU_NOVEL`, else ../shared/data/xiyouji.txt).

    Cached per process (keyed by path, mtime and size) and on disk (keyed by the text's sha256). Raises NovelError
    when there is no novel or it cannot be read.
    """
    if path is None:
        from xiyou.env import novel_path

        path = novel_path()
        if path is None:
            raise NovelError(
                "no novel: set XIYOU_NOVEL to the path of 《西游记》's text (e.g. ../shared/data/xiyouji.txt)"
            )
    p = Path(path).expanduser().resolve()
    try:
        st = p.stat()
    except OSError:
        raise NovelError(f"{p}: no such file; set XIYOU_NOVEL or pass the novel's path") from None
    key = (str(p), st.st_mtime_ns, st.st_size)
    canon = _CANONS.get(key)
    if canon is not None:
        return canon
    with _CANONS_LOCK:
        canon = _CANONS.get(key)
        if canon is None:
            canon = build_canon(load_novel(p))
            _CANONS[key] = canon
            if canon.novel.missing_chapters:  # once per copy and process: where a person pointed XIYOU_NOVEL
                logging.getLogger(__name__).warning("%s: %s", p, canon.novel.missing_note())
    return canon

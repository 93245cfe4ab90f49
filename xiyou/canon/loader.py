"""Load the novel from whatever copy a user has: any common encoding, line ends, HTML, traditional characters.

Every variant of the same novel comes out as the same `Novel`: chapters numbered 1..N, each title normalised to
its two halves joined by a full-width space (`灵根育孕源流出　心性修持大道生`), each chapter's text as its
paragraphs (leading/trailing whitespace removed, empty lines dropped) joined by "\\n". Offsets of utterances are
character offsets into that chapter text, so they are stable across variants.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import html
import os
import re
import stat
from pathlib import Path

#: 《西游记》 has one hundred chapters (回).
NOVEL_CHAPTERS = 100


class NovelError(ValueError):
    """The file is missing, unreadable, or not the novel. The message says what was found and what to do."""


@dataclasses.dataclass(frozen=True)
class Chapter:
    number: int
    title: str
    text: str

    @property
    def ref(self) -> str:
        """The chapter as the novel names it: 第二十七回."""
        return chapter_ref(self.number)

    @property
    def heading(self) -> str:
        return f"{self.ref}　{self.title}" if self.title else self.ref


@dataclasses.dataclass(frozen=True)
class Novel:
    chapters: tuple[Chapter, ...]
    encoding: str  # what the file was decoded as (e.g. "utf-8", "gb18030", "big5")
    converted_from_traditional: bool
    path: str = ""

    @functools.cached_property
    def text(self) -> str:
        """The normalised text: each chapter's heading line, then its paragraphs."""
        return "\n".join(f"{c.heading}\n{c.text}" for c in self.chapters)

    @functools.cached_property
    def sha256(self) -> str:
        """sha256 of the normalised text: the same for every variant of the same novel."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    @functools.cached_property
    def missing_chapters(self) -> tuple[int, ...]:
        """The chapters of 1..NOVEL_CHAPTERS this copy lacks: its heading was not recognised (its text is then read
        as part of the chapter before) or the copy is partial."""
        have = {c.number for c in self.chapters}
        return tuple(n for n in range(1, NOVEL_CHAPTERS + 1) if n not in have)

    def missing_note(self) -> str:
        """One line on the missing chapters ("" when none), for a person who pointed XIYOU_NOVEL here."""
        missing = self.missing_chapters
        if not missing:
            return ""
        shown = "、".join(chapter_ref(n) for n in missing[:8])
        if len(missing) > 8:
            shown += f" … ({len(missing)} in all)"
        return (
            f"{len(self.chapters)} of the novel's {NOVEL_CHAPTERS} chapters; missing {shown}: a heading this loader "
            "did not recognise (that chapter's text is then read as part of the one before) or a partial copy"
        )

    def chapter(self, number: int) -> Chapter:
        for c in self.chapters:
            if c.number == number:
                return c
        raise KeyError(f"no chapter {number}; chapters run {self.chapters[0].number}..{self.chapters[-1].number}")


# --- Chinese numerals ------------------------------------------------------------------------------------------

_DIGITS = {
    "零": 0,
    "〇": 0,
    "○": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
_UNITS = {"十": 10, "百": 100, "千": 1000}
_NUM = "零〇○一二两三四五六七八九十百千0-9０-９"


def parse_number(s: str) -> int:
    """'二十七' -> 27, '一百' -> 100, '一零零' -> 100 (digit by digit), '017' -> 17, '１７' -> 17."""
    s = s.strip()
    if not s:
        raise ValueError("empty number")
    if s.isdigit():
        return int(s)  # int() accepts full-width digits too
    if not any(ch in _UNITS for ch in s):
        return int("".join(str(_DIGITS[ch]) for ch in s))
    total, current = 0, 0
    for ch in s:
        if ch in _DIGITS:
            current = _DIGITS[ch]
        elif ch in _UNITS:
            total += (current or 1) * _UNITS[ch]
            current = 0
        else:
            raise ValueError(f"not a number: {s!r}")
    return total + current


def chinese_number(n: int) -> str:
    """27 -> '二十七', 100 -> '一百', 10 -> '十' (as the novel writes chapter numbers)."""
    digits = "零一二三四五六七八九"
    if n <= 0:
        return str(n)
    if n < 10:
        return digits[n]
    if n < 20:
        return "十" + (digits[n - 10] if n > 10 else "")
    if n < 100:
        return digits[n // 10] + "十" + (digits[n % 10] if n % 10 else "")
    if n < 1000:
        rest = n % 100
        tail = (
            ""
            if rest == 0
            else (
                "零" + digits[rest]
                if rest < 10
                else digits[rest // 10] + "十" + (digits[rest % 10] if rest % 10 else "")
            )
        )
        return digits[n // 100] + "百" + tail
    return str(n)


def chapter_ref(number: int) -> str:
    return f"第{chinese_number(number)}回"


# --- decoding --------------------------------------------------------------------------------------------------

# Frequent characters of narrative Chinese, in simplified and traditional forms: a correct decode is full of them,
# a wrong one (Big5 bytes read as GBK, say) almost never hits them.
_COMMON = set(
    "的一是不了人我在有他这个们中来上大为和国地到以说时要就出会可也你对生能而子那得于着下自之年过发后"
    "作里用道行所然家种事成方多经么去法学如都同现当没动面起看定天分还进好小部其些主样理心她本前开但因只从"
    "想实日军者意无力它与长把机十民第公此已工使情明性知全三又关点正业外将两高间由问很最重并物手应战向头文"
    "体政美相见被利什二等产或新己制身果加西斯月话合回特代内信表化老给世位次度门任常先海通教儿原东声提立及"
    "比员解水名真论处走义各入几口认条平系气题活尔更别打女变四神总何电数安少报才结反受目太量再感建务做接必"
    "场件计管期市直德资命山金指克许统区保至队形社便空决治展马科司五基眼书非则听白却界达光放强即像难且权思"
    "王象完设式色路记南品住告类求据程北边死张该交规万取拉格望觉术领共确传师观清今切院让识候带导争运笑飞风"
    "步改收根干造言联持组每济车亲极林服快办议往元英士证近失转夫令准布始怎呢存未远叫台单影具罗字爱击流备兵"
    "連說這個們來對會時經發國過為學還進後麼於問長從當與見聽頭裡邊師兒話東萬將爾無開門馬讓"
)
_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


def _plausibility(text: str) -> float:
    sample = text[:200_000]
    cjk = _CJK.findall(sample)
    if not cjk:
        return 0.0
    return sum(ch in _COMMON for ch in cjk) / len(cjk)


def _strict(data: bytes, encoding: str) -> str:
    """Strict decode; a file cut inside its last character (an interrupted download) loses that character only."""
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        if e.start < len(data) - 4:
            raise
        return data[: e.start].decode(encoding)


def decode_bytes(data: bytes) -> tuple[str, str]:
    """Decode the novel's bytes; returns (text, encoding name).

    A UTF-8 BOM decides; otherwise strict UTF-8, then strict GB18030 and Big5, the most plausible (share of
    frequent Chinese characters) winning; last charset-normalizer's guess. Raises NovelError when nothing fits.
    """
    if data.startswith(b"\xef\xbb\xbf"):
        return _strict(data[3:], "utf-8"), "utf-8-sig"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16"), "utf-16"
    if b"\x00" in data[:4096]:
        raise NovelError("looks like a binary file (it has NUL bytes), not a text")
    try:
        return _strict(data, "utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    candidates: list[tuple[float, str, str]] = []
    for enc in ("gb18030", "big5hkscs"):
        try:
            text = _strict(data, enc)
        except UnicodeDecodeError:
            continue
        candidates.append((_plausibility(text), enc, text))
    if not candidates:
        from charset_normalizer import from_bytes

        best = from_bytes(data[:1_000_000]).best()
        if best is None:
            raise NovelError("the bytes decode as none of UTF-8, GB18030, Big5 (charset detection found nothing)")
        try:
            return data.decode(best.encoding), best.encoding
        except (UnicodeDecodeError, LookupError):
            raise NovelError(f"the bytes do not decode cleanly (best guess: {best.encoding})") from None
    _score, enc, text = max(candidates, key=lambda c: c[0])
    return text, ("big5" if enc == "big5hkscs" else enc)


# --- normalising -----------------------------------------------------------------------------------------------

_TAG = re.compile(r"<[^<>]{0,500}>")
_BLOCK_TAG = re.compile(r"<\s*/?\s*(?:p|br|div|h[1-6]|li|tr|section|article)\b[^<>]*>", re.IGNORECASE)
_HTML_HINT = re.compile(
    r"<\s*/?\s*(?:p|br|div|html|body|span|h[1-6])\b|&(?:nbsp|amp|lt|gt|quot|#\d+|#x[0-9a-f]+);", re.IGNORECASE
)
_STRIP = " \t\r\f\v\u3000\xa0\ufeff\u200b"


def _strip_html(text: str) -> str:
    text = re.sub(r"<\s*(script|style)\b.*?<\s*/\s*\1\s*>", "", text, flags=re.IGNORECASE | re.DOTALL)
    text = _BLOCK_TAG.sub("\n", text)
    text = _TAG.sub("", text)
    return html.unescape(text)


@functools.cache
def _t2s():
    import opencc

    return opencc.OpenCC("t2s")


def _is_traditional(text: str) -> bool:
    """True when OpenCC's t2s would change more than 2% of the Chinese characters (simplified text: ~0.03%)."""
    sample = "".join(_CJK.findall(text[:300_000]))
    if len(sample) < 50:
        return False
    converted = _t2s().convert(sample)
    changed = sum(a != b for a, b in zip(sample, converted)) + abs(len(sample) - len(converted))
    return changed / len(sample) > 0.02


_HEADING = re.compile(rf"^第\s*([{_NUM}]+)\s*回(?=$|[\s:：，,、．.·\-—]|[\u3400-\u9fff])(.*)$")
_TITLE_SEP = re.compile(r"[\s:：，,、；;．.·\-—]+")


def _parse_heading(line: str) -> tuple[int, str] | None:
    if len(line) > 80:
        return None
    m = _HEADING.match(line)
    if not m:
        return None
    try:
        number = parse_number(m.group(1))
    except (ValueError, KeyError):
        return None
    title = "　".join(p for p in _TITLE_SEP.split(m.group(2)) if p)
    return number, title


def parse_text(text: str, encoding: str = "utf-8", path: str = "") -> Novel:
    """Turn decoded text into a Novel (HTML stripped, traditional converted, headings parsed)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if _HTML_HINT.search(text[:200_000]):
        text = _strip_html(text)
    traditional = _is_traditional(text)
    if traditional:
        text = _t2s().convert(text)
    chapters: list[Chapter] = []
    current: tuple[int, str] | None = None
    body: list[str] = []
    for raw in text.split("\n"):
        line = raw.strip(_STRIP)
        if not line:
            continue
        heading = _parse_heading(line)
        if heading is not None and (current is None or heading[0] > current[0]):
            if current is not None:
                chapters.append(Chapter(current[0], current[1], "\n".join(body)))
            current, body = heading, []
        elif current is not None:
            body.append(line)
    if current is not None:
        chapters.append(Chapter(current[0], current[1], "\n".join(body)))
    where = f"{path}: " if path else ""
    if not chapters:
        cjk = len(_CJK.findall(text[:200_000]))
        raise NovelError(
            f"{where}found 0 chapters (no heading lines like '第一回　…' or '第017回 …') in {len(text):,} characters "
            f"decoded as {encoding} ({cjk:,} Chinese characters in the first 200,000); this does not look like "
            "the novel. Point XIYOU_NOVEL / --novel at the text of 《西游记》 (any of UTF-8, GB18030/GBK, Big5)."
        )
    return Novel(chapters=tuple(chapters), encoding=encoding, converted_from_traditional=traditional, path=path)


#: The novel is about 2.2 MB as UTF-8 (3 MB with HTML tags); a file many times that is not it.
MAX_NOVEL_BYTES = 32 * 1024 * 1024


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "a special file"


def read_novel_bytes(path: Path, limit: int = MAX_NOVEL_BYTES) -> bytes:
    """The bytes of the regular file at `path`, at most `limit` of them. Devices (/dev/zero), pipes (a FIFO would
    block) and oversized files raise NovelError: nothing is read from them."""
    try:
        # O_NONBLOCK: opening a FIFO does not wait for a writer; the check below refuses it.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise NovelError(f"{path}: no such file; set XIYOU_NOVEL or pass --novel with the novel's path") from None
    except IsADirectoryError:
        raise NovelError(f"{path}: is a directory; give the path of the novel's text file") from None
    except OSError as e:
        raise NovelError(f"{path}: cannot read the file: {e.strerror or e}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        kind = _file_kind(st.st_mode)
        raise NovelError(f"{path}: is {kind}, not a text file; give the path of the novel's text file")
    with os.fdopen(fd, "rb") as f:
        if st.st_size > limit:
            raise NovelError(
                f"{path}: {st.st_size:,} bytes is too big for the novel (at most {limit:,}); is this the novel's text?"
            )
        try:
            data = f.read(limit + 1)
        except OSError as e:
            raise NovelError(f"{path}: cannot read the file: {e.strerror or e}") from None
    if len(data) > limit:  # it grew while we read
        raise NovelError(f"{path}: more than {limit:,} bytes is too big for the novel; is this the novel's text?")
    return data


def load_novel(path: str | Path) -> Novel:
    """Load the novel from `path`; raises NovelError (missing, unreadable, not a regular file, too big, not the
    novel) with what was found."""
    path = Path(path).expanduser()
    data = read_novel_bytes(path)
    if not data.strip():
        raise NovelError(f"{path}: the file is empty; found 0 chapters")
    try:
        text, encoding = decode_bytes(data)
    except NovelError as e:
        raise NovelError(f"{path}: {e}; found 0 chapters. Is this the novel's text?") from None
    except UnicodeDecodeError as e:
        raise NovelError(f"{path}: cannot decode the text ({e}); found 0 chapters") from None
    return parse_text(text, encoding=encoding, path=str(path))

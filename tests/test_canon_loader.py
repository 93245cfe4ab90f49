"""The loader: every variant of the novel a user may have gives the same chapters and the same attributed lines.

The variants are generated here from the shared novel (never stored): GB18030 + CRLF, UTF-8 with BOM, HTML
paragraphs with entities, other heading forms, traditional characters (UTF-8 and Big5).
"""

from __future__ import annotations

import html
import random
import re
from pathlib import Path

import pytest

from xiyou.canon import Novel, NovelError, extract_utterances, load_novel
from xiyou.canon.loader import chinese_number, parse_number


@pytest.fixture(scope="module")
def raw(novel_path: Path) -> str:
    return novel_path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def base(novel_path: Path) -> Novel:
    return load_novel(novel_path)


@pytest.fixture(scope="module")
def base_lines(base: Novel) -> list[tuple[int, int, str, str]]:
    return [(u.chapter, u.offset, u.speaker, u.text) for u in extract_utterances(base)]


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _assert_same(novel: Novel, base: Novel, base_lines) -> None:
    assert [c.number for c in novel.chapters] == list(range(1, 101))
    assert [c.title for c in novel.chapters] == [c.title for c in base.chapters]
    assert novel.chapters == base.chapters
    assert novel.sha256 == base.sha256
    assert [(u.chapter, u.offset, u.speaker, u.text) for u in extract_utterances(novel)] == base_lines


def test_shared_novel_has_100_chapters_and_is_not_converted(base: Novel, raw: str) -> None:
    assert len(base.chapters) == 100
    assert base.chapters[0].number == 1 and base.chapters[-1].number == 100
    assert base.chapters[0].heading == "第一回　灵根育孕源流出　心性修持大道生"
    assert base.chapters[99].ref == "第一百回"
    assert base.encoding == "utf-8" and not base.converted_from_traditional
    # The simplified text comes out unchanged: every paragraph of the file is in the chapters, character for character.
    paragraphs = [line.strip() for line in raw.splitlines() if line.strip()]
    body = "\n".join(p for p in paragraphs if not re.match(r"^第[一二三四五六七八九十百]+回", p) and p != "《西游记》")
    assert "\n".join(c.text for c in base.chapters) == body


def test_gb18030_with_crlf(tmp_path: Path, raw: str, base: Novel, base_lines) -> None:
    path = _write(tmp_path, "gb.txt", raw.replace("\n", "\r\n").encode("gb18030"))
    novel = load_novel(path)
    assert novel.encoding == "gb18030"
    _assert_same(novel, base, base_lines)


def test_utf8_with_bom(tmp_path: Path, raw: str, base: Novel, base_lines) -> None:
    novel = load_novel(_write(tmp_path, "bom.txt", b"\xef\xbb\xbf" + raw.encode("utf-8")))
    assert novel.encoding == "utf-8-sig"
    _assert_same(novel, base, base_lines)


def test_html_paragraphs_and_entities(tmp_path: Path, raw: str, base: Novel, base_lines) -> None:
    body = "\n".join(f"<p>&nbsp;&nbsp;{html.escape(line.strip(), quote=False)}</p>" for line in raw.splitlines())
    page = f"<!DOCTYPE html><html><head><title>西游记</title></head><body>\n{body}\n</body></html>"
    _assert_same(load_novel(_write(tmp_path, "novel.html", page.encode("utf-8"))), base, base_lines)


def _reheading(raw: str, form) -> str:
    def repl(m: re.Match[str]) -> str:
        return form(parse_number(m.group(1)), m.group(2), m.group(3))

    return re.sub(r"^第([一二三四五六七八九十百]+)回　(\S+)　(\S+)$", repl, raw, flags=re.MULTILINE)


@pytest.mark.parametrize(
    "form",
    [
        lambda n, a, b: f"第{chinese_number(n)}回：{a}，{b}",
        lambda n, a, b: f"第{n:03d}回 {a} {b}",
        lambda n, a, b: f"第{''.join('零一二三四五六七八九'[int(d)] for d in str(n))}回　{a}　{b}",
        lambda n, a, b: f"  第{n}回  {a}  {b}  ",
    ],
    ids=["colon-comma", "zero-padded", "digit-by-digit", "arabic-spaced"],
)
def test_other_heading_forms(tmp_path: Path, raw: str, base: Novel, base_lines, form) -> None:
    text = _reheading(raw, form)
    assert text != raw
    _assert_same(load_novel(_write(tmp_path, "h.txt", text.encode("utf-8"))), base, base_lines)


def test_traditional_is_converted_to_simplified(tmp_path: Path, raw: str, base: Novel) -> None:
    import opencc

    traditional = opencc.OpenCC("s2t").convert(raw)
    novel = load_novel(_write(tmp_path, "trad.txt", traditional.encode("utf-8")))
    assert novel.converted_from_traditional
    assert [c.number for c in novel.chapters] == list(range(1, 101))
    # s2t -> t2s is not a perfect round trip (馀/余, 徵/征 …): the text may differ in a few characters per ten
    # thousand, never in length or structure.
    a, b = "\n".join(c.text for c in novel.chapters), "\n".join(c.text for c in base.chapters)
    assert len(a) == len(b)
    assert sum(x != y for x, y in zip(a, b)) / len(b) < 0.001
    same_speaker = sum(
        (u.chapter, u.offset, u.speaker) == (v.chapter, v.offset, v.speaker)
        for u, v in zip(extract_utterances(novel), extract_utterances(base))
    )
    assert same_speaker / len(extract_utterances(base)) > 0.995


def test_big5_reads_like_the_same_text_in_utf8(tmp_path: Path, raw: str) -> None:
    import opencc

    # Big5 lacks a few rare characters of the novel: both files get the same '?' for them.
    traditional = opencc.OpenCC("s2t").convert(raw).encode("big5", errors="replace").decode("big5")
    from_big5 = load_novel(_write(tmp_path, "big5.txt", traditional.encode("big5")))
    from_utf8 = load_novel(_write(tmp_path, "utf8.txt", traditional.encode("utf-8")))
    assert from_big5.encoding == "big5"
    assert from_big5.chapters == from_utf8.chapters
    assert len(from_big5.chapters) == 100


def test_gbk_excerpt(tmp_path: Path, raw: str) -> None:
    excerpt = "\n".join(raw.splitlines()[:200])
    data = excerpt.encode("gbk", errors="ignore")
    novel = load_novel(_write(tmp_path, "gbk.txt", data))
    assert novel.encoding == "gb18030"
    assert novel.chapters[0].title == "灵根育孕源流出　心性修持大道生"


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("random.bin", random.Random(3).randbytes(50_000), r"0 chapters"),
        ("nul.bin", b"\x00\x01\x02binary" * 1000, r"binary .*0 chapters"),
        ("empty.txt", b"", r"empty; found 0 chapters"),
        ("notes.txt", "这是一份购物清单：苹果、香蕉、牛奶。\n明天再买。\n".encode(), r"0 chapters .* decoded as utf-8"),
        ("latin.txt", b"Call me Ishmael. " * 2000, r"0 chapters .* decoded as utf-8"),
    ],
)
def test_unreadable_or_non_novel_input_fails_clearly(tmp_path: Path, name: str, data: bytes, expected: str) -> None:
    path = _write(tmp_path, name, data)
    with pytest.raises(NovelError, match=expected) as err:
        load_novel(path)
    assert str(path) in str(err.value)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(NovelError, match=r"no such file.*XIYOU_NOVEL"):
        load_novel(tmp_path / "absent.txt")
    with pytest.raises(NovelError, match="directory"):
        load_novel(tmp_path)


def test_truncated_gb18030_still_loads(tmp_path: Path, raw: str) -> None:
    excerpt = "\n".join(raw.splitlines()[:120]).encode("gb18030")
    novel = load_novel(_write(tmp_path, "cut.txt", excerpt[:-1]))  # a download cut in the middle of a character
    assert novel.encoding == "gb18030"
    assert novel.chapters[0].number == 1


def test_numbers() -> None:
    assert [parse_number(s) for s in ("一", "十", "十七", "二十七", "九十九", "一百", "一零零", "017", "１７")] == [
        1,
        10,
        17,
        27,
        99,
        100,
        100,
        17,
        17,
    ]
    assert [chinese_number(n) for n in (1, 10, 17, 27, 100)] == ["一", "十", "十七", "二十七", "一百"]

"""Retrieval, exchanges, XTuner records, caching (disk and process), get_canon, retrieval-augmented prompts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import xiyou.canon.core as core
from xiyou.canon import Canon, NovelError, build_canon, get_canon, load_novel
from xiyou.canon.index import Index, tokenize
from xiyou.canon.rag import augment_messages
from xiyou.character import get_character


def test_tokenize_is_unigrams_and_bigrams() -> None:
    assert tokenize("师父，救我！ok") == ["师", "父", "师父", "救", "我", "救我", "ok"]


def test_search_finds_the_exchange_of_a_quoted_context(canon: Canon) -> None:
    for cid in ("sanzang", "wukong", "bajie", "wujing"):
        exchanges = [ex for ex in canon.exchanges(cid) if ex.context and len(ex.context.text) > 25]
        target = exchanges[len(exchanges) // 2]
        hits = canon.search(cid, target.context.text, k=5)
        assert hits and len(hits) <= 5
        assert target.context.text in {h.exchange.context.text for h in hits if h.exchange.context}
        assert hits[0].score >= hits[-1].score
        assert hits[0].ref.startswith("第") and hits[0].ref.endswith("回")


def test_search_results_are_the_characters_own_lines(canon: Canon) -> None:
    hits = canon.search("bajie", "师父，我肚里饥了，化些斋饭来吃", k=5)
    assert hits
    assert all(h.exchange.reply.speaker == "bajie" for h in hits)
    assert canon.search("bajie", "qqq zzz") == []  # nothing in common: no hits rather than noise
    with pytest.raises(KeyError, match="unknown character"):
        canon.search("guanyin", "你好")


def test_exchanges_have_context_scene_and_stable_ids(canon: Canon) -> None:
    exchanges = canon.exchanges("wukong")
    assert len({ex.id for ex in exchanges}) == len(exchanges)
    with_context = [ex for ex in exchanges if ex.context is not None]
    assert len(with_context) > 0.8 * len(exchanges)
    for ex in with_context[::50]:
        assert ex.context.speaker != "wukong"
        assert (ex.context.chapter, ex.context.offset) < (ex.reply.chapter, ex.reply.offset)
        assert ex.chapter == ex.reply.chapter == ex.context.chapter
    assert canon.lines("wukong") == [ex.reply for ex in exchanges]


def test_xtuner_records(canon: Canon, tmp_path: Path) -> None:
    system = get_character("wujing").meta_instruction
    records = canon.records("wujing")
    assert len({r["id"] for r in records}) == len(records)
    multi = [r for r in records if len(r["conversation"]) > 1]
    assert multi, "scenes give multi-turn records"
    for r in records:
        first, *rest = r["conversation"]
        assert first["system"] == system
        assert all("system" not in turn for turn in rest)
        assert all(turn["input"] and turn["output"] for turn in r["conversation"])
        json.dumps(r, ensure_ascii=False)
    lines = {u.text for u in canon.lines("wujing")}
    assert all(r["conversation"][0]["output"] in lines for r in records if len(r["conversation"]) == 1)


def test_disk_cache_is_used_by_the_next_build(novel_path: Path, tmp_path: Path, monkeypatch) -> None:
    # A build of its own: the session canon may come from the process cache, built before any test set its dir.
    cache_dir = tmp_path
    monkeypatch.setenv("XIYOU_CACHE_DIR", str(cache_dir))
    canon = build_canon(load_novel(novel_path))
    canon.build_indexes()
    entries = list((cache_dir / "canon").iterdir())
    assert len(entries) == 1 and entries[0].name.startswith(canon.novel.sha256[:24])
    assert (entries[0] / "utterances.json").is_file()
    assert (entries[0] / "index-wukong-context").is_dir()

    def no(*args, **kwargs):
        raise AssertionError("should have come from the cache")

    monkeypatch.setattr(core, "extract_utterances", no)
    monkeypatch.setattr(Index, "build", classmethod(no))
    again = build_canon(load_novel(novel_path))
    assert again.utterances == canon.utterances
    query = "师父被妖精拿去了"
    assert [h.exchange.id for h in again.search("wukong", query)] == [
        h.exchange.id for h in canon.search("wukong", query)
    ]


def test_damaged_cache_is_rebuilt(novel_path: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XIYOU_CACHE_DIR", str(tmp_path))
    first = build_canon(load_novel(novel_path))
    entry = next((tmp_path / "canon").iterdir())
    (entry / "utterances.json").write_bytes(b'{"truncated": ')
    stale = entry.with_name(entry.name.rsplit("-", 1)[0] + "-000000000000")  # built by older extraction rules
    stale.mkdir()
    assert build_canon(load_novel(novel_path)).utterances == first.utterances
    assert not stale.exists()


def test_get_canon_is_cached_per_process(novel_path: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XIYOU_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("XIYOU_NOVEL", str(novel_path))
    first = get_canon()
    assert get_canon() is first
    assert get_canon(novel_path) is first


def test_get_canon_without_a_novel_says_what_to_do(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XIYOU_NOVEL", str(tmp_path / "absent.txt"))
    with pytest.raises(NovelError, match=r"absent\.txt"):
        get_canon()
    monkeypatch.delenv("XIYOU_NOVEL")
    monkeypatch.setattr("xiyou.env.novel_path", lambda: None)
    with pytest.raises(NovelError, match="XIYOU_NOVEL"):
        get_canon()


def test_augment_messages_puts_examples_in_the_system_prompt(canon: Canon) -> None:
    wukong = get_character("wukong")
    messages = [{"role": "system", "content": wukong.meta_instruction}, {"role": "user", "content": "师父被妖精拿去了"}]
    out = augment_messages(wukong, messages, canon)
    assert out[1:] == messages[1:] and messages[0]["content"] == wukong.meta_instruction  # input untouched
    system = out[0]["content"]
    assert system.startswith(wukong.meta_instruction)
    hits = canon.search("wukong", "师父被妖精拿去了", k=5)
    assert hits[0].exchange.reply.text in system and hits[0].ref in system
    assert len(system) - len(wukong.meta_instruction) <= 1500

    small = augment_messages(wukong, messages, canon, token_budget=200)[0]["content"]
    assert len(small) - len(wukong.meta_instruction) <= 200
    assert augment_messages(wukong, messages, canon, k=0) == messages

    no_system = augment_messages(wukong, messages[1:], canon)
    assert no_system[0]["role"] == "system" and no_system[0]["content"].startswith(wukong.meta_instruction)


def test_a_short_excerpt_works_even_without_lines_for_someone(novel_path: Path, tmp_path: Path, monkeypatch) -> None:
    from xiyou.canon import parse_text

    monkeypatch.setenv("XIYOU_CACHE_DIR", str(tmp_path))
    raw = novel_path.read_text(encoding="utf-8")
    first_chapter = raw[: raw.index("第二回")]  # 悟空 (as 石猴/猴王) speaks; 八戒 does not yet exist
    canon = build_canon(parse_text(first_chapter))
    assert canon.exchanges("bajie") == [] and canon.search("bajie", "师父") == []
    assert canon.search("wukong", "花果山水帘洞")
    again = build_canon(parse_text(first_chapter))  # from the disk cache, empty index included
    assert again.search("bajie", "师父") == []

"""Who can speak: canon mode on the shared novel, endpoints mixed with canon, unavailable members, retrieval."""

from __future__ import annotations

from pathlib import Path

import pytest

from xiyou.character import load_characters
from xiyou.room import Room, TurnEnded
from xiyou.room.lineup import LineupError, build_lineup, canon_retriever, load_canon

C = load_characters()


@pytest.fixture(autouse=True)
def _no_env_endpoints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XIYOU_ENDPOINTS", raising=False)


def test_canon_mode_seats_everyone_on_the_novel(novel_path: Path) -> None:
    lineup = build_lineup(None, None, novel_path)
    assert lineup.mode == "canon" and lineup.available
    assert list(lineup.seats) == ["sanzang", "wukong", "bajie", "wujing"]
    from xiyou.backends.canon import CanonBackend
    from xiyou.room.lineup import CANON_TIMEOUT_S

    for cid, seat in lineup.seats.items():
        assert seat.kind == "canon" and isinstance(seat.backend, CanonBackend) and seat.timeout == CANON_TIMEOUT_S
        assert seat.backend.character.id == cid and seat.unavailable is None
    assert "canon mode" in lineup.describe()


def test_endpoints_and_canon_mix_and_a_missing_novel_makes_members_unavailable(tmp_path: Path) -> None:
    endpoints = tmp_path / "endpoints.toml"
    endpoints.write_text(
        '[wukong]\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "wukong-lora"\ntimeout = 7\n', encoding="utf-8"
    )
    lineup = build_lineup(["wukong", "bajie"], endpoints, tmp_path / "no-novel.txt")
    assert lineup.mode == "endpoints"
    from xiyou.backends.openai_backend import OpenAIBackend
    from xiyou.room.lineup import TIMEOUT_MARGIN_S

    wukong = lineup.seats["wukong"]
    assert wukong.kind == "openai" and isinstance(wukong.backend, OpenAIBackend)
    assert (wukong.backend.base_url, wukong.backend.model, wukong.backend.timeout) == (
        "http://127.0.0.1:9/v1",
        "wukong-lora",
        7.0,
    )
    assert wukong.timeout == 7.0 + TIMEOUT_MARGIN_S  # the room waits a little longer than the client
    assert wukong.on_model and lineup.member("wukong", retriever=len).retriever is len  # canon hints for models
    bajie = lineup.seats["bajie"]
    assert bajie.backend is None and bajie.kind == "none"
    assert "no table for bajie" in (bajie.unavailable or "") and "no-novel.txt" in bajie.unavailable
    member = lineup.member("bajie")
    assert not member.active and member.unavailable == bajie.unavailable
    assert [([c.id for c in chars], why) for chars, why in lineup.problems()] == [(["bajie"], bajie.unavailable)]


def test_members_who_cannot_speak_for_one_reason_are_told_it_once(tmp_path: Path) -> None:
    """No novel and no endpoints: the four share one reason, and the page and the CLI say it once, naming all four."""
    lineup = build_lineup(None, None, tmp_path / "no-novel.txt")
    assert not lineup.available
    ((chars, why),) = lineup.problems()
    assert [c.id for c in chars] == ["sanzang", "wukong", "bajie", "wujing"] and "no-novel.txt" in why


def test_bad_ids_and_bad_files_raise_lineup_errors(tmp_path: Path, novel_path: Path) -> None:
    with pytest.raises(LineupError, match="unknown character 'erlang'"):
        build_lineup(["erlang"], None, novel_path)
    bad = tmp_path / "e.toml"
    bad.write_text("[erlang]\nbackend = 'canon'\n", encoding="utf-8")
    with pytest.raises(LineupError, match="erlang"):
        build_lineup(None, bad, novel_path)


def test_canon_retrieval_reaches_a_model_members_prompt(novel_path: Path) -> None:
    canon, why = load_canon(novel_path)
    assert canon is not None, why
    retriever = canon_retriever(canon)
    assert retriever is not None
    seen = []

    class Recorder:
        label = "recorder"

        def stream(self, messages, settings, cancel=None):
            seen.append(messages)
            yield "好"

    from xiyou.room.member import Member

    room = Room([Member(C["bajie"], Recorder(), retriever=retriever)], banter_turns=0)
    room.say("八戒，高老庄的媳妇你还想不想？")
    assert any(isinstance(e, TurnEnded) for e in room.run())
    system = seen[0][0]["content"]
    assert system.startswith(C["bajie"].meta_instruction) and "【群聊】" in system
    from xiyou.canon.rag import HEADER

    assert HEADER.format(name="猪八戒") in system  # canon passages were added after the room preamble
    assert system.index("【群聊】") < system.index(HEADER.format(name="猪八戒"))

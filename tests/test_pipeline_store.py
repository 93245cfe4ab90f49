"""The resumable JSONL store: whole-line appends, torn-line repair, no duplicate ids."""

from __future__ import annotations

import json

import pytest

from pipeline.store import JsonlStore, StoreError, existing_ids, read_jsonl


def test_append_resume_and_no_duplicates(tmp_path):
    path = tmp_path / "out.jsonl"
    with JsonlStore(path) as store:
        assert store.append({"id": "a", "x": "孙悟空"})
        assert store.append({"id": "b", "x": 2})
        assert not store.append({"id": "a", "x": "again"})  # refused: already there
    with JsonlStore(path) as store:  # a restart sees what exists
        assert "a" in store and "b" in store and "c" not in store
        assert len(store) == 2
        assert not store.append({"id": "b"})
        assert store.append({"id": "c"})
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["a", "b", "c"]
    assert json.loads(lines[0])["x"] == "孙悟空"  # readable UTF-8, not \\u escapes
    assert "孙悟空" in lines[0]


def test_torn_last_line_is_repaired(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"id": "a"}\n{"id": "b"}\n{"id": "c", "conversat')  # killed inside a write
    with JsonlStore(path) as store:
        assert store.ids == {"a", "b"}
        assert store.repaired_bytes > 0
        store.append({"id": "c", "ok": True})
    assert [r["id"] for r in read_jsonl(path)] == ["a", "b", "c"]
    assert all(json.loads(line) for line in path.read_text().splitlines())


def test_damage_in_the_middle_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": "a"}\nnot json\n{"id": "c"}\n')
    with pytest.raises(StoreError, match=r"out.jsonl, line 2"):
        JsonlStore(path).open()
    path.write_text('{"id": "a"}\n{"no_id": 1}\n')
    with pytest.raises(StoreError, match=r"line 2: a record must be a JSON object with a string 'id'"):
        JsonlStore(path).open()


def test_records_and_existing_ids(tmp_path):
    path = tmp_path / "sub" / "out.jsonl"
    assert existing_ids(path) == set()
    with JsonlStore(path) as store:
        for i in range(5):
            store.append({"id": f"r{i}", "n": i})
        assert [r["n"] for r in store.records()] == [0, 1, 2, 3, 4]
    assert existing_ids(path) == {f"r{i}" for i in range(5)}


def test_append_needs_an_id(tmp_path):
    with JsonlStore(tmp_path / "o.jsonl") as store, pytest.raises(ValueError, match="'id'"):
        store.append({"conversation": []})


def test_two_writers_on_one_file_are_refused(tmp_path):
    path = tmp_path / "out.jsonl"
    with JsonlStore(path) as first:
        first.append({"id": "a"})
        with pytest.raises(StoreError, match="another run is writing to this file"):
            JsonlStore(path).open()
    with JsonlStore(path) as again:  # free once the first run is done
        assert "a" in again

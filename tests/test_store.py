"""The conversation store: migrations, round trips, both stores alike, and a killed writer."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from xiyou import store as store_mod
from xiyou.store import (
    MIGRATIONS,
    Alternative,
    MemoryStore,
    SQLiteStore,
    StoredMessage,
    StoreError,
    migrate,
    open_store,
)


@pytest.fixture(params=["sqlite", "memory"])
def any_store(request, tmp_path):
    return SQLiteStore(tmp_path / "c.db") if request.param == "sqlite" else MemoryStore()


def test_migrations_are_recorded_once_in_order(tmp_path):
    path = tmp_path / "c.db"
    first = SQLiteStore(path)
    assert first.migrations() == [name for name, _ in MIGRATIONS]
    with sqlite3.connect(path, isolation_level=None) as conn:
        assert migrate(conn, path) == []  # nothing left to apply
        count = conn.execute("SELECT count(*) FROM _migrations").fetchone()[0]
    assert count == len(MIGRATIONS)
    assert SQLiteStore(path).migrations() == first.migrations()


def test_an_old_database_is_migrated_and_keeps_its_rows(tmp_path):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied REAL NOT NULL)")
    for name, script in MIGRATIONS[:2]:  # a file written before alternatives and presence existed
        for statement in store_mod._split_statements(script):
            conn.execute(statement)
        conn.execute("INSERT INTO _migrations VALUES (?, ?)", (name, time.time()))
    conn.execute("INSERT INTO conversations VALUES ('abc', 'room', 'old room', 1, 1, '{}')")
    conn.execute(
        "INSERT INTO messages (conversation, speaker, name, text, time) "
        "VALUES ('abc', 'wukong', '孙悟空', '俺老孙来也', 2)"
    )
    conn.close()
    store = SQLiteStore(path)
    assert store.migrations()[-1] == MIGRATIONS[-1][0]
    (message,) = store.messages("abc")
    assert (message.text, message.selected) == ("俺老孙来也", 0)


def test_a_database_from_a_newer_version_is_refused(tmp_path):
    path = tmp_path / "new.db"
    SQLiteStore(path)
    with sqlite3.connect(path, isolation_level=None) as conn:
        conn.execute("INSERT INTO _migrations VALUES ('m999_future', 0)")
    with pytest.raises(StoreError, match=r"newer version.*m999_future.*XIYOU_DATA_DIR"):
        SQLiteStore(path)


def test_a_file_that_is_not_a_database_is_an_error_naming_it(tmp_path):
    path = tmp_path / "c.db"
    path.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(StoreError, match=r"c\.db.*XIYOU_DATA_DIR"):
        SQLiteStore(path)


def test_round_trip(any_store):
    room = any_store.create("room", "  师徒  群聊 ", {"members": ["wukong", "bajie"], "policy": "mention"})
    chat = any_store.create("private", "和悟空", {"character": "wukong"})
    assert room.title == "师徒 群聊" and len(room.id) >= 20 and room.id != chat.id
    person = any_store.add_message(room.id, StoredMessage("person", "小明", "八戒，你又偷懒？", present=["bajie"]))
    reply = any_store.add_message(room.id, StoredMessage("bajie", "猪八戒", "哥啊", chapter=27, said_to="唐僧"))
    assert person.id is not None and reply.id is not None and person.id != reply.id
    reply.add_alternative(Alternative("师父，我不曾偷懒", 19, None))
    any_store.update_message(room.id, reply)
    got = any_store.messages(room.id)
    assert [m.text for m in got] == ["八戒，你又偷懒？", "师父，我不曾偷懒"]
    assert [a.text for a in got[1].alternatives] == ["哥啊", "师父，我不曾偷懒"]
    assert (got[0].present, got[1].present) == (["bajie"], None)
    assert (got[1].selected, got[1].chapter) == (1, 19)
    got[1].select(0)
    any_store.update_message(room.id, got[1])
    assert any_store.messages(room.id)[1].said_to == "唐僧"
    # edit and delete
    first = any_store.messages(room.id)[0]
    first.edit("八戒，你在做什么？")
    any_store.update_message(room.id, first)
    second = any_store.messages(room.id)[1]
    second.deleted = True
    any_store.update_message(room.id, second)
    shown = any_store.messages(room.id)
    assert [(m.text, m.edited) for m in shown] == [("八戒，你在做什么？", True)]
    assert len(any_store.messages(room.id, include_deleted=True)) == 2
    # settings, rename, list, the other conversation untouched
    any_store.save_settings(room.id, {"members": ["bajie"], "mutes": ["bajie"], "person": "小明"})
    any_store.rename(room.id, "高老庄")
    again = any_store.get(room.id)
    assert again.title == "高老庄" and again.settings["mutes"] == ["bajie"]
    assert {c.id for c in any_store.list()} == {room.id, chat.id}
    assert [c.id for c in any_store.list("private")] == [chat.id]
    assert any_store.messages(chat.id) == []
    # import replaces, delete removes
    imported = any_store.replace_messages(chat.id, [StoredMessage("person", "施主", "大圣好")])
    assert [m.text for m in any_store.messages(chat.id)] == ["大圣好"] and imported[0].id is not None
    any_store.delete(room.id)
    assert any_store.get(room.id) is None and any_store.messages(room.id) == []
    with pytest.raises(KeyError):
        any_store.add_message(room.id, StoredMessage("person", "施主", "还在吗"))


def test_a_sqlite_store_is_seen_by_another_process_instance(tmp_path):
    a = SQLiteStore(tmp_path / "c.db")
    conv = a.create("private", "和八戒", {"character": "bajie"})
    a.add_message(conv.id, StoredMessage("person", "施主", "吃了吗"))
    b = SQLiteStore(tmp_path / "c.db")
    assert [m.text for m in b.messages(conv.id)] == ["吃了吗"]
    assert a.integrity_check() == "ok"


def test_open_store_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("XIYOU_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("XIYOU_PERSIST", raising=False)
    store = open_store()
    assert isinstance(store, SQLiteStore) and store.path == tmp_path / "data" / "conversations.db"
    monkeypatch.setenv("XIYOU_PERSIST", "0")
    one, two = open_store(), open_store()
    assert isinstance(one, MemoryStore)
    one.create("room", "mine")
    assert two.list() == []  # one visitor never sees another's chats
    monkeypatch.delenv("XIYOU_DATA_DIR")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert store_mod.data_dir() == tmp_path / "xdg" / "xiyou"


def test_an_unwritable_data_dir_says_what_to_do(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="XIYOU_DATA_DIR"):
        SQLiteStore(blocker / "sub" / "c.db")


WRITER = textwrap.dedent(
    """
    import sys, time
    from xiyou.store import SQLiteStore, StoredMessage
    store = SQLiteStore(sys.argv[1])
    conv = store.create("room", "killed")
    for i in range(5):
        store.add_message(conv.id, StoredMessage("person", "施主", f"earlier {i}"))
    print(conv.id, flush=True)
    i = 0
    while True:  # a busy writer: messages, edits, settings, as fast as it can
        m = store.add_message(conv.id, StoredMessage("wukong", "孙悟空", "俺老孙" * 200 + str(i)))
        m.edit(m.text + "!")
        store.update_message(conv.id, m)
        store.save_settings(conv.id, {"n": i})
        i += 1
    """
)


@pytest.mark.parametrize("delay", [0.05, 0.3])
def test_a_killed_writer_loses_nothing_that_was_stored(tmp_path, delay):
    path = tmp_path / "c.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parent.parent), *sys.path])}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        conversation_id = proc.stdout.readline().strip()
        assert conversation_id, "the writer did not start"
        time.sleep(delay)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    store = SQLiteStore(path)
    assert store.integrity_check() == "ok"
    texts = [m.text for m in store.messages(conversation_id)]
    assert texts[:5] == [f"earlier {i}" for i in range(5)]
    assert len(texts) > 5  # it was killed in the middle of writing, not before
    assert all(t.endswith("!") for t in texts[5:-1])  # every reply but possibly the last is complete

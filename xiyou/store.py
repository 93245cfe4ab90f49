"""Conversations that persist: private chats and group rooms, their messages and settings, in one SQLite file.

    store = open_store()                      # XIYOU_DATA_DIR/conversations.db, or in memory (XIYOU_PERSIST=0)
    conv = store.create("private", "和悟空聊天", {"character": "wukong"})
    store.add_message(conv.id, StoredMessage("person", "施主", "大圣好"))
    store.messages(conv.id)                   # in order, deleted ones left out

- One file, stdlib `sqlite3` in WAL mode; every write is one transaction, so a killed server loses at most the
  reply being streamed (replies are stored when they end), never earlier messages.
- The schema grows by named, append-only migrations recorded in the `_migrations` table (never edit or reorder
  one that has shipped; add the next). A database written by a newer version is refused with a clear error.
- Conversation ids come from `secrets.token_urlsafe` (unguessable: a page names its conversation in the URL).
- `XIYOU_PERSIST=0` (public demos) gives a `MemoryStore`: the same interface, nothing written, one per session.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal, Protocol

Kind = Literal["room", "private"]
KINDS: tuple[Kind, ...] = ("room", "private")
DB_NAME = "conversations.db"
#: How long a writer waits for another process's transaction before giving up, in milliseconds.
BUSY_TIMEOUT_MS = 10_000


class StoreError(RuntimeError):
    """The conversation store cannot be used; the message names the file and what to do."""


@dataclasses.dataclass(frozen=True)
class Alternative:
    """One version of a reply (a swipe): its text and where in the novel it comes from (canon replies)."""

    text: str
    chapter: int | None = None
    said_to: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "chapter": self.chapter, "said_to": self.said_to}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Alternative:
        return cls(str(data["text"]), data.get("chapter"), data.get("said_to"))


@dataclasses.dataclass
class StoredMessage:
    """A message of a conversation. `speaker` is a character id or "person"; `name` the name shown.

    `alternatives` are the versions of this reply (regenerate keeps them all); `selected` is the one shown, and
    `text`/`chapter`/`said_to` always mirror it. `id` is set by the store.
    """

    speaker: str
    name: str
    text: str
    time: float = dataclasses.field(default_factory=time.time)
    chapter: int | None = None
    said_to: str | None = None
    interrupted: bool = False
    edited: bool = False
    deleted: bool = False
    alternatives: list[Alternative] = dataclasses.field(default_factory=list)
    selected: int = 0
    id: int | None = None
    #: Ids of the room's members when it was said (None: not recorded; everyone hears it).
    present: list[str] | None = None

    def __post_init__(self) -> None:
        if not self.alternatives:
            self.alternatives = [Alternative(self.text, self.chapter, self.said_to)]

    def add_alternative(self, alternative: Alternative) -> None:
        """Keep `alternative` as a new version and show it."""
        self.alternatives.append(alternative)
        self.select(len(self.alternatives) - 1)

    def select(self, index: int) -> None:
        """Show version `index` (swipe)."""
        if not 0 <= index < len(self.alternatives):
            raise IndexError(f"version {index} does not exist; this message has {len(self.alternatives)}")
        self.selected = index
        chosen = self.alternatives[index]
        self.text, self.chapter, self.said_to = chosen.text, chosen.chapter, chosen.said_to

    def edit(self, text: str) -> None:
        """Replace the shown version's text (the person's edit)."""
        self.alternatives[self.selected] = dataclasses.replace(self.alternatives[self.selected], text=text)
        self.text = text
        self.edited = True


@dataclasses.dataclass
class Conversation:
    """A private chat (`settings["character"]`) or a group room (members, policy, banter, mutes, person…)."""

    id: str
    kind: Kind
    title: str
    created: float
    updated: float
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)


class Store(Protocol):
    """What pages use to load and save conversations (SQLiteStore on disk, MemoryStore for a session)."""

    def create(self, kind: Kind, title: str, settings: dict[str, Any] | None = None) -> Conversation: ...
    def get(self, conversation_id: str) -> Conversation | None: ...
    def list(self, kind: Kind | None = None) -> list[Conversation]: ...
    def rename(self, conversation_id: str, title: str) -> None: ...
    def delete(self, conversation_id: str) -> None: ...
    def save_settings(self, conversation_id: str, settings: dict[str, Any]) -> None: ...
    def messages(self, conversation_id: str, include_deleted: bool = False) -> list[StoredMessage]: ...
    def add_message(self, conversation_id: str, message: StoredMessage) -> StoredMessage: ...
    def update_message(self, conversation_id: str, message: StoredMessage) -> None: ...
    def replace_messages(self, conversation_id: str, messages: Iterable[StoredMessage]) -> list[StoredMessage]: ...


def new_id() -> str:
    """An unguessable conversation id (URL-safe)."""
    return secrets.token_urlsafe(16)


def _check_kind(kind: str) -> Kind:
    if kind not in KINDS:
        raise ValueError(f"conversation kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return kind  # type: ignore[return-value]


def _check_title(title: str) -> str:
    title = " ".join(title.split())
    if not title:
        raise ValueError("a conversation needs a title")
    return title[:80]


# ----- in memory (XIYOU_PERSIST=0) -------------------------------------------------------------------------------
class MemoryStore:
    """Conversations of one session only; nothing is written anywhere."""

    def __init__(self) -> None:
        self._conversations: dict[str, Conversation] = {}
        self._messages: dict[str, list[StoredMessage]] = {}
        self._next = 1
        self._lock = threading.Lock()

    def create(self, kind: Kind, title: str, settings: dict[str, Any] | None = None) -> Conversation:
        now = time.time()
        conv = Conversation(new_id(), _check_kind(kind), _check_title(title), now, now, dict(settings or {}))
        with self._lock:
            self._conversations[conv.id] = conv
            self._messages[conv.id] = []
        return dataclasses.replace(conv, settings=dict(conv.settings))

    def get(self, conversation_id: str) -> Conversation | None:
        conv = self._conversations.get(conversation_id)
        return dataclasses.replace(conv, settings=json.loads(json.dumps(conv.settings))) if conv else None

    def list(self, kind: Kind | None = None) -> list[Conversation]:
        found = [c for c in self._conversations.values() if kind is None or c.kind == kind]
        return [dataclasses.replace(c) for c in sorted(found, key=lambda c: (-c.updated, c.created))]

    def _touch(self, conversation_id: str) -> Conversation:
        conv = self._conversations.get(conversation_id)
        if conv is None:
            raise KeyError(f"no conversation {conversation_id!r}")
        conv.updated = time.time()
        return conv

    def rename(self, conversation_id: str, title: str) -> None:
        with self._lock:
            self._touch(conversation_id).title = _check_title(title)

    def delete(self, conversation_id: str) -> None:
        with self._lock:
            self._conversations.pop(conversation_id, None)
            self._messages.pop(conversation_id, None)

    def save_settings(self, conversation_id: str, settings: dict[str, Any]) -> None:
        with self._lock:
            self._touch(conversation_id).settings = json.loads(json.dumps(settings))

    def messages(self, conversation_id: str, include_deleted: bool = False) -> list[StoredMessage]:
        return [_copy(m) for m in self._messages.get(conversation_id, []) if include_deleted or not m.deleted]

    def add_message(self, conversation_id: str, message: StoredMessage) -> StoredMessage:
        with self._lock:
            self._touch(conversation_id)
            stored = _copy(message)
            stored.id = self._next
            self._next += 1
            self._messages[conversation_id].append(stored)
        return _copy(stored)

    def update_message(self, conversation_id: str, message: StoredMessage) -> None:
        with self._lock:
            self._touch(conversation_id)
            rows = self._messages[conversation_id]
            for i, m in enumerate(rows):
                if m.id == message.id:
                    rows[i] = _copy(message)
                    return
        raise KeyError(f"no message {message.id} in conversation {conversation_id!r}")

    def replace_messages(self, conversation_id: str, messages: Iterable[StoredMessage]) -> list[StoredMessage]:
        with self._lock:
            self._touch(conversation_id)
            self._messages[conversation_id] = []
        return [self.add_message(conversation_id, m) for m in messages]


def _copy(message: StoredMessage) -> StoredMessage:
    present = list(message.present) if message.present is not None else None
    return dataclasses.replace(message, alternatives=list(message.alternatives), present=present)


# ----- SQLite ------------------------------------------------------------------------------------------------------
#: Named, append-only: each runs once, in order, in its own transaction, and is recorded in `_migrations`.
MIGRATIONS: list[tuple[str, str]] = [
    (
        "m001_conversations",
        """
        CREATE TABLE conversations (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL CHECK (kind IN ('room', 'private')),
            title TEXT NOT NULL,
            created REAL NOT NULL,
            updated REAL NOT NULL,
            settings TEXT NOT NULL DEFAULT '{}'
        );
        CREATE INDEX conversations_updated ON conversations (updated);
        """,
    ),
    (
        "m002_messages",
        """
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            conversation TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
            speaker TEXT NOT NULL,
            name TEXT NOT NULL,
            text TEXT NOT NULL,
            time REAL NOT NULL,
            chapter INTEGER,
            said_to TEXT,
            interrupted INTEGER NOT NULL DEFAULT 0,
            edited INTEGER NOT NULL DEFAULT 0,
            deleted INTEGER NOT NULL DEFAULT 0
        );
        CREATE INDEX messages_conversation ON messages (conversation, id);
        """,
    ),
    (
        "m003_message_alternatives",
        """
        ALTER TABLE messages ADD COLUMN alternatives TEXT NOT NULL DEFAULT '[]';
        ALTER TABLE messages ADD COLUMN selected INTEGER NOT NULL DEFAULT 0;
        """,
    ),
    (
        "m004_message_presence",
        """
        ALTER TABLE messages ADD COLUMN present TEXT;
        """,
    ),
]


def _split_statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def migrate(conn: sqlite3.Connection, path: Path | str = "database") -> list[str]:
    """Apply the migrations `conn` has not had yet; returns their names. Safe when several processes start."""
    conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied REAL NOT NULL)")
    applied_now: list[str] = []
    known = [name for name, _ in MIGRATIONS]
    done = {row[0] for row in conn.execute("SELECT name FROM _migrations")}
    unknown = sorted(done - set(known))
    if unknown:
        raise StoreError(
            f"{path} was written by a newer version of xiyou (migrations {', '.join(unknown)} are unknown here); "
            "upgrade xiyou, or point XIYOU_DATA_DIR at another folder"
        )
    for name, script in MIGRATIONS:
        if name in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            if conn.execute("SELECT 1 FROM _migrations WHERE name = ?", (name,)).fetchone():
                conn.execute("ROLLBACK")  # another process applied it meanwhile
                continue
            for statement in _split_statements(script):
                conn.execute(statement)
            conn.execute("INSERT INTO _migrations (name, applied) VALUES (?, ?)", (name, time.time()))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied_now.append(name)
    return applied_now


class SQLiteStore:
    """Conversations in one SQLite file (WAL). Thread-safe: each call opens its own short-lived connection."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.closing(self._open()) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
                migrate(conn, self.path)
        except sqlite3.DatabaseError as e:
            raise StoreError(
                f"cannot open the conversation store {self.path}: {e}; move the file away or point XIYOU_DATA_DIR "
                "at another folder (XIYOU_PERSIST=0 keeps conversations in the session only)"
            ) from None
        except OSError as e:
            raise StoreError(
                f"cannot create the conversation store {self.path}: {e}; set XIYOU_DATA_DIR to a writable folder "
                "(or XIYOU_PERSIST=0 to keep conversations in the session only)"
            ) from None

    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=BUSY_TIMEOUT_MS / 1000)
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA synchronous=NORMAL")  # with WAL: durable against a killed process
        conn.row_factory = sqlite3.Row
        return conn

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with contextlib.closing(self._open()) as conn:
            yield conn

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One transaction: all of it is stored, or none of it."""
        with contextlib.closing(self._open()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def integrity_check(self) -> str:
        """SQLite's own check: "ok" when the file is sound."""
        with self._read() as conn:
            return str(conn.execute("PRAGMA integrity_check").fetchone()[0])

    def migrations(self) -> list[str]:
        """Names of the migrations this file has had, in the order applied."""
        with self._read() as conn:
            return [r[0] for r in conn.execute("SELECT name FROM _migrations ORDER BY applied, rowid")]

    # conversations
    def create(self, kind: Kind, title: str, settings: dict[str, Any] | None = None) -> Conversation:
        now = time.time()
        conv = Conversation(new_id(), _check_kind(kind), _check_title(title), now, now, dict(settings or {}))
        with self._write() as conn:
            conn.execute(
                "INSERT INTO conversations (id, kind, title, created, updated, settings) VALUES (?, ?, ?, ?, ?, ?)",
                (conv.id, conv.kind, conv.title, now, now, json.dumps(conv.settings, ensure_ascii=False)),
            )
        return conv

    @staticmethod
    def _conversation(row: sqlite3.Row) -> Conversation:
        return Conversation(
            row["id"], row["kind"], row["title"], row["created"], row["updated"], json.loads(row["settings"])
        )

    def get(self, conversation_id: str) -> Conversation | None:
        with self._read() as conn:
            row = conn.execute("SELECT * FROM conversations WHERE id = ?", (conversation_id,)).fetchone()
        return self._conversation(row) if row else None

    def list(self, kind: Kind | None = None) -> list[Conversation]:
        sql = "SELECT * FROM conversations"
        args: tuple[Any, ...] = ()
        if kind is not None:
            sql += " WHERE kind = ?"
            args = (_check_kind(kind),)
        with self._read() as conn:
            rows = conn.execute(sql + " ORDER BY updated DESC, created", args).fetchall()
        return [self._conversation(r) for r in rows]

    def _touch(self, conn: sqlite3.Connection, conversation_id: str) -> None:
        cur = conn.execute("UPDATE conversations SET updated = ? WHERE id = ?", (time.time(), conversation_id))
        if cur.rowcount == 0:
            raise KeyError(f"no conversation {conversation_id!r}")

    def rename(self, conversation_id: str, title: str) -> None:
        with self._write() as conn:
            self._touch(conn, conversation_id)
            conn.execute("UPDATE conversations SET title = ? WHERE id = ?", (_check_title(title), conversation_id))

    def delete(self, conversation_id: str) -> None:
        with self._write() as conn:
            conn.execute("DELETE FROM conversations WHERE id = ?", (conversation_id,))

    def save_settings(self, conversation_id: str, settings: dict[str, Any]) -> None:
        data = json.dumps(settings, ensure_ascii=False)
        with self._write() as conn:
            self._touch(conn, conversation_id)
            conn.execute("UPDATE conversations SET settings = ? WHERE id = ?", (data, conversation_id))

    # messages
    @staticmethod
    def _message(row: sqlite3.Row) -> StoredMessage:
        alternatives = [Alternative.from_json(a) for a in json.loads(row["alternatives"])]
        return StoredMessage(
            row["speaker"], row["name"], row["text"], row["time"], row["chapter"], row["said_to"],
            bool(row["interrupted"]), bool(row["edited"]), bool(row["deleted"]), alternatives, row["selected"],
            row["id"], json.loads(row["present"]) if row["present"] is not None else None,
        )  # fmt: skip

    def messages(self, conversation_id: str, include_deleted: bool = False) -> list[StoredMessage]:
        sql = "SELECT * FROM messages WHERE conversation = ?" + ("" if include_deleted else " AND deleted = 0")
        with self._read() as conn:
            rows = conn.execute(sql + " ORDER BY id", (conversation_id,)).fetchall()
        return [self._message(r) for r in rows]

    @staticmethod
    def _values(m: StoredMessage) -> tuple[Any, ...]:
        alternatives = json.dumps([a.to_json() for a in m.alternatives], ensure_ascii=False)
        present = json.dumps(list(m.present)) if m.present is not None else None
        return (
            m.speaker, m.name, m.text, m.time, m.chapter, m.said_to,
            int(m.interrupted), int(m.edited), int(m.deleted), alternatives, m.selected, present,
        )  # fmt: skip

    def _insert(self, conn: sqlite3.Connection, conversation_id: str, message: StoredMessage) -> StoredMessage:
        cur = conn.execute(
            "INSERT INTO messages (conversation, speaker, name, text, time, chapter, said_to, interrupted, edited, "
            "deleted, alternatives, selected, present) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (conversation_id, *self._values(message)),
        )
        stored = _copy(message)
        stored.id = cur.lastrowid
        return stored

    def add_message(self, conversation_id: str, message: StoredMessage) -> StoredMessage:
        with self._write() as conn:
            self._touch(conn, conversation_id)
            return self._insert(conn, conversation_id, message)

    def update_message(self, conversation_id: str, message: StoredMessage) -> None:
        with self._write() as conn:
            self._touch(conn, conversation_id)
            cur = conn.execute(
                "UPDATE messages SET speaker = ?, name = ?, text = ?, time = ?, chapter = ?, said_to = ?, "
                "interrupted = ?, edited = ?, deleted = ?, alternatives = ?, selected = ?, present = ? "
                "WHERE id = ? AND conversation = ?",
                (*self._values(message), message.id, conversation_id),
            )
            if cur.rowcount == 0:
                raise KeyError(f"no message {message.id} in conversation {conversation_id!r}")

    def replace_messages(self, conversation_id: str, messages: Iterable[StoredMessage]) -> list[StoredMessage]:
        with self._write() as conn:
            self._touch(conn, conversation_id)
            conn.execute("DELETE FROM messages WHERE conversation = ?", (conversation_id,))
            return [self._insert(conn, conversation_id, m) for m in messages]


# ----- which store ----------------------------------------------------------------------------------------------
def persist_enabled() -> bool:
    """`XIYOU_PERSIST` (default on): 0/false/no/off keeps conversations in the session only."""
    return os.environ.get("XIYOU_PERSIST", "1").strip().lower() not in ("0", "false", "no", "off")


def data_dir() -> Path:
    """`XIYOU_DATA_DIR`, else the user's data directory ($XDG_DATA_HOME/xiyou or ~/.local/share/xiyou)."""
    value = os.environ.get("XIYOU_DATA_DIR", "").strip()
    if value:
        return Path(value).expanduser()
    base = os.environ.get("XDG_DATA_HOME", "").strip()
    return (Path(base).expanduser() if base else Path.home() / ".local" / "share") / "xiyou"


def database_path() -> Path:
    return data_dir() / DB_NAME


def open_store() -> Store:
    """The store the environment asks for: SQLite under `data_dir()`, or a fresh MemoryStore (XIYOU_PERSIST=0)."""
    if not persist_enabled():
        return MemoryStore()
    return SQLiteStore(database_path())

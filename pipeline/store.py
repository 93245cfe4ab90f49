"""The resumable JSONL store every pipeline step (and the evaluation) writes through.

One record per line, each with a stable `id`. A record is appended whole, as one `write` of one line, then
flushed (and optionally fsynced), so a crash or a SIGKILL can at worst leave a torn last line; opening the store
repairs that (the torn tail is cut off and its id is simply asked again); a write that fails (a full disk) is
undone at once and raises its `OSError`. On restart a step asks the store which
ids exist and requests only the missing ones, and `append` refuses an id that is already there, so running the
same command twice never duplicates data.

    with JsonlStore("out.jsonl") as store:
        todo = [item for item in items if item.id not in store]
        for item in todo:
            store.append({"id": item.id, ...})
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from xiyou.io import json_line

log = logging.getLogger(__name__)


class StoreError(ValueError):
    """The store file is damaged in a way that cannot be repaired automatically; the message says where."""


class JsonlStore:
    """An append-only JSONL file of records keyed by `id`."""

    def __init__(self, path: str | os.PathLike[str], *, fsync: bool = False, id_field: str = "id") -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.id_field = id_field
        self._ids: set[str] = set()
        self._fd: int | None = None
        #: how many bytes of a torn last line were cut off when the store was opened (0: none)
        self.repaired_bytes = 0
        #: records appended through this object (not counting those already in the file)
        self.appended = 0

    # --- lifecycle ------------------------------------------------------------------------------------------
    def open(self) -> JsonlStore:
        if self._fd is not None:
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # two runs appending to one file would duplicate work
        except BlockingIOError:
            os.close(fd)
            raise StoreError(
                f"{self.path}: another run is writing to this file right now; wait for it to finish or stop it"
            ) from None
        try:
            self._repair_and_index()
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> JsonlStore:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- reading --------------------------------------------------------------------------------------------
    def _repair_and_index(self) -> None:
        self._ids.clear()
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        end = len(data)
        if data and not data.endswith(b"\n"):
            # A torn last line (the process died inside a write): cut it off, its id will be requested again.
            end = data.rfind(b"\n") + 1
            self.repaired_bytes = len(data) - end
            with open(self.path, "r+b") as f:
                f.truncate(end)
            log.warning(
                "%s: cut off a torn last line (%d bytes) left by an interrupted run", self.path, self.repaired_bytes
            )
        for lineno, line in enumerate(data[:end].splitlines(), start=1):
            if not line.strip():
                continue
            record = self._parse(line, lineno)
            self._ids.add(record[self.id_field])

    def _parse(self, line: bytes, lineno: int) -> dict[str, Any]:
        try:
            record = json.loads(line)
        except ValueError as e:
            raise StoreError(
                f"{self.path}, line {lineno}: not valid JSON ({e}); only a torn last line is repaired automatically. "
                "Fix or delete that line, then run again."
            ) from None
        if not isinstance(record, dict) or not isinstance(record.get(self.id_field), str):
            raise StoreError(
                f"{self.path}, line {lineno}: a record must be a JSON object with a string {self.id_field!r}; "
                "is this file the output of another tool? Use another --out path."
            )
        return record

    def __contains__(self, record_id: object) -> bool:
        return record_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> frozenset[str]:
        return frozenset(self._ids)

    def records(self) -> Iterator[dict[str, Any]]:
        """Every record in the file, in order (each id once: a duplicate line left by another tool is skipped)."""
        if not self.path.exists():
            return
        seen: set[str] = set()
        with open(self.path, "rb") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip() or not line.endswith(b"\n"):
                    continue
                record = self._parse(line, lineno)
                if record[self.id_field] in seen:
                    continue
                seen.add(record[self.id_field])
                yield record

    # --- writing --------------------------------------------------------------------------------------------
    def append(self, record: dict[str, Any]) -> bool:
        """Append one record as one whole line; False (and nothing written) when its id is already stored."""
        if self._fd is None:
            raise RuntimeError(f"{self.path}: the store is not open; use it as a context manager or call open()")
        record_id = record.get(self.id_field)
        if not isinstance(record_id, str) or not record_id:
            raise ValueError(f"a record needs a non-empty string {self.id_field!r}, got {record_id!r}")
        if record_id in self._ids:
            return False
        view = memoryview(json_line(record).encode("utf-8"))
        size = os.fstat(self._fd).st_size
        try:
            while view:  # one write almost always; loop only if the OS wrote part of it
                written = os.write(self._fd, view)
                view = view[written:]
            if self.fsync:
                os.fsync(self._fd)
        except OSError:
            os.ftruncate(self._fd, size)  # a full disk: keep the file whole (the record is asked again next run)
            raise
        self._ids.add(record_id)
        self.appended += 1
        return True


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All records of a JSONL file (a torn last line is skipped, not repaired); errors name the file and line."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise StoreError(f"{path}: no such file; check the path") from None
    lines = data.split(b"\n")
    out: list[dict[str, Any]] = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError as e:
            if lineno == len(lines):  # no newline after it: a torn last line of an interrupted run
                log.warning("%s: skipping a torn last line", path)
                continue
            raise StoreError(f"{path}, line {lineno}: not valid JSON ({e})") from None
    return out


def existing_ids(path: str | os.PathLike[str]) -> set[str]:
    """The ids already in a store file, without opening it for writing (empty when the file does not exist)."""
    path = Path(path)
    if not path.exists():
        return set()
    return {r["id"] for r in read_jsonl(path) if isinstance(r, dict) and isinstance(r.get("id"), str)}

"""Writing files, once for the package and the pipeline: atomic files and folders, JSON and JSON Lines.

- A file is written to a temporary file beside it and renamed into place, so readers see the old file or the
  whole new one, never half. It gets the permissions a plain `open()` would give it (0666 less the umask; an
  existing file keeps its own), not the 0600 of a temporary file.
- A folder of files (a dataset: train, validation, stats) is written into a temporary folder beside it and
  swapped in as a whole; temporaries left by a killed run are removed by the next.
- JSON text is UTF-8, readable (no \\u escapes), and never fails to encode: text that UTF-8 cannot hold (a lone
  surrogate from a broken server) becomes U+FFFD.
- A full disk is an `OSError` with `errno.ENOSPC`; `write_error` turns any write error into one line for people.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

_TEMP = ".tmp"


def clean_text(text: str) -> str:
    """`text` with every code point UTF-8 cannot encode (lone surrogates) replaced by U+FFFD; split pairs joined."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask would race with other threads)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The permissions `open(path, "w")` gives a new file: 0666 less the process umask."""
    return 0o666 & ~_umask()


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` so readers see either the old file or the whole new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = new_file_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TEMP, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text_atomic(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """`write_bytes_atomic` for text (no newline translation; unencodable code points become U+FFFD)."""
    return write_bytes_atomic(path, clean_text(text).encode(encoding, errors="replace"))


def json_line(record: Any) -> str:
    """One JSON object as one line of JSON Lines (readable UTF-8, newline included)."""
    return clean_text(json.dumps(record, ensure_ascii=False)) + "\n"


def jsonl_text(records: Iterable[Any]) -> str:
    return "".join(json_line(r) for r in records)


def write_jsonl_atomic(path: str | os.PathLike[str], records: Iterable[Any]) -> Path:
    """A JSON Lines file of `records`, written atomically."""
    return write_text_atomic(path, jsonl_text(records))


def write_json_atomic(path: str | os.PathLike[str], data: Any) -> Path:
    """A readable (indented, UTF-8) JSON file, written atomically."""
    return write_text_atomic(path, json.dumps(data, ensure_ascii=False, indent=2) + "\n")


# --- folders -----------------------------------------------------------------------------------------------------
def _temp_prefix(target: Path) -> str:
    return f".{target.name}."


def remove_stale_temps(target: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files and folders an interrupted write of `target` (or of a file in it) left."""
    target = Path(target)
    removed: list[Path] = []
    places = [(target.parent, _temp_prefix(target))]
    if target.is_dir():
        places.append((target, "."))
    for folder, prefix in places:
        if not folder.is_dir():
            continue
        for p in folder.iterdir():
            if p.name.startswith(prefix) and p.name.endswith(_TEMP):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p)
    return removed


def write_dir_atomic(target: str | os.PathLike[str], write: Callable[[Path], object]) -> Path:
    """Fill a folder with `write(tmp)` and swap it in as `target` as a whole: a reader (or a run killed at any
    moment) sees the old folder or the new one, never a mix; what an earlier killed run left is cleaned first.

    The old folder is renamed aside, the new one renamed in, the old one removed; if the process dies between the
    two renames, `target` is missing until the next run (never mixed), and the next run removes the leftovers."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(target), suffix=_TEMP, dir=target.parent))
    old: Path | None = None
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        write(tmp)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=_temp_prefix(target) + "old.", suffix=_TEMP, dir=target.parent))
            os.replace(target, old / target.name)  # rename aside (a folder cannot be replaced while not empty)
        os.replace(tmp, target)
    except BaseException:
        if old is not None and not target.exists():
            os.replace(old / target.name, target)  # put the old one back
        raise
    finally:
        for leftover in (tmp, old):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover, ignore_errors=True)
    return target


# --- errors --------------------------------------------------------------------------------------------------------
def write_error(path: str | os.PathLike[str], exc: OSError) -> str:
    """One line for people: what could not be written and what to do."""
    if exc.errno == errno.ENOSPC:
        return f"no space left on the device writing {path}; free some space and run the same command again"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {path}: {exc.strerror}; choose a writable place or fix its permissions"
    return f"cannot write {path}: {exc.strerror or exc}"

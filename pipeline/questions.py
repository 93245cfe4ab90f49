"""Question files (q2a's questions, the evaluation's held-out questions): one question per line, UTF-8.

Blank lines and lines starting with '#' are skipped; a question written twice is kept once (first place).
"""

from __future__ import annotations

from pathlib import Path


def read_questions(path: Path, option: str = "--questions") -> list[str]:
    """The questions of `path`; a missing or unreadable file exits with a message naming `option` and the path."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SystemExit(f"error: {option} {path}: no such file") from None
    except UnicodeDecodeError:
        raise SystemExit(f"error: {option} {path}: not UTF-8 text; save it as UTF-8, one question per line") from None
    except OSError as e:
        raise SystemExit(f"error: {option} {path}: cannot read it: {e.strerror}") from None
    return list(dict.fromkeys(q for q in (line.strip() for line in text.splitlines()) if q and not q.startswith("#")))

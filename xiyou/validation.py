"""How a pydantic validation error is told to a person: one short line naming each field and its problem.

Used for every file the package validates (character files, the endpoints file): the value shown is cut short
and at most a few problems are listed, so a hostile file cannot make an error line megabytes long.
"""

from __future__ import annotations

from pydantic import ValidationError

#: Problems listed in one message; the rest are counted.
MAX_PROBLEMS = 5
#: Characters of a bad value shown in a message.
MAX_VALUE_CHARS = 60


def shorten(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    """`text` cut to `limit` characters, with … where it was cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_validation_error(err: ValidationError) -> str:
    """ "field 'x': problem (got value); field 'y': …" for the first few problems of `err`."""
    problems = []
    errors = err.errors()
    for e in errors[:MAX_PROBLEMS]:
        field = shorten(".".join(str(p) for p in e["loc"]), 80)
        if e["type"] == "missing":
            problem = "missing (required)"
        elif e["type"] == "extra_forbidden":
            problem = "unknown field (typo?)"
        elif field:
            problem = f"{e['msg'].removeprefix('Value error, ')} (got {shorten(repr(e.get('input')))})"
        else:  # a rule about the whole table: its message says what is wrong
            problem = e["msg"].removeprefix("Value error, ")
        problems.append(f"field '{field}': {problem}" if field else problem)
    if len(errors) > MAX_PROBLEMS:
        problems.append(f"and {len(errors) - MAX_PROBLEMS} more problems")
    return "; ".join(problems)

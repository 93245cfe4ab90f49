"""Shared fixtures. Shared data (../shared/data) is read in place; tests that need it skip with a reason."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xiyou.env import SHARED_DATA


def _shared_file(name: str, env: str | None = None) -> Path:
    path = Path(os.environ[env]) if env and os.environ.get(env) else SHARED_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (the shared data lives in ../shared/data beside the checkout)")
    return path


@pytest.fixture(scope="session")
def novel_path() -> Path:
    """The shared novel: XIYOU_NOVEL, else ../shared/data/xiyouji.txt."""
    return _shared_file("xiyouji.txt", "XIYOU_NOVEL")


@pytest.fixture(scope="session")
def personas_path() -> Path:
    return _shared_file("personas.md")


@pytest.fixture(scope="session")
def questions_path() -> Path:
    return _shared_file("questions.txt")

"""Shared fixtures. Shared data (../shared/data) is read in place; tests that need it skip with a reason."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from xiyou.env import SHARED_DATA

# canon replies stream at typing speed for people; the suite reads them at once (tests of the pace set their own)
os.environ.setdefault("XIYOU_CANON_CPS", "0")


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
def canon_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the session's canon keeps its disk cache (utterances, indexes)."""
    return tmp_path_factory.mktemp("canon-cache")


@pytest.fixture(scope="session")
def canon(novel_path: Path, canon_cache_dir: Path):
    """The novel's Canon with every index built, once per session; `get_canon(novel_path)` returns the same one."""
    from xiyou.canon import get_canon

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XIYOU_CACHE_DIR", str(canon_cache_dir))
        canon = get_canon(novel_path)
        canon.build_indexes()
    return canon


@pytest.fixture(scope="session")
def personas_path() -> Path:
    return _shared_file("personas.md")


@pytest.fixture(scope="session")
def questions_path() -> Path:
    return _shared_file("questions.txt")


@pytest.fixture(scope="session")
def tiny_model(novel_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """A tiny Llama chat model built from the novel once per session (see tests/tiny_model.py): a `TinyModel`."""
    from tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"), novel_path)


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_model) -> Path:
    """The tiny model's directory: pass it as XIYOU_MODEL_<ID> or to `transformers serve`."""
    return tiny_model.path


@pytest.fixture(scope="session")
def tiny_server(tiny_model_dir: Path):
    """`transformers serve` on the tiny model for the whole session (tests/servers.py): a `ServedModel` with
    `.base_url` (…/v1) and `.model`. Tests that stop or kill a server start their own with `transformers_serve`."""
    from servers import transformers_serve

    with transformers_serve(tiny_model_dir) as server:
        yield server

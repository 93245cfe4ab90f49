"""Shared fixtures. Shared data (../shared/data) is read in place; tests that need it skip with a reason.

`make test` runs the suite on pytest-xdist workers: what takes long to build once (the tiny model, the canon's disk
cache) is built by the first worker that needs it and reused by the others (a file lock in pytest's shared temporary
folder). The longest tests come first in the order (pyproject.toml says why xdist's default scheduling is kept)."""

from __future__ import annotations

import fcntl
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from filelock import FileLock

from xiyou.env import SHARED_DATA

# canon replies stream at typing speed for people; the suite reads them at once (tests of the pace set their own)
os.environ.setdefault("XIYOU_CANON_CPS", "0")

# `make test` runs one xdist worker per core. torch's default is one OpenMP thread per core in every process, so
# the training loop, the servers and the eval steps a worker starts ran two threads each beside the other worker's
# processes, spinning against each other: the suite took 310 s of pytest on 2 cores, 271 s with one thread each.
# Every worker and everything it starts inherits this (set before any test imports torch).
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

# Tests that press Ctrl-C on a command they started need it to reach that command as at a terminal. A suite started
# in the background without job control (`nohup make test &`, some CI runners) inherits SIGINT ignored, its children
# too, and Python then never raises KeyboardInterrupt: restore the default, which children inherit.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest tests first, then the slow ones, then the rest, the Chromium tests last (a stable sort keeps each
    group's order): each free xdist worker takes the next test in this order (`--dist load --maxschedchunk 1`), so
    the long tests start at once instead of ending the run, and the training loop is over before the browsers
    start (`_apart` makes sure of it)."""

    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("longest"):
            return 0
        if item.get_closest_marker("browser"):
            return 3
        return 1 if item.get_closest_marker("slow") else 2

    items.sort(key=rank)


@pytest.fixture(autouse=True)
def _apart(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """A Chromium test (`browser`) never runs while the training loop (`longest`) runs on another worker: the loop
    holds an exclusive lock across workers, a Chromium test a shared one (two browsers may run side by side).
    Started during the loop's first minutes, the scene test's mouse click on an option was lost in 3 of 4 tries
    (a react-aria combobox under automation and load; that test now picks with the keyboard): the lock keeps the
    browsers off the busiest minutes of the run."""
    node = request.node
    exclusive = node.get_closest_marker("longest") is not None
    if not exclusive and node.get_closest_marker("browser") is None:
        yield
        return
    path, _ = _across_workers(tmp_path_factory, "apart")
    with open(f"{path}.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)  # released when the file closes
        yield


def _across_workers(tmp_path_factory: pytest.TempPathFactory, name: str) -> tuple[Path, FileLock]:
    """A folder every xdist worker of this run sees (pytest's run folder; the session's own one without xdist), and
    a lock to build it once."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    return root / name, FileLock(str(root / f"{name}.lock"))


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
    """Where the session's canon keeps its disk cache (utterances, indexes), one for all workers."""
    path, lock = _across_workers(tmp_path_factory, "canon-cache")
    with lock:
        path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def canon(novel_path: Path, canon_cache_dir: Path):
    """The novel's Canon with every index built, once per session; `get_canon(novel_path)` returns the same one."""
    from xiyou.canon import get_canon

    with pytest.MonkeyPatch.context() as mp, FileLock(f"{canon_cache_dir}.build.lock"):
        mp.setenv("XIYOU_CACHE_DIR", str(canon_cache_dir))
        canon = get_canon(novel_path)
        canon.build_indexes()
    return canon


@pytest.fixture
def page_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """For a page under AppTest: its own conversation store (XIYOU_DATA_DIR, persisted) and Streamlit's resource
    cache cleared before and after. Returns the store's folder."""
    import streamlit as st

    monkeypatch.setenv("XIYOU_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("XIYOU_PERSIST", raising=False)
    st.cache_resource.clear()
    yield tmp_path / "data"
    st.cache_resource.clear()


@pytest.fixture
def hub(novel_path: Path, monkeypatch: pytest.MonkeyPatch, page_store: Path):
    """Starts the hub page (offline canon mode on the novel, no endpoints) under AppTest: `hub(conversation=None,
    pace=0.0)`; `pace` sets the pause between banter turns (None keeps the page's default)."""
    from pages import HUB_APP, widget
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("XIYOU_NOVEL", str(novel_path))
    for name in ("XIYOU_ENDPOINTS", "XIYOU_API_BASE_URL", "XIYOU_API_MODEL"):
        monkeypatch.delenv(name, raising=False)

    def start(conversation: str | None = None, pace: float | None = 0.0) -> AppTest:
        at = AppTest.from_file(HUB_APP, default_timeout=120)
        if conversation:
            at.query_params["c"] = conversation
        at.run()
        assert not at.exception, at.exception
        if pace is not None:
            widget(at, "hub_delay").set_value(pace)  # no pause between banter turns in tests
        return at

    return start


@pytest.fixture(scope="session")
def personas_path() -> Path:
    return _shared_file("personas.md")


@pytest.fixture(scope="session")
def questions_path() -> Path:
    return _shared_file("questions.txt")


@pytest.fixture(scope="session")
def tiny_model(novel_path: Path, tmp_path_factory: pytest.TempPathFactory):
    """A tiny Llama chat model built from the novel once per run (see tests/tiny_model.py): a `TinyModel`. Tests
    read it and never change it (those that do copy it first)."""
    from tiny_model import INFO_FILE, TinyModel, build_tiny_model

    path, lock = _across_workers(tmp_path_factory, "tiny_model")
    with lock:
        if (path / INFO_FILE).is_file():
            return TinyModel.load(path)
        return build_tiny_model(path, novel_path)


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

"""Hostile cases for the processes we start (issue 15 items 8 and 10): a stopped launcher must not orphan its
server, a stopped server's port must be reusable at once, and bad settings of the start script are one-line errors.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xiyou.env import REPO_ROOT
from xiyou.process import Process, free_port, http_ok, port_in_use

START = REPO_ROOT / "openxlab" / "start.py"
sys.path.insert(0, str(START.parent))
import start  # noqa: E402  (openxlab/start.py)


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie counts as gone
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


@pytest.mark.slow
def test_sigterm_to_the_openxlab_launcher_stops_streamlit_and_frees_the_port(tmp_path: Path) -> None:
    port = free_port()
    env = dict(os.environ, XIYOU_OPENXLAB_ADDRESS="127.0.0.1", XIYOU_OPENXLAB_PORT=str(port), XIYOU_BACKEND="canon")
    # Started as a container runtime would: the launcher alone is signalled (not its process group).
    launcher = subprocess.Popen(
        [sys.executable, str(START), "wukong"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while not http_ok(f"http://127.0.0.1:{port}/_stcore/health") and time.monotonic() < deadline:
            assert launcher.poll() is None, "the launcher exited before Streamlit was up"
            time.sleep(0.3)
        streamlit_pids = _children(launcher.pid)
        assert streamlit_pids, "Streamlit did not start under the launcher"
        launcher.send_signal(signal.SIGTERM)
        launcher.wait(timeout=30)
        deadline = time.monotonic() + 15
        while not all(_pid_gone(p) for p in streamlit_pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert all(_pid_gone(p) for p in streamlit_pids), "Streamlit outlived its launcher (an orphan on the port)"
        assert not http_ok(f"http://127.0.0.1:{port}/_stcore/health", timeout=1)
        assert not port_in_use("127.0.0.1", port)
    finally:
        for pid in _children(launcher.pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()


@pytest.mark.parametrize("value", ["abc", "-5", "70000", "0"])
def test_a_bad_openxlab_port_is_a_one_line_error(value: str) -> None:
    out = subprocess.run([sys.executable, str(START), "wukong"], env=dict(os.environ, XIYOU_OPENXLAB_PORT=value),
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert f"XIYOU_OPENXLAB_PORT={value!r} is not a port number" in out.stderr


def test_an_empty_character_variable_means_the_default_character() -> None:
    assert start.settings([], {"XIYOU_CHARACTER": ""}) == ("wukong", "0.0.0.0", 7860)
    assert start.settings([], {"XIYOU_CHARACTER": "  "})[0] == "wukong"
    assert start.settings([], {"XIYOU_CHARACTER": "Bajie"})[0] == "bajie"
    assert start.settings([], {"XIYOU_OPENXLAB_PORT": "", "XIYOU_OPENXLAB_ADDRESS": ""})[1:] == ("0.0.0.0", 7860)


def test_the_launcher_passes_the_public_settings_on_the_command_line() -> None:
    # .streamlit/config.toml is read from the working directory only; a public page must not depend on it.
    cmd = start.command("wukong", "127.0.0.1", 8501)
    assert cmd[cmd.index("--client.showErrorDetails") + 1] == "none"
    assert cmd[cmd.index("--client.toolbarMode") + 1] == "viewer"


def test_a_port_in_time_wait_after_a_server_stopped_is_free_at_once() -> None:
    # A server that closes its side first leaves the connection in TIME_WAIT on its port for ~60 s.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = listener.accept()
    assert port_in_use("127.0.0.1", port)  # listening: busy
    conn.close()  # the server's side closes first: TIME_WAIT is on the server's port
    time.sleep(0.1)
    client.close()
    listener.close()
    time.sleep(0.1)
    assert not port_in_use("127.0.0.1", port)  # what a restarted server (SO_REUSEADDR) can bind
    again = socket.create_server(("127.0.0.1", port), reuse_port=False)  # and it really can
    again.close()


def test_stopping_a_process_ends_its_whole_group(tmp_path: Path) -> None:
    # The leader starts a child of its own: stop() must end both.
    script = (
        "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
        "time.sleep(600)"
    )
    proc = Process.start([sys.executable, "-c", script], log_path=tmp_path / "log")
    deadline = time.monotonic() + 20
    while not _children(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    grandchildren = _children(proc.pid)
    assert grandchildren
    proc.stop(grace_s=5)
    assert not proc.alive()
    deadline = time.monotonic() + 10
    while not all(_pid_gone(p) for p in grandchildren) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(_pid_gone(p) for p in grandchildren)

"""Child processes that serve something: start one in its own process group with its output in a log file, wait
until it answers its health check, stop it (SIGTERM to the whole group, then SIGKILL), show the end of its log.

    proc = Process.start(["lmdeploy", "serve", "api_server", ...], log_path=Path("logs/wukong.log"))
    if proc.wait_ready(lambda: http_ok(url), timeout_s=900) != "ready":
        print(proc.log_tail())
    ...
    proc.stop()

`pipeline.serve`, `pipeline.train`, `openxlab/start.py` and the test fixtures (servers, Streamlit, Chromium's
pages) all start their processes through this module; `free_port`, `port_in_use` and `http_ok` live here too.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Literal

#: What `Process.wait_ready` saw: the check passed, the process exited first, time ran out, or `cancel` was set.
Readiness = Literal["ready", "exited", "timeout", "cancelled"]

WILDCARD_HOSTS = ("0.0.0.0", "", "::")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` (a wildcard host: on 127.0.0.1) that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((loopback_for(host), 0))
        return s.getsockname()[1]


def loopback_for(host: str) -> str:
    """Where a client on this machine reaches a server bound to `host` (a wildcard bind is reached on loopback)."""
    return "127.0.0.1" if host in WILDCARD_HOSTS else host


def port_in_use(host: str, port: int) -> bool:
    """Does something listen on `host`:`port` (or hold it bound)? A port whose last connections linger in TIME_WAIT
    after a server stopped is free: the bind test uses SO_REUSEADDR, as every server (uvicorn, LMDeploy) does."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """Does `url` answer HTTP 200 right now? (The health check of every server and page we start.)"""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclasses.dataclass
class Process:
    """A child process in its own process group (session), so that stopping it stops everything it started."""

    argv: tuple[str, ...]
    popen: subprocess.Popen
    log_path: Path | None = None

    @classmethod
    def start(
        cls,
        argv: Sequence[str],
        *,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        pipe: bool = False,
    ) -> Process:
        """Start `argv` in a new session, stdin closed. Its output (stdout and stderr together) goes to `log_path`
        (created, parents too), or to a pipe read with `lines()` when `pipe`, else to this process's own.
        Raises FileNotFoundError/PermissionError when the executable cannot be run."""
        kwargs: dict = {}
        if pipe:
            kwargs = dict(stdout=subprocess.PIPE, text=True, encoding="utf-8", errors="replace")
        log: IO[bytes] | None = None
        if log_path is not None and not pipe:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            log = log_path.open("wb")
            kwargs = dict(stdout=log)
        try:
            popen = subprocess.Popen(
                list(argv),
                stderr=subprocess.STDOUT if (log or pipe) else None,
                stdin=subprocess.DEVNULL,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
                **kwargs,
            )
        finally:
            if log is not None:
                log.close()  # the child holds its own copy
        return cls(tuple(argv), popen, log_path)

    # --- state ---------------------------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        """All of the log file ('' when there is none yet)."""
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 30, indent: str = "    ") -> str:
        """The last `lines` lines of the log, indented (for an error message)."""
        return "\n".join(f"{indent}{line}" for line in self.log().splitlines()[-lines:])

    def lines(self) -> Iterable[str]:
        """The output lines of a process started with `pipe=True`, as they come."""
        assert self.popen.stdout is not None, "start(pipe=True) to read the output"
        return self.popen.stdout

    # --- waiting -------------------------------------------------------------------------------------------
    def wait_ready(
        self,
        check: Callable[[], bool],
        timeout_s: float,
        *,
        interval_s: float = 0.3,
        cancel: threading.Event | None = None,
    ) -> Readiness:
        """Poll `check` until it passes, the process exits, `timeout_s` passes or `cancel` is set."""
        deadline = time.monotonic() + timeout_s
        while True:
            if cancel is not None and cancel.is_set():
                return "cancelled"
            if check():
                return "ready"
            if not self.alive():
                return "exited"
            if time.monotonic() > deadline:
                return "timeout"
            if cancel is not None:
                cancel.wait(interval_s)
            else:
                time.sleep(interval_s)

    # --- stopping ------------------------------------------------------------------------------------------
    def signal(self, sig: int) -> None:
        """Send `sig` to the whole process group (nothing if it is gone)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def kill(self, wait_s: float = 10.0) -> None:
        """End the group at once (SIGKILL), as a crash would."""
        self.signal(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=wait_s)

    def stop(self, grace_s: float = 10.0) -> None:
        """End the group politely (SIGTERM), then forcibly after `grace_s` (children may outlive the leader)."""
        stop_all([self], grace_s)


def stop_all(processes: Iterable[Process], grace_s: float = 15.0) -> None:
    """SIGTERM every process group, wait up to `grace_s` in all, then SIGKILL whatever is left of each group."""
    processes = list(processes)
    for p in processes:
        if p.alive():
            p.signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for p in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
    for p in processes:
        p.kill(wait_s=5)


def run_echoed(
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
    echo: Callable[[str], None] | None = None,
    keep_lines: int = 25,
    grace_s: float = 30.0,
) -> tuple[int, list[str]]:
    """Run `argv` to its end in its own group, saving its output to `log_path` and passing each line to `echo`;
    returns (exit code, the last `keep_lines` lines). Interrupted (Ctrl-C, an error), it stops the whole group."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: collections.deque[str] = collections.deque(maxlen=keep_lines)
    proc = Process.start(argv, env=env, pipe=True)
    try:
        with log_path.open("w", encoding="utf-8") as log:
            for line in proc.lines():
                if echo is not None:
                    echo(line)
                log.write(line)
                tail.append(line.rstrip("\n"))
        return proc.popen.wait(), list(tail)
    except BaseException:
        proc.stop(grace_s)
        raise


def forward_signals(proc: Process, signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)) -> None:
    """Make these signals, sent to this process, stop `proc`'s group (SIGTERM, then SIGKILL after 10 s) instead of
    leaving it orphaned: for a launcher whose only job is its child (a container's entry point)."""

    def handler(signum: int, _frame: object) -> None:
        threading.Thread(target=proc.stop, daemon=True).start()  # the main thread keeps waiting on the child

    for sig in signals:
        signal.signal(sig, handler)

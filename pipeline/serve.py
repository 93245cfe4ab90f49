"""Serve the characters with LMDeploy's OpenAI-compatible `api_server` and write the hub's endpoints file.

    python -m pipeline.serve --dry-run                       # plan all four from artifacts/train/<id>/merged
    python -m pipeline.serve                                 # one server per merged model, ports 23333, 23334, …
    python -m pipeline.serve --models wukong=/models/wukong bajie=/models/bajie
    python -m pipeline.serve --adapters wukong=artifacts/train/wukong/adapter bajie=… --base-model /models/base

Two layouts:

- `merged` (default): one `lmdeploy serve api_server MODEL --model-name ID` per character (each a merged model
  from `pipeline.train`); with several GPUs (`--devices 0,1,2,3`) each server gets its own;
- `adapters`: one server on the base model with every character's LoRA adapter
  (`--backend pytorch --adapters wukong=… bajie=…`): all four from one GPU, selected by the request's `model`.

Servers bind 127.0.0.1 unless `--host` says otherwise (LMDeploy's own default is 0.0.0.0). The command waits for
each server's `/health`, writes the endpoints file (default `artifacts/serve/endpoints.toml`; point the hub at it
with `XIYOU_ENDPOINTS`), then keeps the servers running until Ctrl-C, which stops them all (as does any server
dying). LMDeploy runs in its own environment (requirements-serve.txt); `--lmdeploy` names its executable.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from pipeline.train import ADAPTER_DIR, DEFAULT_BASE_MODEL, MANIFEST_NAME, MERGED_DIR, default_work_dir
from xiyou.character import CharacterError, character_ids, get_character
from xiyou.endpoints import EndpointConfig, dump_endpoints, parse_endpoints, write_endpoints
from xiyou.env import REPO_ROOT
from xiyou.process import Process, free_port, http_ok, loopback_for, port_in_use, stop_all

DEFAULT_PORT = 23333
DEFAULT_OUT_DIR = REPO_ROOT / "artifacts" / "serve"
LMDEPLOY_ENV_BIN = REPO_ROOT / ".venv-lmdeploy" / "bin" / "lmdeploy"
#: With several servers on one GPU, each may take this share of the free memory for its KV cache (LMDeploy's
#: default, 0.8, would leave nothing for the next server).
SHARED_GPU_CACHE_RATIO = 0.2


class ServeError(RuntimeError):
    """Serving could not start or a server failed; the message says which and what to do."""


class Interrupted(ServeError):
    """Ctrl-C (or SIGTERM) arrived while the servers were starting."""


# --------------------------------------------------------------------------------------------------------------
# the plan


@dataclasses.dataclass(frozen=True)
class ServerSpec:
    """One server process: the command, where it listens, and which model names it serves."""

    name: str
    argv: tuple[str, ...]
    host: str
    port: int
    models: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()

    @property
    def client_host(self) -> str:
        """Where clients on this machine reach it (a wildcard bind is reached on loopback)."""
        return loopback_for(self.host)

    @property
    def base_url(self) -> str:
        host = f"[{self.client_host}]" if ":" in self.client_host else self.client_host
        return f"http://{host}:{self.port}/v1"

    @property
    def health_url(self) -> str:
        return self.base_url.removesuffix("/v1") + "/health"


@dataclasses.dataclass(frozen=True)
class Plan:
    layout: str
    servers: tuple[ServerSpec, ...]
    endpoints: dict[str, EndpointConfig]
    missing: tuple[str, ...] = ()  # folders that do not exist yet (fine for a dry run)


def parse_pairs(items: Sequence[str] | None, what: str) -> dict[str, str]:
    """`ID=PATH` items -> {id: path}, ids checked against the characters."""
    out: dict[str, str] = {}
    known = character_ids()
    for item in items or ():
        cid, sep, path = item.partition("=")
        cid = cid.strip()
        if not sep or not cid or not path.strip():
            raise ServeError(
                f"{what} {item!r}: expected ID=PATH, e.g. {what} wukong=artifacts/train/wukong/{MERGED_DIR}"
            )
        if cid not in known:
            raise ServeError(f"{what} {item!r}: unknown character id {cid!r}; valid ids: {', '.join(known)}")
        if cid in out:
            raise ServeError(f"{what}: {cid} is given twice")
        out[cid] = path.strip()
    return out


def trained_base_model(ids: Sequence[str]) -> str | None:
    """The base model the training step used for these characters (from their run.json), if they agree."""
    found = set()
    for cid in ids:
        manifest = default_work_dir(cid) / MANIFEST_NAME
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(manifest.read_text(encoding="utf-8"))
            found.add(data.get("base_model_path") or data.get("base_model"))
    found.discard(None)
    if len(found) > 1:
        raise ServeError(
            f"the adapters were trained on different base models ({', '.join(sorted(found))}); "
            "one server can only hold one: pass --base-model, or use the merged layout"
        )
    return found.pop() if found else None


def lmdeploy_command(default: str | None = None) -> list[str]:
    """The LMDeploy executable: --lmdeploy, else $XIYOU_LMDEPLOY, else .venv-lmdeploy/bin/lmdeploy, else PATH."""
    value = default or os.environ.get("XIYOU_LMDEPLOY", "").strip()
    if value:
        return shlex.split(value)
    if LMDEPLOY_ENV_BIN.is_file():
        return [str(LMDEPLOY_ENV_BIN)]
    return ["lmdeploy"]


def make_plan(
    *,
    characters: Sequence[str] | None = None,
    models: dict[str, str] | None = None,
    adapters: dict[str, str] | None = None,
    layout: str | None = None,
    base_model: str | None = None,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    backend: str | None = None,
    devices: Sequence[str] = (),
    lmdeploy: Sequence[str] = ("lmdeploy",),
    tp: int = 1,
    session_len: int | None = None,
    cache_max_entry_count: float | None = None,
    extra_args: Sequence[str] = (),
) -> Plan:
    """What to start: the LMDeploy commands and the endpoints file for them. `port=0` picks free ports."""
    models, adapters = dict(models or {}), dict(adapters or {})
    if models and adapters:
        raise ServeError("give --models (one server per merged model) or --adapters (one server), not both")
    layout = layout or ("adapters" if adapters else "merged")
    if layout == "adapters" and models:
        raise ServeError("--layout adapters serves LoRA adapters: pass --adapters ID=PATH, not --models")
    given = adapters if layout == "adapters" else models
    ids = list(characters or given or character_ids())
    for cid in ids:
        get_character(cid)
    unknown = [cid for cid in given if cid not in ids]
    if unknown:
        raise ServeError(f"{', '.join(unknown)} given a path but not in --characters {','.join(ids)}")
    sub = ADAPTER_DIR if layout == "adapters" else MERGED_DIR
    paths = {cid: str(Path(given.get(cid) or default_work_dir(cid) / sub)) for cid in ids}
    missing = [p for p in paths.values() if not Path(p).is_dir()]
    lmdeploy = list(lmdeploy)
    common = [*(["--tp", str(tp)] if tp != 1 else []), *(["--session-len", str(session_len)] if session_len else [])]

    def port_at(i: int) -> int:
        return free_port(host) if port == 0 else port + i

    servers: list[ServerSpec] = []
    endpoints: dict[str, EndpointConfig] = {}
    if layout == "merged":
        backend = backend or "turbomind"
        shared = len(ids) > max(1, len(devices))  # several servers on one GPU
        ratio = (
            cache_max_entry_count if cache_max_entry_count is not None else (SHARED_GPU_CACHE_RATIO if shared else None)
        )
        for i, cid in enumerate(ids):
            p = port_at(i)
            argv = [*lmdeploy, "serve", "api_server", paths[cid], "--server-name", host, "--server-port", str(p)]
            argv += ["--model-name", cid, "--backend", backend, *common]
            if ratio is not None:
                argv += ["--cache-max-entry-count", str(ratio)]
            env = (("CUDA_VISIBLE_DEVICES", devices[i % len(devices)]),) if devices else ()
            spec = ServerSpec(cid, (*argv, *extra_args), host, p, (cid,), env)
            servers.append(spec)
            endpoints[cid] = _endpoint(spec, cid)
    elif layout == "adapters":
        if backend not in (None, "pytorch"):
            raise ServeError("LoRA adapters are served by LMDeploy's pytorch engine: drop --backend or use pytorch")
        base = base_model or trained_base_model(ids) or DEFAULT_BASE_MODEL
        p = port_at(0)
        argv = [*lmdeploy, "serve", "api_server", base, "--server-name", host, "--server-port", str(p)]
        argv += ["--backend", "pytorch", "--adapters", *(f"{cid}={paths[cid]}" for cid in ids), *common]
        if cache_max_entry_count is not None:
            argv += ["--cache-max-entry-count", str(cache_max_entry_count)]
        env = (("CUDA_VISIBLE_DEVICES", ",".join(devices)),) if devices else ()
        if not Path(base).is_dir():  # a model id: LMDeploy downloads it from ModelScope, as pipeline.train did
            env = (*env, ("LMDEPLOY_USE_MODELSCOPE", "True"))
        spec = ServerSpec("adapters", (*argv, *extra_args), host, p, tuple(ids), env)
        servers.append(spec)
        endpoints = {cid: _endpoint(spec, cid) for cid in ids}
    else:
        raise ServeError(f"unknown layout {layout!r}; use merged or adapters")
    return Plan(layout, tuple(servers), endpoints, tuple(missing))


def _endpoint(spec: ServerSpec, model: str) -> EndpointConfig:
    # LMDeploy accepts top_k and repetition_penalty (plain OpenAI servers refuse them).
    return EndpointConfig(base_url=spec.base_url, model=model, send_top_k=True, send_repetition_penalty=True)


def endpoints_text(plan: Plan) -> str:
    text = dump_endpoints(plan.endpoints)
    import tomllib

    parse_endpoints(tomllib.loads(text), "planned endpoints")  # the hub must accept what we print
    return text


# --------------------------------------------------------------------------------------------------------------
# running the servers


@dataclasses.dataclass
class RunningServer:
    spec: ServerSpec
    proc: Process

    @property
    def process(self) -> subprocess.Popen:
        return self.proc.popen

    @property
    def log_path(self) -> Path | None:
        return self.proc.log_path

    def log_tail(self, lines: int = 30) -> str:
        return self.proc.log_tail(lines)

    def alive(self) -> bool:
        return self.proc.alive()


class ServerGroup:
    """Start server processes (each in its own process group), wait for their health, stop them all.

    Used as a context manager: leaving it (normally, by an error or by Ctrl-C) stops every server it started.
    """

    def __init__(
        self,
        specs: Sequence[ServerSpec],
        log_dir: Path,
        *,
        health_timeout_s: float = 900.0,
        stop: threading.Event | None = None,
    ) -> None:
        self.specs = list(specs)
        self.log_dir = Path(log_dir)
        self.health_timeout_s = health_timeout_s
        #: set by the signal handlers: starting gives up, waiting ends
        self.stop = stop or threading.Event()
        self.running: list[RunningServer] = []

    def __enter__(self) -> ServerGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def _start(self, spec: ServerSpec) -> RunningServer:
        if port_in_use(spec.host if spec.host not in ("", "::") else "0.0.0.0", spec.port):
            raise ServeError(f"{spec.name}: port {spec.port} on {spec.host} is already in use; pass --port")
        log_path = self.log_dir / f"{spec.name}.log"
        print(f"[serve] {spec.name}: {shlex.join(spec.argv)}", flush=True)
        try:
            proc = Process.start(spec.argv, log_path=log_path, env=dict(os.environ, **dict(spec.env)))
        except FileNotFoundError:
            raise ServeError(
                f"{spec.name}: cannot run {spec.argv[0]!r}: LMDeploy is not installed there. Create its "
                "environment (python3.11 -m venv .venv-lmdeploy && .venv-lmdeploy/bin/pip install -r "
                "requirements-serve.txt) or pass --lmdeploy /path/to/lmdeploy"
            ) from None
        server = RunningServer(spec, proc)
        self.running.append(server)
        return server

    def _wait_healthy(self, servers: Sequence[RunningServer]) -> None:
        deadline = time.monotonic() + self.health_timeout_s
        pending = list(servers)
        while pending:
            if self.stop.is_set():
                raise Interrupted("interrupted while the servers were starting")
            for server in list(pending):
                if not server.alive():
                    raise ServeError(
                        f"{server.spec.name} exited with code {server.process.returncode} while starting; "
                        f"the end of its log ({server.log_path}):\n{server.log_tail()}"
                    )
                if http_ok(server.spec.health_url):
                    pending.remove(server)
                    print(
                        f"[serve] {server.spec.name} is up: {server.spec.base_url} (pid {server.process.pid})",
                        flush=True,
                    )
            if pending and time.monotonic() > deadline:
                names = ", ".join(s.spec.name for s in pending)
                raise ServeError(
                    f"{names} not healthy after {self.health_timeout_s:.0f} s (see {self.log_dir}); raise "
                    f"--health-timeout for big models. The end of the first log:\n{pending[0].log_tail()}"
                )
            if pending:
                time.sleep(0.5)

    def start_all(self, *, sequential: bool = False) -> None:
        """Start every server and wait until each answers /health; on any failure stop those started, raise."""
        try:
            if sequential:  # one GPU shared: each server sizes its cache from the memory the previous left
                for spec in self.specs:
                    self._wait_healthy([self._start(spec)])
            else:
                self._wait_healthy([self._start(spec) for spec in self.specs])
        except BaseException:
            self.stop_all()
            raise

    def stop_all(self, grace_s: float = 15.0) -> None:
        """SIGTERM every server's process group, then SIGKILL what is left after `grace_s`."""
        stop_all([server.proc for server in self.running], grace_s)
        self.running.clear()

    def wait_until_stopped(self) -> RunningServer | None:
        """Block until `self.stop` is set (Ctrl-C) or a server exits; returns the server that died, if one did."""
        while not self.stop.wait(0.5):
            for server in self.running:
                if not server.alive():
                    return server
        return None


# --------------------------------------------------------------------------------------------------------------
# CLI


def print_plan(plan: Plan, endpoints_out: Path) -> None:
    print(f"# layout: {plan.layout}")
    for spec in plan.servers:
        env = " ".join(f"{k}={v}" for k, v in spec.env)
        print(f"# {spec.name} -> {spec.base_url} (serves {', '.join(spec.models)})")
        print(f"{env + ' ' if env else ''}{shlex.join(spec.argv)}")
    for path in plan.missing:
        print(f"# not there yet: {path} (python -m pipeline.train … writes it)")
    print(f"# endpoints file ({endpoints_out}); run the hub with XIYOU_ENDPOINTS={endpoints_out}")
    print(endpoints_text(plan), end="")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.serve",
        description="Serve the characters with LMDeploy api_server and write the hub's endpoints file.",
    )
    p.add_argument("--characters", help="comma-separated ids (default: those given, else all four)")
    p.add_argument("--models", nargs="+", metavar="ID=PATH", help="merged models (default: artifacts/train/ID/merged)")
    p.add_argument("--adapters", nargs="+", metavar="ID=PATH", help="LoRA adapters: one server, --backend pytorch")
    p.add_argument("--layout", choices=["merged", "adapters"], help="default: adapters if --adapters, else merged")
    p.add_argument(
        "--base-model", help="adapters layout: the base model (default: the one the adapters were trained on)"
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: %(default)s; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="first port (default: %(default)s; 0: free ports)")
    p.add_argument("--backend", choices=["turbomind", "pytorch"], help="LMDeploy engine (merged default: turbomind)")
    p.add_argument("--devices", help="GPU ids, e.g. 0,1,2,3: merged servers take one each, in turn")
    p.add_argument("--tp", type=int, default=1, help="tensor parallel GPUs per server")
    p.add_argument("--session-len", type=int, help="max tokens per session")
    p.add_argument("--cache-max-entry-count", type=float, help="KV cache share of free GPU memory")
    p.add_argument(
        "--lmdeploy", help="the lmdeploy command (default: $XIYOU_LMDEPLOY, .venv-lmdeploy/bin/lmdeploy, PATH)"
    )
    p.add_argument(
        "--endpoints-out", type=Path, default=DEFAULT_OUT_DIR / "endpoints.toml", help="(default: %(default)s)"
    )
    p.add_argument("--log-dir", type=Path, default=DEFAULT_OUT_DIR / "logs", help="server logs (default: %(default)s)")
    p.add_argument("--health-timeout", type=float, default=900.0, help="seconds to wait for each server")
    p.add_argument("--dry-run", action="store_true", help="print the commands and the endpoints file; start nothing")
    p.add_argument("extra", nargs="*", help="after --: extra arguments for every lmdeploy command")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        plan = make_plan(
            characters=[c.strip() for c in args.characters.split(",") if c.strip()] if args.characters else None,
            models=parse_pairs(args.models, "--models"),
            adapters=parse_pairs(args.adapters, "--adapters"),
            layout=args.layout,
            base_model=args.base_model,
            host=args.host,
            port=args.port,
            backend=args.backend,
            devices=[d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else (),
            lmdeploy=lmdeploy_command(args.lmdeploy),
            tp=args.tp,
            session_len=args.session_len,
            cache_max_entry_count=args.cache_max_entry_count,
            extra_args=args.extra,
        )
        if args.dry_run:
            print_plan(plan, args.endpoints_out)
            return 0
        if plan.missing:
            raise ServeError(
                "missing model folders: " + ", ".join(plan.missing) + ". Train them first (python -m pipeline.train "
                "ID --data …), or pass --models ID=PATH / --adapters ID=PATH"
            )
        return serve(plan, args.endpoints_out, args.log_dir, health_timeout_s=args.health_timeout)
    except (ServeError, CharacterError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def serve(plan: Plan, endpoints_out: Path, log_dir: Path, *, health_timeout_s: float = 900.0) -> int:
    """Start the plan's servers, write the endpoints file, run until Ctrl-C/SIGTERM or a server dies."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    devices = {dict(s.env).get("CUDA_VISIBLE_DEVICES") for s in plan.servers}
    try:
        with ServerGroup(plan.servers, log_dir, health_timeout_s=health_timeout_s, stop=stop) as group:
            group.start_all(sequential=len(devices) < len(plan.servers))
            write_endpoints(endpoints_out, plan.endpoints)
            print(f"[serve] all {len(plan.servers)} server(s) up; endpoints file: {endpoints_out}", flush=True)
            print(
                f"[serve] hub: XIYOU_ENDPOINTS={endpoints_out} make run     (Ctrl-C here stops the servers)", flush=True
            )
            died = group.wait_until_stopped()
            if died is not None:
                print(
                    f"error: {died.spec.name} exited with code {died.process.returncode}; stopping the others. "
                    f"The end of its log ({died.log_path}):\n{died.log_tail()}",
                    file=sys.stderr,
                    flush=True,
                )
                return 1
            print("[serve] stopping the servers", flush=True)
            return 0
    except Interrupted:
        print("[serve] interrupted; the servers are stopped", file=sys.stderr)
        return 130
    except ServeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


if __name__ == "__main__":
    sys.exit(main())

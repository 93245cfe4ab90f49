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
import sys
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from pipeline.train import ADAPTER_DIR, DEFAULT_BASE_MODEL, MANIFEST_NAME, MERGED_DIR, default_work_dir
from xiyou.character import CharacterError, character_ids, get_character
from xiyou.endpoints import EndpointConfig, dump_endpoints, parse_endpoints, write_endpoints
from xiyou.env import REPO_ROOT
from xiyou.process import WILDCARD_HOSTS, Process, free_port, http_ok, loopback_for, port_in_use, stop_all

DEFAULT_PORT = 23333
DEFAULT_PROXY_PORT = 8000  # LMDeploy's own default for `lmdeploy serve proxy`
#: How often LMDeploy's proxy checks its servers' /health and drops the dead ones (its default: 90 s). Until then
#: it still routes to a dead server, and answers HTTP 200 with {"error_code": 10402, …}.
PROXY_HEARTBEAT_S = 15
ROUTING_STRATEGIES = ("min_expected_latency", "min_observed_latency", "random")
LOCAL = "local"
#: Options of `lmdeploy serve api_server` this command sets itself; after `--` they would silently override it.
PLANNED_OPTIONS = {
    "--server-name": "--host",
    "--server-port": "--port",
    "--model-name": "--models/--characters (the character id is the model name)",
    "--adapters": "--adapters",
    "--backend": "--backend",
    "--proxy-url": "--proxy",
    "--tp": "--tp",
    "--session-len": "--session-len",
    "--cache-max-entry-count": "--cache-max-entry-count",
}
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
    node: str = LOCAL
    health_path: str = "/health"

    @property
    def client_host(self) -> str:
        """Where clients on this machine reach it (a wildcard bind is reached on loopback)."""
        return loopback_for(self.host)

    @property
    def base_url(self) -> str:
        host = f"[{self.client_host}]" if ":" in self.client_host else self.client_host
        return f"http://{host}:{self.port}/v1"

    @property
    def root_url(self) -> str:
        return self.base_url.removesuffix("/v1")

    @property
    def health_url(self) -> str:
        return self.root_url + self.health_path


@dataclasses.dataclass(frozen=True)
class Node:
    """A machine of a cluster (`--nodes FILE`): its name, the address the others reach it at, its GPU ids."""

    name: str
    address: str
    gpus: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Plan:
    layout: str
    servers: tuple[ServerSpec, ...]
    endpoints: dict[str, EndpointConfig]
    missing: tuple[str, ...] = ()  # folders that do not exist yet (fine for a dry run)
    proxy: ServerSpec | None = None  # `lmdeploy serve proxy`: the servers register with it, clients ask it
    nodes: tuple[Node, ...] = ()  # a cluster plan: printed per node, run there by hand


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


def port_number(value: str) -> int:
    """argparse type: a TCP port, or 0 for free ports."""
    try:
        port = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1-65535, or 0 for free ports)")
    return port


def check_extra_args(extra: Sequence[str]) -> None:
    """Refuse extra LMDeploy arguments that would override what the plan sets (`-- --server-name 0.0.0.0` would
    silently expose a server started with `--host 127.0.0.1`)."""
    for arg in extra:
        option = arg.split("=", 1)[0]
        if option in PLANNED_OPTIONS:
            raise ServeError(
                f"extra argument {arg!r} after -- would override what pipeline.serve sets; "
                f"use {PLANNED_OPTIONS[option]} instead"
            )


def exposure_warnings(plan: Plan, extra: Sequence[str] = ()) -> list[str]:
    """What a person should know before binding beyond loopback: LMDeploy's servers check no API key by default."""
    keyed = any(a.split("=", 1)[0] == "--api-keys" for a in extra)
    out = [
        f"warning: {s.name} binds {s.host or '0.0.0.0'}:{s.port}, reachable from other machines, and LMDeploy runs "
        "without API keys: anyone who reaches it can use the model. Keep it behind a firewall, or pass "
        "`-- --api-keys KEY` (and api_key_env in the endpoints file)."
        for s in plan.servers
        if s.host in WILDCARD_HOSTS and not keyed
    ]
    if plan.proxy is not None and plan.proxy.host in WILDCARD_HOSTS:
        out.append(
            f"warning: the proxy binds {plan.proxy.host or '0.0.0.0'}:{plan.proxy.port}, reachable from other "
            "machines, and checks no API key: anyone who reaches it can use every character. Keep it behind a "
            "firewall, or bind it to one address (--proxy-host)."
        )
    return out


def load_nodes(path: Path) -> tuple[Node, ...]:
    """A cluster file: `[[node]]` tables with `name`, `address` (how the other nodes reach it) and `gpus` (a count,
    or a list of GPU ids). The first node runs the proxy."""
    import tomllib

    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ServeError(f"--nodes {path}: cannot read it ({e})") from None
    tables = raw.get("node")
    example = '[[node]]\nname = "gpu-a"\naddress = "10.0.0.1"\ngpus = 4'
    if not isinstance(tables, list) or not tables:
        raise ServeError(f"--nodes {path}: no [[node]] tables; each node is one, e.g.\n{example}")
    nodes: list[Node] = []
    for i, t in enumerate(tables, 1):
        where = f"--nodes {path}: node {i}"
        if not isinstance(t, dict) or set(t) - {"name", "address", "gpus"}:
            raise ServeError(f"{where}: only name, address and gpus are known, e.g.\n{example}")
        name, address, gpus = t.get("name"), t.get("address"), t.get("gpus")
        if not isinstance(name, str) or not name.strip() or not isinstance(address, str) or not address.strip():
            raise ServeError(f"{where}: name and address must be non-empty strings")
        if address in WILDCARD_HOSTS:
            raise ServeError(f"{where}: address {address!r} is not one the other nodes can reach; give its IP or name")
        if isinstance(gpus, int) and not isinstance(gpus, bool) and 1 <= gpus <= 64:
            ids = tuple(str(g) for g in range(gpus))
        elif isinstance(gpus, list) and gpus and all(isinstance(g, int) and not isinstance(g, bool) for g in gpus):
            ids = tuple(str(g) for g in gpus)
        else:
            raise ServeError(f"{where} ({name}): gpus must be a count (1-64) or a list of GPU ids, got {gpus!r}")
        if name in {n.name for n in nodes}:
            raise ServeError(f"{where}: the name {name!r} is used twice")
        nodes.append(Node(name.strip(), address.strip(), ids))
    return tuple(nodes)


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
    proxy_port: int | None = None,
    proxy_host: str = "127.0.0.1",
    routing_strategy: str = "min_expected_latency",
    proxy_heartbeat_s: int = PROXY_HEARTBEAT_S,
    nodes: Sequence[Node] = (),
) -> Plan:
    """What to start: the LMDeploy commands and the endpoints file for them. `port=0` picks free ports.

    With `proxy_port`, `lmdeploy serve proxy` comes first, every api_server registers with it (`--proxy-url`) and
    the endpoints file points every character at the proxy, which routes by model name; the servers then fill
    every GPU (a character on several GPUs is served by several replicas). With `nodes` (a cluster), the proxy
    runs on the first node at its address, each node's servers bind that node's address, and the plan is printed
    per node."""
    check_extra_args(extra_args)
    if tp < 1:
        raise ServeError(f"--tp must be at least 1, got {tp}")
    if routing_strategy not in ROUTING_STRATEGIES:
        raise ServeError(f"unknown routing strategy {routing_strategy!r}; use one of {', '.join(ROUTING_STRATEGIES)}")
    if proxy_heartbeat_s < 1:
        raise ServeError(f"--proxy-heartbeat must be at least 1 second, got {proxy_heartbeat_s}")
    models, adapters = dict(models or {}), dict(adapters or {})
    if models and adapters:
        raise ServeError("give --models (one server per merged model) or --adapters (one server), not both")
    layout = layout or ("adapters" if adapters else "merged")
    if layout not in ("merged", "adapters"):
        raise ServeError(f"unknown layout {layout!r}; use merged or adapters")
    if layout == "adapters" and models:
        raise ServeError("--layout adapters serves LoRA adapters: pass --adapters ID=PATH, not --models")
    if layout == "adapters" and backend not in (None, "pytorch"):
        raise ServeError("LoRA adapters are served by LMDeploy's pytorch engine: drop --backend or use pytorch")
    given = adapters if layout == "adapters" else models
    ids = list(characters or given or character_ids())
    for cid in ids:
        get_character(cid)
    unknown = [cid for cid in given if cid not in ids]
    if unknown:
        raise ServeError(f"{', '.join(unknown)} given a path but not in --characters {','.join(ids)}")
    sub = ADAPTER_DIR if layout == "adapters" else MERGED_DIR
    paths = {cid: str(Path(given.get(cid) or default_work_dir(cid) / sub)) for cid in ids}
    missing = [] if nodes else [p for p in paths.values() if not Path(p).is_dir()]
    if nodes and port == 0:
        raise ServeError("--nodes needs fixed ports (the other nodes must know them): pass --port, not 0")
    if nodes and devices:
        raise ServeError("--nodes names each node's GPUs; --devices is for one machine")
    cluster = tuple(nodes) or (Node(LOCAL, host, tuple(devices)),)
    lmdeploy = list(lmdeploy)
    common = [*(["--tp", str(tp)] if tp != 1 else []), *(["--session-len", str(session_len)] if session_len else [])]

    proxy: ServerSpec | None = None
    if nodes and proxy_port is None:
        proxy_port = DEFAULT_PROXY_PORT  # several machines: the proxy is how clients reach every server
    if proxy_port is not None:
        p_host = cluster[0].address if nodes else proxy_host
        p_port = free_port(p_host) if proxy_port == 0 else proxy_port
        argv = [*lmdeploy, "serve", "proxy", "--server-name", p_host, "--server-port", str(p_port)]
        # --disable-cache-status: a fresh proxy knows only this run's servers (it otherwise reloads the nodes it saw
        # last time from its own package folder, and routes requests to servers long gone).
        argv += ["--routing-strategy", routing_strategy, "--disable-cache-status"]
        env = (("LMDEPLOY_CONTROLLER_HEART_BEAT_EXPIRATION", str(proxy_heartbeat_s)),)
        proxy = ServerSpec("proxy", tuple(argv), p_host, p_port, tuple(ids), env, cluster[0].name, "/v1/models")
    to_proxy = ["--proxy-url", proxy.root_url] if proxy else []

    next_port: dict[str, int] = {}

    def port_on(node: Node) -> int:
        if port == 0:
            return free_port(node.address)
        p = next_port.get(node.name, port)
        if p > 65535:
            raise ServeError(f"--port {port}: the servers on {node.name} would need ports past 65535")
        next_port[node.name] = p + 1
        if proxy is not None and p == proxy.port and node.name == proxy.node:
            return port_on(node)  # the proxy holds it
        return p

    # GPU slots: each server takes `tp` GPUs of one node (no GPUs named: one slot, the default GPU).
    slots = [
        (node, ",".join(node.gpus[i : i + tp]) if node.gpus else None)
        for node in cluster
        for i in (range(0, len(node.gpus) - tp + 1, tp) if node.gpus else (0,))
    ]
    if not slots:
        raise ServeError(f"--tp {tp}: no node has {tp} GPUs")
    servers: list[ServerSpec] = []
    if layout == "merged":
        backend = backend or "turbomind"
        # Without a proxy a client reaches one server per character; with one, every GPU serves (replicas).
        count = max(len(ids), len(slots)) if proxy else len(ids)
        shared = count > len(slots)  # several servers on one GPU
        ratio = (
            cache_max_entry_count if cache_max_entry_count is not None else (SHARED_GPU_CACHE_RATIO if shared else None)
        )
        for j in range(count):
            cid, (node, gpu) = ids[j % len(ids)], slots[j % len(slots)]
            p = port_on(node)
            argv = [
                *lmdeploy,
                "serve",
                "api_server",
                paths[cid],
                "--server-name",
                node.address,
                "--server-port",
                str(p),
            ]
            argv += ["--model-name", cid, "--backend", backend, *common]
            if ratio is not None:
                argv += ["--cache-max-entry-count", str(ratio)]
            name = cid if count == len(ids) else f"{cid}-{j // len(ids) + 1}"
            env = (("CUDA_VISIBLE_DEVICES", gpu),) if gpu is not None else ()
            servers.append(ServerSpec(name, (*argv, *to_proxy, *extra_args), node.address, p, (cid,), env, node.name))
    else:
        base = base_model or trained_base_model(ids) or DEFAULT_BASE_MODEL
        if not proxy:  # one server holds every adapter, on all the GPUs given
            slots = [(cluster[0], ",".join(cluster[0].gpus) if cluster[0].gpus else None)]
        for j, (node, gpu) in enumerate(slots):
            p = port_on(node)
            argv = [*lmdeploy, "serve", "api_server", base, "--server-name", node.address, "--server-port", str(p)]
            argv += ["--backend", "pytorch", "--adapters", *(f"{cid}={paths[cid]}" for cid in ids), *common]
            if cache_max_entry_count is not None:
                argv += ["--cache-max-entry-count", str(cache_max_entry_count)]
            env = (("CUDA_VISIBLE_DEVICES", gpu),) if gpu is not None else ()
            if not Path(base).is_dir() and not base.startswith(("/", ".", "~")):  # a ModelScope id, as in training
                env = (*env, ("LMDEPLOY_USE_MODELSCOPE", "True"))
            name = "adapters" if len(slots) == 1 else f"adapters-{j + 1}"
            servers.append(
                ServerSpec(name, (*argv, *to_proxy, *extra_args), node.address, p, tuple(ids), env, node.name)
            )
    if proxy is not None:
        endpoints = {cid: _endpoint(proxy, cid) for cid in ids}
    else:
        endpoints = {cid: _endpoint(next(s for s in servers if cid in s.models), cid) for cid in ids}
    return Plan(layout, tuple(servers), endpoints, tuple(missing), proxy, tuple(nodes))


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
    """A started server: what was asked for (`spec`) and its process (`proc`: pid, log, alive, stop)."""

    spec: ServerSpec
    proc: Process


def _proxy_request(proxy: ServerSpec, path: str, body: dict | None = None, timeout: float = 5.0) -> object:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(proxy.root_url + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.load(r)


def forget_earlier_servers(proxy: ServerSpec) -> list[str]:
    """Remove every server a fresh proxy lists: LMDeploy's proxy reloads the servers of its last run from a file in
    its own package folder (even with --disable-cache-status) and would route requests to them. Returns them."""
    try:
        nodes = _proxy_request(proxy, "/nodes/status")
    except (OSError, ValueError):
        return []
    urls = list(nodes) if isinstance(nodes, dict) else []
    for url in urls:  # LMDeploy 0.18 reads the JSON body; older versions the node_url query parameter
        query = urllib.parse.urlencode({"node_url": url})
        with contextlib.suppress(OSError, ValueError):
            _proxy_request(proxy, f"/nodes/remove?{query}", {"url": url})
    return urls


def proxy_models(proxy: ServerSpec, timeout: float = 5.0) -> list[str]:
    """The model names the proxy routes right now ([] when it does not answer)."""
    try:
        with urllib.request.urlopen(f"{proxy.base_url}/models", timeout=timeout) as r:
            return [m["id"] for m in json.load(r).get("data", [])]
    except (OSError, ValueError, KeyError, TypeError):
        return []


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
                if not server.proc.alive():
                    raise ServeError(
                        f"{server.spec.name} exited with code {server.proc.returncode} while starting; "
                        f"the end of its log ({server.proc.log_path}):\n{server.proc.log_tail()}"
                    )
                if http_ok(server.spec.health_url):
                    pending.remove(server)
                    print(
                        f"[serve] {server.spec.name} is up: {server.spec.base_url} (pid {server.proc.pid})",
                        flush=True,
                    )
            if pending and time.monotonic() > deadline:
                names = ", ".join(s.spec.name for s in pending)
                raise ServeError(
                    f"{names} not healthy after {self.health_timeout_s:.0f} s (see {self.log_dir}); raise "
                    f"--health-timeout for big models. The end of the first log:\n{pending[0].proc.log_tail()}"
                )
            if pending:
                time.sleep(0.5)

    def start_all(self, *, sequential: bool = False) -> None:
        """Start every server and wait until each answers /health; on any failure stop those started, raise."""
        self.start(self.specs, sequential=sequential)

    def start(self, specs: Sequence[ServerSpec], *, sequential: bool = False) -> None:
        """Start these servers (in addition to those running) and wait for their health; on any failure stop every
        server of the group, raise."""
        try:
            if sequential:  # one GPU shared: each server sizes its cache from the memory the previous left
                for spec in specs:
                    self._wait_healthy([self._start(spec)])
            else:
                self._wait_healthy([self._start(spec) for spec in specs])
        except BaseException:
            self.stop_all()
            raise

    def wait_registered(self, proxy: ServerSpec, models: Sequence[str]) -> None:
        """Wait until the proxy lists every model name (each api_server registers itself once it is up)."""
        deadline = time.monotonic() + self.health_timeout_s
        listed: set[str] = set()
        while not set(models) <= listed:
            if self.stop.is_set():
                raise Interrupted("interrupted while the servers were registering with the proxy")
            if time.monotonic() > deadline:
                missing = ", ".join(sorted(set(models) - listed))
                raise ServeError(
                    f"the proxy ({proxy.root_url}) does not list {missing} after {self.health_timeout_s:.0f} s: those "
                    f"servers did not register with it (see their logs in {self.log_dir})"
                )
            listed = set(proxy_models(proxy))
            if not set(models) <= listed:
                self.stop.wait(0.5)

    def stop_all(self, grace_s: float = 15.0) -> None:
        """SIGTERM every server's process group, then SIGKILL what is left after `grace_s`."""
        stop_all([server.proc for server in self.running], grace_s)
        self.running.clear()

    def wait_until_stopped(self) -> RunningServer | None:
        """Block until `self.stop` is set (Ctrl-C) or a server exits; returns the server that died, if one did."""
        while not self.stop.wait(0.5):
            for server in self.running:
                if not server.proc.alive():
                    return server
        return None


# --------------------------------------------------------------------------------------------------------------
# CLI


def _command_line(spec: ServerSpec) -> str:
    env = " ".join(f"{k}={v}" for k, v in spec.env)
    return f"{env + ' ' if env else ''}{shlex.join(spec.argv)}"


def print_plan(plan: Plan, endpoints_out: Path, *, endpoints: bool = True) -> None:
    print(f"# layout: {plan.layout}{' behind a proxy' if plan.proxy else ''}")
    for node in plan.nodes or (Node(LOCAL, "", ()),):
        specs = [s for s in (plan.proxy, *plan.servers) if s is not None and s.node == node.name]
        if plan.nodes:
            print(f"\n# === on {node.name} ({node.address}, GPUs {','.join(node.gpus)}): run these there ===")
        for spec in specs:
            role = "the proxy, started first; it routes by model name"
            if spec is not plan.proxy:
                role = f"serves {', '.join(spec.models)}"
            print(f"# {spec.name} -> {spec.base_url} ({role})")
            print(_command_line(spec))
    for path in plan.missing:
        print(f"# not there yet: {path} (python -m pipeline.train … writes it)")
    if plan.nodes:
        ports = ", ".join(map(str, sorted({s.port for s in plan.servers})))
        first = plan.nodes[0].name
        proxy_port = plan.proxy.port if plan.proxy else "?"
        print(
            f"\n# firewall: open {proxy_port}/tcp on {first} (the proxy) to the hub's machine and to every node; "
            f"{ports}/tcp on each node to {first} (the proxy calls the servers). Nothing binds 0.0.0.0."
        )
    if endpoints:
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
    p.add_argument(
        "--port", type=port_number, default=DEFAULT_PORT, help="first port (default: %(default)s; 0: free ports)"
    )
    p.add_argument(
        "--proxy",
        type=port_number,
        nargs="?",
        const=DEFAULT_PROXY_PORT,
        metavar="PORT",
        help=f"put `lmdeploy serve proxy` in front (port default {DEFAULT_PROXY_PORT}; 0: a free one): the servers "
        "register with it, fill every GPU, and the endpoints file points at it",
    )
    p.add_argument("--proxy-host", default="127.0.0.1", help="the proxy's bind address (default: %(default)s)")
    p.add_argument(
        "--routing-strategy",
        choices=ROUTING_STRATEGIES,
        default="min_expected_latency",
        help="how the proxy picks a server for a model (default: %(default)s)",
    )
    p.add_argument(
        "--proxy-heartbeat",
        type=int,
        default=PROXY_HEARTBEAT_S,
        metavar="SECONDS",
        help="how often the proxy checks its servers and drops a dead one; until then it still routes to it "
        "(default: %(default)s; LMDeploy's own: 90)",
    )
    p.add_argument(
        "--nodes",
        type=Path,
        metavar="FILE",
        help="a cluster (TOML: [[node]] name, address, gpus): print each node's commands, the proxy on the first",
    )
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
            proxy_port=args.proxy,
            proxy_host=args.proxy_host,
            routing_strategy=args.routing_strategy,
            proxy_heartbeat_s=args.proxy_heartbeat,
            nodes=load_nodes(args.nodes) if args.nodes else (),
        )
        for warning in exposure_warnings(plan, args.extra):
            print(warning, file=sys.stderr)
        if args.dry_run:
            print_plan(plan, args.endpoints_out)
            return 0
        if plan.nodes:  # nothing to start here: each node runs its own commands
            print_plan(plan, args.endpoints_out, endpoints=False)
            write_endpoints(args.endpoints_out, plan.endpoints)
            print(f"# endpoints file written: {args.endpoints_out} (XIYOU_ENDPOINTS for the hub)")
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
            if plan.proxy is not None:  # first: each api_server registers with it as it starts
                group.start([plan.proxy])
                if stale := forget_earlier_servers(plan.proxy):
                    print(f"[serve] the proxy remembered {len(stale)} server(s) of an earlier run; removed", flush=True)
            group.start(plan.servers, sequential=len(devices) < len(plan.servers))
            if plan.proxy is not None:
                group.wait_registered(plan.proxy, list(plan.endpoints))
                print(f"[serve] the proxy routes {', '.join(plan.endpoints)}: {plan.proxy.base_url}", flush=True)
            write_endpoints(endpoints_out, plan.endpoints)
            print(f"[serve] all {len(plan.servers)} server(s) up; endpoints file: {endpoints_out}", flush=True)
            print(
                f"[serve] hub: XIYOU_ENDPOINTS={endpoints_out} make run     (Ctrl-C here stops the servers)", flush=True
            )
            died = group.wait_until_stopped()
            if died is not None:
                print(
                    f"error: {died.spec.name} exited with code {died.proc.returncode}; stopping the others. "
                    f"The end of its log ({died.proc.log_path}):\n{died.proc.log_tail()}",
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

"""pipeline.serve: the LMDeploy commands it plans, the endpoints file the hub reads, and its process management.

Process management runs the real code path with the scripted OpenAI server standing in for LMDeploy's api_server
(tests/lmdeploy_standin.py translates LMDeploy's command line; each server answers with the model name it was asked
for), and LMDeploy's own proxy where it is installed, on free 127.0.0.1 ports.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from pipeline import serve
from pipeline.serve import ServeError
from xiyou.backends.base import BackendError, GenerationSettings, collect
from xiyou.backends.factory import make_backend
from xiyou.character import character_ids, get_character
from xiyou.endpoints import load_endpoints
from xiyou.env import REPO_ROOT
from xiyou.process import http_ok

STANDIN = Path(__file__).with_name("lmdeploy_standin.py")


def standin_command() -> list[str]:
    return [sys.executable, str(STANDIN)]


def dry_run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[list[list[str]], str]:
    """Run `pipeline.serve --dry-run ARGS`: (the commands it prints, split; the endpoints TOML it prints)."""
    assert serve.main(["--dry-run", "--lmdeploy", "lmdeploy", *args]) == 0
    out = capsys.readouterr().out
    head, _, toml = out.partition("# endpoints file")
    toml = toml.split("\n", 1)[1]
    commands = []
    for line in head.splitlines():
        if not line.startswith("#") and "serve api_server" in line:
            argv = shlex.split(line)
            commands.append(argv[argv.index("lmdeploy") :])  # after any VAR=value prefix
    return commands, toml


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_dry_run_without_arguments_plans_all_four_merged_models(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    commands, toml = dry_run(capsys)
    assert len(commands) == 4
    for cid, argv in zip(character_ids(), commands):
        assert argv[:3] == ["lmdeploy", "serve", "api_server"]
        assert argv[3] == str(REPO_ROOT / "artifacts" / "train" / cid / "merged")
        assert option(argv, "--server-name") == "127.0.0.1"
        assert option(argv, "--model-name") == cid
    assert len({option(argv, "--server-port") for argv in commands}) == 4
    # The endpoints file it prints is one the hub accepts, and points each character at its own server.
    path = tmp_path / "endpoints.toml"
    path.write_text(toml, encoding="utf-8")
    endpoints = load_endpoints(path)
    assert list(endpoints) == character_ids()
    for cid, argv in zip(character_ids(), commands):
        assert endpoints[cid].base_url == f"http://127.0.0.1:{option(argv, '--server-port')}/v1"
        assert endpoints[cid].model == cid
        assert endpoints[cid].send_top_k and endpoints[cid].send_repetition_penalty  # LMDeploy accepts them


def test_dry_run_adapters_layout_is_one_pytorch_server_for_all(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    base = tmp_path / "base"
    base.mkdir()
    commands, toml = dry_run(
        capsys, "--adapters", "wukong=/a/wukong", "bajie=/a/bajie", "--base-model", str(base), "--port", "24000"
    )
    assert len(commands) == 1
    argv = commands[0]
    assert argv[3] == str(base)
    assert option(argv, "--backend") == "pytorch"
    assert argv[argv.index("--adapters") + 1 : argv.index("--adapters") + 3] == ["wukong=/a/wukong", "bajie=/a/bajie"]
    assert option(argv, "--server-name") == "127.0.0.1" and option(argv, "--server-port") == "24000"
    endpoints = tomllib.loads(toml)
    assert endpoints == {
        cid: {
            "base_url": "http://127.0.0.1:24000/v1",
            "model": cid,
            "send_top_k": True,
            "send_repetition_penalty": True,
        }
        for cid in ("wukong", "bajie")
    }


def test_host_is_explicit_and_clients_use_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    commands, toml = dry_run(capsys, "--characters", "wukong", "--host", "0.0.0.0")
    assert option(commands[0], "--server-name") == "0.0.0.0"
    assert tomllib.loads(toml)["wukong"]["base_url"] == "http://127.0.0.1:23333/v1"


def test_devices_give_each_merged_server_its_own_gpu(capsys: pytest.CaptureFixture[str]) -> None:
    plan = serve.make_plan(devices=["0", "1", "2", "3"])
    assert [dict(s.env)["CUDA_VISIBLE_DEVICES"] for s in plan.servers] == ["0", "1", "2", "3"]
    assert all("--cache-max-entry-count" not in s.argv for s in plan.servers)  # each has a GPU of its own
    shared = serve.make_plan()
    assert all(s.argv[s.argv.index("--cache-max-entry-count") + 1] == "0.2" for s in shared.servers)


def test_adapters_default_to_the_base_model_they_were_trained_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(serve, "default_work_dir", lambda cid: tmp_path / cid)
    for cid in ("wukong", "bajie"):
        (tmp_path / cid).mkdir()
        (tmp_path / cid / "run.json").write_text(json.dumps({"base_model_path": "/models/base"}), encoding="utf-8")
    plan = serve.make_plan(layout="adapters", characters=["wukong", "bajie"])
    assert plan.servers[0].argv[3] == "/models/base"
    (tmp_path / "bajie" / "run.json").write_text(json.dumps({"base_model_path": "/models/other"}), encoding="utf-8")
    with pytest.raises(ServeError, match="different base models"):
        serve.make_plan(layout="adapters", characters=["wukong", "bajie"])


def test_bad_arguments_say_what_to_do(capsys: pytest.CaptureFixture[str]) -> None:
    assert serve.main(["--dry-run", "--models", "monkey=/m"]) == 1
    assert "unknown character id 'monkey'" in capsys.readouterr().err
    assert serve.main(["--dry-run", "--models", "wukong"]) == 1
    assert "expected ID=PATH" in capsys.readouterr().err
    assert serve.main(["--dry-run", "--models", "wukong=/m", "--adapters", "bajie=/a"]) == 1
    assert "not both" in capsys.readouterr().err
    assert serve.main(["--dry-run", "--adapters", "wukong=/a", "--backend", "turbomind"]) == 1
    assert "pytorch" in capsys.readouterr().err
    # Not a dry run: missing model folders are named, with the command that makes them.
    assert serve.main(["--models", "wukong=/nonexistent/merged"]) == 1
    err = capsys.readouterr().err
    assert "/nonexistent/merged" in err and "pipeline.train" in err


# --- behind LMDeploy's proxy, and across several machines --------------------------------------------------


def test_proxy_plan_starts_the_proxy_first_and_points_every_character_at_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert serve.main(["--dry-run", "--lmdeploy", "lmdeploy", "--proxy", "--characters", "wukong,bajie"]) == 0
    out = capsys.readouterr().out
    head, _, toml = out.partition("# endpoints file")
    lines = [shlex.split(x) for x in head.splitlines() if "lmdeploy serve" in x and not x.startswith("#")]
    assert lines[0][0] == "LMDEPLOY_CONTROLLER_HEART_BEAT_EXPIRATION=15"  # dead servers dropped within 15 s
    assert serve.main(["--dry-run", "--lmdeploy", "lmdeploy", "--proxy", "--proxy-heartbeat", "5"]) == 0
    assert "LMDEPLOY_CONTROLLER_HEART_BEAT_EXPIRATION=5 lmdeploy serve proxy" in capsys.readouterr().out
    assert serve.main(["--dry-run", "--lmdeploy", "lmdeploy", "--proxy", "--proxy-heartbeat", "0"]) == 1
    assert "--proxy-heartbeat must be at least 1 second, got 0" in capsys.readouterr().err
    proxy, servers = lines[0][1:], lines[1:]
    assert proxy[:3] == ["lmdeploy", "serve", "proxy"]
    assert option(proxy, "--server-name") == "127.0.0.1" and option(proxy, "--server-port") == "8000"
    assert option(proxy, "--routing-strategy") == "min_expected_latency" and "--disable-cache-status" in proxy
    assert [option(a, "--model-name") for a in servers] == ["wukong", "bajie"]
    assert all(option(a, "--proxy-url") == "http://127.0.0.1:8000" for a in servers)
    assert all(option(a, "--server-name") == "127.0.0.1" for a in servers)
    path = tmp_path / "endpoints.toml"
    path.write_text(toml.split("\n", 1)[1], encoding="utf-8")
    endpoints = load_endpoints(path)
    assert {cid: (e.base_url, e.model) for cid, e in endpoints.items()} == {
        "wukong": ("http://127.0.0.1:8000/v1", "wukong"),  # the proxy routes by model name
        "bajie": ("http://127.0.0.1:8000/v1", "bajie"),
    }
    plan = serve.make_plan(characters=["wukong"], proxy_port=9100, routing_strategy="random", devices=["0", "1"])
    assert plan.proxy is not None and option(list(plan.proxy.argv), "--routing-strategy") == "random"
    assert plan.proxy.port == 9100
    # Behind a proxy every GPU serves: two replicas of 悟空, one per GPU, both registering with it.
    assert [(s.name, dict(s.env)["CUDA_VISIBLE_DEVICES"]) for s in plan.servers] == [
        ("wukong-1", "0"),
        ("wukong-2", "1"),
    ]
    with pytest.raises(ServeError, match="unknown routing strategy"):
        serve.make_plan(proxy_port=9100, routing_strategy="fastest")


NODES = """
[[node]]
name = "gpu-a"
address = "10.0.0.1"
gpus = 2

[[node]]
name = "gpu-b"
address = "10.0.0.2"
gpus = [0, 1, 2, 3]
"""


def _node_sections(out: str) -> dict[str, list[list[str]]]:
    sections: dict[str, list[list[str]]] = {}
    current = ""
    for line in out.splitlines():
        if line.startswith("# === on "):
            current = line.split()[3]
            sections[current] = []
        elif current and line and not line.startswith("#"):
            argv = shlex.split(line)
            sections[current].append(argv[argv.index("lmdeploy") :] if "lmdeploy" in argv else argv)
            sections[current][-1].insert(0, " ".join(a for a in argv[: argv.index("lmdeploy")]))  # the env prefix
        elif line.startswith("# firewall") or line.startswith("# endpoints"):
            current = ""
    return sections


@pytest.mark.parametrize("layout", ["merged", "adapters"])
def test_nodes_file_prints_each_nodes_commands_with_the_proxy_on_the_first(
    layout: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    nodes = tmp_path / "nodes.toml"
    nodes.write_text(NODES, encoding="utf-8")
    args = ["--nodes", str(nodes), "--lmdeploy", "lmdeploy", "--dry-run"]
    if layout == "adapters":
        args += ["--adapters", *(f"{cid}=/runs/{cid}/adapter" for cid in character_ids()), "--base-model", "/m/base"]
    assert serve.main(args) == 0
    out = capsys.readouterr().out
    sections = _node_sections(out)
    assert list(sections) == ["gpu-a", "gpu-b"]
    first = sections["gpu-a"][0]
    assert first[1:4] == ["lmdeploy", "serve", "proxy"] and option(first, "--server-name") == "10.0.0.1"
    servers = {name: [a for a in cmds if "api_server" in a] for name, cmds in sections.items()}
    assert not any("proxy" in a[3] for a in sections["gpu-b"])  # one proxy, on the first node
    used = {name: [a[0] for a in cmds] for name, cmds in servers.items()}
    assert used == {
        "gpu-a": [f"CUDA_VISIBLE_DEVICES={g}" for g in "01"],
        "gpu-b": [f"CUDA_VISIBLE_DEVICES={g}" for g in "0123"],
    }  # every GPU of every node serves, one server each
    for name, address in (("gpu-a", "10.0.0.1"), ("gpu-b", "10.0.0.2")):
        for argv in servers[name]:
            assert option(argv, "--server-name") == address  # reachable by the proxy, never 0.0.0.0
            assert option(argv, "--proxy-url") == "http://10.0.0.1:8000"
        ports = [option(a, "--server-port") for a in servers[name]]
        assert len(set(ports)) == len(ports)
    everything = [a for cmds in servers.values() for a in cmds]
    if layout == "merged":
        served = sorted(option(a, "--model-name") for a in everything)
        assert sorted(set(served)) == sorted(character_ids()) and len(served) == 6  # 6 GPUs: two get a replica
    else:
        assert all(option(a, "--backend") == "pytorch" and a[4] == "/m/base" for a in everything)
        assert all(len(a[a.index("--adapters") + 1 : a.index("--proxy-url")]) == 4 for a in everything)
    assert "0.0.0.0" not in out.split("# endpoints file")[0].replace("Nothing binds 0.0.0.0", "")
    assert "# firewall: open 8000/tcp on gpu-a" in out
    toml = tomllib.loads(out.split("# endpoints file", 1)[1].split("\n", 1)[1])
    assert {cid: t["base_url"] for cid, t in toml.items()} == {
        cid: "http://10.0.0.1:8000/v1" for cid in character_ids()
    }


def test_nodes_file_without_dry_run_prints_the_plan_and_writes_the_endpoints_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    nodes = tmp_path / "nodes.toml"
    nodes.write_text(NODES, encoding="utf-8")
    out_file = tmp_path / "endpoints.toml"
    assert serve.main(["--nodes", str(nodes), "--lmdeploy", "lmdeploy", "--endpoints-out", str(out_file)]) == 0
    assert "# === on gpu-b" in capsys.readouterr().out
    assert load_endpoints(out_file)["bajie"].base_url == "http://10.0.0.1:8000/v1"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("", "no [[node]] tables"),
        ('[[node]]\nname = "a"\naddress = "0.0.0.0"\ngpus = 1\n', "not one the other nodes can reach"),
        ('[[node]]\nname = "a"\naddress = "h"\ngpus = "all"\n', "gpus must be a count"),
        ('[[node]]\nname = "a"\naddress = "h"\ngpus = 1\nport = 1\n', "only name, address and gpus"),
        ('[[node]]\nname = "a"\naddress = "h"\ngpus = 1\n[[node]]\nname = "a"\naddress = "i"\ngpus = 1\n', "twice"),
        ("[[node]\n", "cannot read it"),
    ],
)
def test_a_bad_nodes_file_is_one_clear_line(text: str, error: str, tmp_path: Path, capsys) -> None:
    nodes = tmp_path / "nodes.toml"
    nodes.write_text(text, encoding="utf-8")
    assert serve.main(["--nodes", str(nodes), "--dry-run"]) == 1
    err = capsys.readouterr().err
    assert error in err and str(nodes) in err and "Traceback" not in err


def test_missing_lmdeploy_is_explained(tiny_model_dir: Path, tmp_path: Path) -> None:
    plan = serve.make_plan(models={"wukong": str(tiny_model_dir)}, port=0, lmdeploy=[str(tmp_path / "no-lmdeploy")])
    with (
        serve.ServerGroup(plan.servers, tmp_path / "logs") as group,
        pytest.raises(ServeError, match="requirements-serve"),
    ):
        group.start_all()


# --- process management, with the scripted server standing in for LMDeploy's --------------------------------


@pytest.mark.slow
def test_server_group_starts_waits_for_health_and_stops_all(tiny_model_dir: Path, tmp_path: Path) -> None:
    plan = serve.make_plan(
        models={"wukong": str(tiny_model_dir), "bajie": str(tiny_model_dir)}, port=0, lmdeploy=standin_command()
    )
    with serve.ServerGroup(plan.servers, tmp_path / "logs", health_timeout_s=240) as group:
        group.start_all()
        procs = [s.proc.popen for s in group.running]
        assert all(http_ok(spec.health_url) for spec in plan.servers)
        # The endpoints the plan wrote reach each character's own server, by the character's model name.
        for cid in ("wukong", "bajie"):
            endpoint = plan.endpoints[cid].model_copy(update={"send_repetition_penalty": False})  # LMDeploy-only
            reply = collect(make_backend(get_character(cid), endpoint=endpoint), [{"role": "user", "content": "你好"}],
                            GenerationSettings(max_new_tokens=24))  # fmt: skip
            assert reply == f"{cid}在此"  # the stand-in names the model it was asked for: this character's own
        # A server dying is noticed: the wait ends and names it (the command then stops the others).
        os.killpg(group.running[1].proc.pid, signal.SIGKILL)
        died = group.wait_until_stopped()
        assert died is not None and died.spec.name == "bajie"
        assert group.running[0].proc.alive()
    assert all(p.poll() is not None for p in procs)
    assert not any(http_ok(spec.health_url, timeout=1) for spec in plan.servers)


@pytest.mark.slow
def test_a_server_failing_to_start_stops_the_others(tiny_model_dir: Path, tmp_path: Path) -> None:
    plan = serve.make_plan(
        models={"wukong": str(tiny_model_dir), "bajie": str(tmp_path / "not-a-model")},
        port=0,
        lmdeploy=standin_command(),
    )
    group = serve.ServerGroup(plan.servers, tmp_path / "logs", health_timeout_s=240)
    with pytest.raises(ServeError, match=r"bajie exited with code 2 while starting(.|\n)*does not exist"):
        group.start_all()
    assert group.running == []
    assert not http_ok(plan.servers[0].health_url, timeout=1)


@pytest.mark.slow
def test_the_command_serves_until_ctrl_c_then_stops_everything(tiny_model_dir: Path, tmp_path: Path) -> None:
    record = tmp_path / "standin.jsonl"
    endpoints_out = tmp_path / "endpoints.toml"
    cmd = [sys.executable, "-m", "pipeline.serve", "--models", f"wukong={tiny_model_dir}", f"bajie={tiny_model_dir}"]
    cmd += ["--port", "0", "--lmdeploy", shlex.join(standin_command()), "--endpoints-out", str(endpoints_out)]
    cmd += ["--log-dir", str(tmp_path / "logs"), "--health-timeout", "240"]
    env = dict(os.environ, XIYOU_STANDIN_RECORD=str(record), PYTHONPATH=str(REPO_ROOT))
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "endpoints file:" in line or proc.poll() is not None:
                break
        assert endpoints_out.is_file(), "".join(lines)
        endpoints = load_endpoints(endpoints_out)
        assert set(endpoints) == {"wukong", "bajie"}
        for config in endpoints.values():
            assert http_ok(config.base_url.removesuffix("/v1") + "/health")
        started = [json.loads(x) for x in record.read_text(encoding="utf-8").splitlines()]
        assert [option(s["argv"], "--model-name") for s in started] == ["wukong", "bajie"]
        assert all(option(s["argv"], "--server-name") == "127.0.0.1" for s in started)

        proc.send_signal(signal.SIGINT)  # Ctrl-C
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "".join(lines) + rest
    assert "stopping the servers" in rest
    deadline = time.monotonic() + 10
    for s in started:  # every server process is gone
        while _pid_alive(s["pid"]) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _pid_alive(s["pid"])
    for config in endpoints.values():
        assert not http_ok(config.base_url.removesuffix("/v1") + "/health", timeout=1)


def real_proxy() -> str:
    """An `lmdeploy` executable whose `serve proxy` runs here (XIYOU_LMDEPLOY_PROXY); skips when there is none."""
    value = os.environ.get("XIYOU_LMDEPLOY_PROXY", "").strip()
    if not value or not os.access(value, os.X_OK):
        pytest.skip(
            "LMDeploy's proxy is not installed: set XIYOU_LMDEPLOY_PROXY to an lmdeploy executable "
            "(pip install --no-deps lmdeploy plus what its proxy imports, see docs/serving.md)"
        )
    return value


@pytest.mark.slow
def test_the_real_proxy_routes_two_characters_and_drops_a_dead_server(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XIYOU_LMDEPLOY_PROXY", real_proxy())
    plan = serve.make_plan(
        models={"wukong": str(tiny_model_dir), "bajie": str(tiny_model_dir)},
        port=0,
        proxy_port=0,
        lmdeploy=standin_command(),
        proxy_heartbeat_s=2,  # (--proxy-heartbeat) the proxy notices the dead server within 2 s, not 15
    )
    assert plan.proxy is not None and {e.base_url for e in plan.endpoints.values()} == {plan.proxy.base_url}
    assert ("LMDEPLOY_CONTROLLER_HEART_BEAT_EXPIRATION", "2") in plan.proxy.env
    with serve.ServerGroup(plan.servers, tmp_path / "logs", health_timeout_s=240) as group:
        group.start([plan.proxy])
        serve.forget_earlier_servers(plan.proxy)  # what serve() does: LMDeploy's proxy remembers its last run
        group.start(plan.servers)
        group.wait_registered(plan.proxy, ["wukong", "bajie"])  # each server registered itself by model name
        backends = {}
        for cid in ("wukong", "bajie"):
            endpoint = plan.endpoints[cid].model_copy(update={"send_repetition_penalty": False, "max_retries": 0})
            backends[cid] = make_backend(get_character(cid), endpoint=endpoint)
            reply = collect(backends[cid], [{"role": "user", "content": "你好"}], GenerationSettings(max_new_tokens=24))
            assert reply == f"{cid}在此"  # through the proxy, to the server of that model name
        wukong_server = next(s for s in group.running if s.spec.models == ("wukong",))
        wukong_server.proc.kill()  # 悟空's server dies
        # The proxy drops it at its next health check (every 2 s here; pipeline.serve's default: 15 s); from then on a
        # request for wukong is an error the client reports (until then the proxy answers 200, {"error_code": 10402}).
        deadline = time.monotonic() + 120
        while "wukong" in serve.proxy_models(plan.proxy) and time.monotonic() < deadline:
            time.sleep(1)
        assert serve.proxy_models(plan.proxy) == ["bajie"]
        with pytest.raises(BackendError, match="wukong"):
            collect(backends["wukong"], [{"role": "user", "content": "你好"}], GenerationSettings(max_new_tokens=24))
        reply = collect(backends["bajie"], [{"role": "user", "content": "你好"}], GenerationSettings(max_new_tokens=24))
        assert reply == "bajie在此"  # the other character is unaffected


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by an init that is slow) counts as gone
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False

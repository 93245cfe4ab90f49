"""A stand-in for `lmdeploy` in tests of pipeline.serve: the scripted OpenAI server behind LMDeploy's command line.

    python tests/lmdeploy_standin.py serve api_server MODEL --server-name HOST --server-port PORT
        [--model-name NAME] [--backend …] [--adapters …] [--proxy-url URL] [any other LMDeploy option]
    python tests/lmdeploy_standin.py serve proxy …     # the real `lmdeploy serve proxy`, from $XIYOU_LMDEPLOY_PROXY

It records the arguments it got (JSON lines in $XIYOU_STANDIN_RECORD, when set) and then becomes (exec) the scripted
OpenAI-compatible server (tests/scripted_openai.py) at HOST:PORT, listing NAME in /v1/models and answering every
request with "<model>在此" (the model name the request asked for): what these tests check is the processes and the
routing, so a server that starts in a fraction of a second and says whom it serves beats a real model (the client
code is tested against `transformers serve` elsewhere). LoRA adapters are ignored.
A MODEL folder that does not exist makes it exit 2 at once, as LMDeploy fails on a bad model path.
With `--proxy-url`, a helper process registers the server with that proxy once it answers /health, as LMDeploy's
api_server does (POST /nodes/add); the proxy itself is LMDeploy's own (`serve proxy` runs $XIYOU_LMDEPLOY_PROXY,
an `lmdeploy` executable: its proxy runs on CPU, see docs/serving.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
#: What every stand-in server answers: the model name the request asked for, so a test sees who answered.
REPLY = "{model}在此"


#: Run in the background by a server started with --proxy-url: wait for its health, then register it.
REGISTER = """
import json, sys, time, urllib.request
proxy, node = sys.argv[1], sys.argv[2]
deadline = time.monotonic() + 600
while time.monotonic() < deadline:
    try:
        urllib.request.urlopen(node + "/health", timeout=2).close()
        break
    except OSError:
        time.sleep(0.3)
body = json.dumps({"url": node}).encode()
req = urllib.request.Request(proxy + "/nodes/add", data=body, headers={"Content-Type": "application/json"})
urllib.request.urlopen(req, timeout=30).close()
"""


def main(argv: list[str]) -> None:
    if argv[:2] == ["serve", "proxy"]:
        real = os.environ.get("XIYOU_LMDEPLOY_PROXY", "")
        if not real:
            print("lmdeploy stand-in: set XIYOU_LMDEPLOY_PROXY to a real lmdeploy for `serve proxy`", file=sys.stderr)
            sys.exit(2)
        os.execv(real, [real, *argv])
    p = argparse.ArgumentParser(prog="lmdeploy")
    p.add_argument("command", choices=["serve"])
    p.add_argument("subcommand", choices=["api_server"])
    p.add_argument("model_path")
    p.add_argument("--server-name", default="0.0.0.0")
    p.add_argument("--server-port", type=int, default=23333)
    p.add_argument("--model-name")
    p.add_argument("--adapters", nargs="*")
    p.add_argument("--proxy-url")
    args, _others = p.parse_known_args(argv)
    record = os.environ.get("XIYOU_STANDIN_RECORD")
    if record:
        with open(record, "a", encoding="utf-8") as f:
            f.write(json.dumps({"argv": argv, "pid": os.getpid()}) + "\n")
    model = Path(args.model_path)
    if not model.is_dir():
        print(f"lmdeploy stand-in: model path {model} does not exist", file=sys.stderr)
        sys.exit(2)
    name = args.model_name or "model"
    host, port = args.server_name, str(args.server_port)
    if args.proxy_url:  # same process group: it goes when the server's group is stopped
        subprocess.Popen([sys.executable, "-c", REGISTER, args.proxy_url, f"http://{host}:{port}"])
    scripted = str(REPO_ROOT / "tests" / "scripted_openai.py")
    reply = ["--reply", REPLY, "--latency", "0", "--model", name]
    os.execv(sys.executable, [sys.executable, scripted, "--host", host, "--port", port, *reply])


if __name__ == "__main__":
    main(sys.argv[1:])

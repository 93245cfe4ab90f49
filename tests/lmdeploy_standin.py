"""A stand-in for `lmdeploy` in tests of pipeline.serve: `transformers serve` behind LMDeploy's command line.

    python tests/lmdeploy_standin.py serve api_server MODEL --server-name HOST --server-port PORT
        [--model-name NAME] [--backend …] [--adapters …] [any other LMDeploy option]

It records the arguments it got (JSON lines in $XIYOU_STANDIN_RECORD, when set) and then becomes (exec)
`$XIYOU_TESTSERVER_BIN serve NAME --host HOST --port PORT --device cpu`, run in a folder where NAME links to MODEL:
`transformers serve` names the served model after its path argument, so requests for `model = NAME` work as they
would with LMDeploy's `--model-name`. LoRA adapters are ignored (the base model answers for every name).
A MODEL folder that does not exist makes it exit 2 at once, as LMDeploy fails on a bad model path.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="lmdeploy")
    p.add_argument("command", choices=["serve"])
    p.add_argument("subcommand", choices=["api_server"])
    p.add_argument("model_path")
    p.add_argument("--server-name", default="0.0.0.0")
    p.add_argument("--server-port", type=int, default=23333)
    p.add_argument("--model-name")
    p.add_argument("--adapters", nargs="*")
    args, _others = p.parse_known_args(argv)
    record = os.environ.get("XIYOU_STANDIN_RECORD")
    if record:
        with open(record, "a", encoding="utf-8") as f:
            f.write(json.dumps({"argv": argv, "pid": os.getpid()}) + "\n")
    model = Path(args.model_path)
    if not model.is_dir():
        print(f"lmdeploy stand-in: model path {model} does not exist", file=sys.stderr)
        sys.exit(2)
    exe = os.environ.get("XIYOU_TESTSERVER_BIN") or str(REPO_ROOT / ".venv-testserver" / "bin" / "transformers")
    name = args.model_name or "model"
    workdir = Path(tempfile.mkdtemp(prefix="lmdeploy-standin-"))
    (workdir / name).symlink_to(model.resolve(), target_is_directory=True)
    os.chdir(workdir)
    os.environ.update(TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    host, port = args.server_name, str(args.server_port)
    os.execv(exe, [exe, "serve", name, "--host", host, "--port", port, "--device", "cpu"])


if __name__ == "__main__":
    main(sys.argv[1:])

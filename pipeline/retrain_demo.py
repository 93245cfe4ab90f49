"""The maintainer's whole loop on a CPU, in one command, with a tiny model instead of InternLM2 and an API:

    make retrain-demo                      # = python -m pipeline.retrain_demo --out runs/retrain-demo
    python -m pipeline.retrain_demo --out runs/retrain-demo [--character bajie] [--chapters 18-19]

1. build a tiny chat model from the novel (`python -m pipeline.tiny_model`; it has a BOS token, so XTuner takes it),
   or take the one an earlier run built (`--tiny-model DIR`: the same model every time, about 10 s saved);
2. serve it with `transformers serve` on 127.0.0.1 (an OpenAI-compatible server, as an API or LMDeploy would be);
3. `pipeline.q2a` on a few questions, 4. `pipeline.extract` and 5. `pipeline.long_dialogue` on two chapters,
   all against that server (the tiny model answers every prompt with one line, so extract and long_dialogue find
   no dialogue in its answers and say so: with a real model they do);
6. `pipeline.build_dataset` from those files and the canon's exchanges;
7. `pipeline.train --preset cpu-tiny` in the training environment: train, convert, merge;
8. `pipeline.eval` of the base model, then of the fine-tuned one with `--compare`;
and the command that opens the character's app on the merged model.

Each step prints its command, its last line and its time; its whole output is in OUT/logs/. Everything the demo
starts is stopped when it ends, fails or is interrupted (Ctrl-C). The environments are those `make test` makes:
`.venv` (this one), `.venv-train` (XIYOU_TRAIN_PYTHON) and `.venv-testserver` (XIYOU_TESTSERVER_BIN).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shlex
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pipeline.options import character_or_error
from pipeline.tiny_model import INFO_FILE
from xiyou.character import character_ids
from xiyou.env import REPO_ROOT, SHARED_DATA, novel_path
from xiyou.process import Process, free_port, http_ok, run_echoed


class DemoError(RuntimeError):
    """A step failed; the message says which and where its log is."""


def cmd(*parts: str | Path) -> list[str]:
    """A command line: paths as they are, other parts split at spaces ("-m pipeline.q2a" is two words)."""
    return [w for p in parts for w in ([str(p)] if isinstance(p, Path) else p.split())]


def train_python() -> Path:
    value = os.environ.get("XIYOU_TRAIN_PYTHON", "").strip()
    return Path(value) if value else REPO_ROOT / ".venv-train" / "bin" / "python"


def serve_bin() -> Path:
    value = os.environ.get("XIYOU_TESTSERVER_BIN", "").strip()
    return Path(value) if value else REPO_ROOT / ".venv-testserver" / "bin" / "transformers"


class Demo:
    """Runs the steps in order, timing each; `stop()` ends whatever it started."""

    def __init__(self, out: Path, total: int) -> None:
        self.out = out
        self.logs = out / "logs"
        self.total = total
        self.done = 0
        self.times: list[tuple[str, float]] = []
        self.server: Process | None = None
        self.env = dict(
            os.environ,
            PYTHONPATH=os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false",
        )

    def _begin(self, name: str, argv: Sequence[str], env_note: str = "") -> float:
        self.done += 1
        shown = shlex.join(str(a) for a in argv)
        print(f"\n[{self.done}/{self.total}] {name}\n  $ {env_note}{shown}", flush=True)
        return time.monotonic()

    def reuse(self, name: str, path: Path) -> None:
        """A step whose output exists already (a tiny model built before): shown and counted, nothing run."""
        self.done += 1
        print(f"\n[{self.done}/{self.total}] {name}\n  {path} (built before: --tiny-model)", flush=True)
        self._end(name, time.monotonic())

    def _end(self, name: str, started: float, note: str = "") -> None:
        seconds = time.monotonic() - started
        self.times.append((name, seconds))
        print(f"  done in {seconds:.1f} s{note}", flush=True)

    def run(
        self, name: str, argv: Sequence[str], *, ok: Sequence[int] = (0,), extra_env: dict[str, str] | None = None
    ) -> int:
        """Run one step to its end; its exit code (one of `ok`, else DemoError with the end of its log)."""
        env_note = "".join(f"{k}={shlex.quote(v)} " for k, v in (extra_env or {}).items())
        started = self._begin(name, argv, env_note)
        log = self.logs / f"{self.done:02d}-{name.split()[0]}.log"
        code, tail = run_echoed([str(a) for a in argv], log_path=log, env={**self.env, **(extra_env or {})})
        last = [line for line in tail if line.strip() and not line.startswith(("INFO ", "WARNING "))]
        for line in last[-2:]:
            print(f"  | {line[:300]}")
        if code not in ok:
            raise DemoError(f"{name} failed (exit code {code}); its output is in {log}:\n" + "\n".join(tail[-15:]))
        self._end(name, started)
        return code

    def serve(self, model: Path) -> str:
        """Start `transformers serve` on `model` at a free 127.0.0.1 port; its base URL once it answers."""
        exe = serve_bin()
        if not exe.is_file():
            raise DemoError(f"`transformers serve` is not installed at {exe}: run `make setup-testserver`")
        port = free_port()
        argv = [exe, "serve", model, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
        started = self._begin("serve the tiny model (transformers serve)", argv)
        log = self.logs / f"{self.done:02d}-serve.log"
        self.server = Process.start([str(a) for a in argv], log_path=log, env=self.env)
        state = self.server.wait_ready(functools.partial(http_ok, f"http://127.0.0.1:{port}/health"), 300)
        if state != "ready":
            raise DemoError(
                f"`transformers serve` did not become ready ({state}); its log ({log}) ends with:\n"
                + self.server.log_tail()
            )
        self._end("serve", started, f"; http://127.0.0.1:{port}/v1, model name {model}")
        return f"http://127.0.0.1:{port}/v1"

    def stop_server(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def summary(self) -> str:
        width = max(len(n) for n, _ in self.times)
        rows = [f"  {n:<{width}}  {s:6.1f} s" for n, s in self.times]
        return "\n".join([*rows, f"  {'total':<{width}}  {sum(s for _, s in self.times):6.1f} s"])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.retrain_demo",
        description="The maintainer's loop on a CPU with a tiny model: data, dataset, training, merge, evaluation.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/retrain-demo"), help="where everything goes")
    p.add_argument("--character", default="bajie", help=f"one of {', '.join(character_ids())} (default bajie)")
    p.add_argument("--novel", type=Path, default=None, help="the novel (default: $XIYOU_NOVEL, else ../shared/data)")
    p.add_argument(
        "--questions", type=Path, default=SHARED_DATA / "questions.txt", help="q2a's questions (default: shared)"
    )
    p.add_argument("--chapters", default="18-19", help="chapters for extract and long_dialogue (default 18-19)")
    p.add_argument("--q2a", type=int, default=4, metavar="N", help="how many questions q2a asks (default 4)")
    p.add_argument(
        "--tiny-model",
        type=Path,
        metavar="DIR",
        help="a tiny model built before (python -m pipeline.tiny_model DIR, or an earlier demo's OUT/tiny-model): "
        "used as it is (read only) instead of building one",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    character = character_or_error(parser, args.character)
    novel = args.novel or novel_path()
    if novel is None or not Path(novel).is_file():
        parser.error("no novel: pass --novel PATH or set XIYOU_NOVEL to the text of 《西游记》")
    if not args.questions.is_file():
        parser.error(f"--questions {args.questions}: no such file (one question per line)")
    if not train_python().is_file():
        parser.error(f"the training environment is absent ({train_python()}): run `make setup-train`")
    if args.tiny_model is not None and not (args.tiny_model / INFO_FILE).is_file():
        parser.error(
            f"--tiny-model {args.tiny_model}: no tiny model there (no {INFO_FILE}; "
            "python -m pipeline.tiny_model DIR builds one)"
        )
    out = args.out.resolve()
    py, cid = sys.executable, character.id
    tiny, data, dataset, work = out / "tiny-model", out / "data", out / "dataset", out / "train"
    if args.tiny_model is not None:
        tiny = args.tiny_model.resolve()  # read only: never among the outputs removed below, even inside OUT
    ours = (data, dataset, work, out / "eval-base", out / "eval-tuned", out / "logs")
    ours += (tiny,) if args.tiny_model is None else ()
    earlier = [p for p in ours if p.exists()]
    if earlier:  # a new tiny model makes every later output stale: start over (only the demo's own folders)
        print(f"removing the outputs of an earlier demo in {out}")
        for path in earlier:
            shutil.rmtree(path)
    out.mkdir(parents=True, exist_ok=True)
    model_env = f"XIYOU_MODEL_{cid.upper()}"
    demo = Demo(out, total=9)
    print(f"retrain demo for {cid} in {out} (logs in {demo.logs})")
    try:
        if args.tiny_model is None:
            demo.run("build a tiny model", cmd(py, "-m pipeline.tiny_model", tiny, "--novel", novel))
        else:
            demo.reuse("tiny model", tiny)
        url = demo.serve(tiny)
        api = cmd("--base-url", url, "--model", tiny, "--max-tokens 64 --no-progress")
        q2a = cmd(py, "-m pipeline.q2a --character", cid, "--questions", args.questions, "--limit", str(args.q2a))
        demo.run("q2a", [*q2a, *cmd("--repeat 1 --out", data / "q2a.jsonl"), *api])
        passages = [*cmd("--novel", novel, "--chapters", args.chapters, "--concurrency 4"), *api]
        # exit code 1: no usable record (the tiny model's one line is no dialogue); the steps say so and go on
        for step in ("extract", "long_dialogue"):
            demo.run(step, [*cmd(py, "-m", f"pipeline.{step}", "--out", data / f"{step}.jsonl"), *passages], ok=(0, 1))
        demo.stop_server()
        inputs = [data / "q2a.jsonl", data / "extract.jsonl", data / "long_dialogue.jsonl"]
        build = cmd(py, "-m pipeline.build_dataset --character", cid, "--inputs", *inputs, "--canon --novel", novel)
        demo.run("build_dataset", [*build, *cmd("--val-ratio 0.02 --out-dir", dataset)])
        train = cmd(train_python(), "-m pipeline.train", cid, "--data", dataset / "train.jsonl")
        # (the preset keeps a checkpoint every 4 of its 8 iterations: a killed run resumes from the last one)
        tune = cmd("--val", dataset / "validation.jsonl", "--base-model", tiny, "--work-dir", work)
        demo.run("train + merge", [*train, *tune, *cmd("--preset cpu-tiny")])
        ask = cmd(py, "-m pipeline.eval --backend transformers --characters", cid, "--novel", novel)
        ask += cmd("--max-new-tokens 32 --out")
        demo.run("eval base", [*ask, out / "eval-base"], extra_env={model_env: str(tiny)})
        compare = cmd(out / "eval-tuned", "--compare", out / "eval-base" / "metrics.json")
        demo.run("eval fine-tuned", [*ask, *compare], extra_env={model_env: str(work / "merged")})
    except DemoError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: everything the demo started is stopped; run it again to start over", file=sys.stderr)
        return 130
    finally:
        demo.stop_server()
    stats = json.loads((dataset / "stats.json").read_text(encoding="utf-8"))
    print(f"\nretrain demo done:\n{demo.summary()}")
    print(f"  dataset:  {dataset} ({stats['train']} train + {stats['validation']} validation records; stats.json)")
    print(f"  model:    {work / 'merged'}")
    print(f"  report:   {out / 'eval-tuned' / 'report.md'} (base vs fine-tuned)")
    print("open the app on the merged model:")
    app = REPO_ROOT / "apps" / cid / "app.py"
    print(
        f"  {model_env}={shlex.quote(str(work / 'merged'))} XIYOU_BACKEND=transformers "
        f"{shlex.quote(str(Path(sys.executable).parent / 'streamlit'))} run {shlex.quote(str(app))} "
        "--server.address 127.0.0.1"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

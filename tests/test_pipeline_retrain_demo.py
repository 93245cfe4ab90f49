"""`make retrain-demo` as one test: the maintainer's whole loop on CPU (tiny model, `transformers serve`, the data
steps, build_dataset, XTuner training and merge, eval of base vs fine-tuned). Slow: a few minutes on 2 cores."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from xiyou.process import http_ok

REPO = Path(__file__).resolve().parent.parent


def _environment(name: str, env: str, default: Path) -> Path:
    value = os.environ.get(env, "").strip()
    path = Path(value) if value else default
    if not path.is_file():
        pytest.skip(f"{name} is absent at {path} (`make test` creates it; or set {env})")
    return path


@pytest.mark.slow
def test_the_retrain_demo_runs_the_whole_loop_and_stops_what_it_started(tmp_path, novel_path, questions_path):
    env = dict(
        os.environ,
        XIYOU_TRAIN_PYTHON=str(_environment("the training environment", "XIYOU_TRAIN_PYTHON",
                                            REPO / ".venv-train" / "bin" / "python")),
        XIYOU_TESTSERVER_BIN=str(_environment("`transformers serve`", "XIYOU_TESTSERVER_BIN",
                                              REPO / ".venv-testserver" / "bin" / "transformers")),
    )  # fmt: skip
    out = tmp_path / "demo"
    args = [sys.executable, "-m", "pipeline.retrain_demo", "--out", str(out), "--novel", str(novel_path),
            "--questions", str(questions_path), "--q2a", "2"]  # fmt: skip
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    shown = proc.stdout

    # every step is shown with its command and its time, and the summary adds them up
    for n, name in enumerate(["build a tiny model", "serve the tiny model", "q2a", "extract", "long_dialogue",
                              "build_dataset", "train + merge", "eval base", "eval fine-tuned"], start=1):  # fmt: skip
        assert f"[{n}/9] {name}" in shown
    assert shown.count("done in ") == 9 and re.search(r"total\s+\d+\.\d s", shown)

    # the data steps spoke to the served tiny model and stopped at its end of turn: the answer, nothing after it
    tiny = json.loads((out / "tiny-model" / "tiny_model.json").read_text(encoding="utf-8"))
    q2a = [json.loads(x) for x in (out / "data" / "q2a.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["conversation"][0]["output"] for r in q2a] == [tiny["reply"]] * 2
    # the tiny model's line is no dialogue: extract and long_dialogue kept its answers as rejects and said so
    for step in ("extract", "long_dialogue"):
        assert (out / "data" / f"{step}.rejects.jsonl").read_text(encoding="utf-8").strip()
        assert f"{step}: no usable records" in shown

    # a dataset with its stats, a merged model, an evaluation comparing base and fine-tuned
    stats = json.loads((out / "dataset" / "stats.json").read_text(encoding="utf-8"))
    assert stats["records_per_source"]["q2a"] == 2 and stats["records_per_source"]["canon"] > 100
    assert (out / "train" / "merged" / "config.json").is_file()
    run = json.loads((out / "train" / "run.json").read_text(encoding="utf-8"))
    assert run["stages"]["validation"]["merged_loss"] < run["stages"]["validation"]["base_loss"]
    report = (out / "eval-tuned" / "report.md").read_text(encoding="utf-8")
    assert f"## Change since `{out / 'eval-base'}` (backend transformers" in report
    assert "| bajie | who-said-it accuracy |" in report

    # how to open the app on the merged model; and the server it started is gone
    assert f"XIYOU_MODEL_BAJIE={out / 'train' / 'merged'} XIYOU_BACKEND=transformers" in shown
    assert "apps/bajie/app.py" in shown
    port = re.search(r"http://127\.0\.0\.1:(\d+)/v1", shown).group(1)
    assert not http_ok(f"http://127.0.0.1:{port}/health", timeout=1.0)


@pytest.mark.slow
def test_ctrl_c_stops_the_server_and_the_step_it_started(tmp_path, novel_path, questions_path):
    env = dict(
        os.environ,
        PYTHONUNBUFFERED="1",
        XIYOU_TRAIN_PYTHON=str(_environment("the training environment", "XIYOU_TRAIN_PYTHON",
                                            REPO / ".venv-train" / "bin" / "python")),
        XIYOU_TESTSERVER_BIN=str(_environment("`transformers serve`", "XIYOU_TESTSERVER_BIN",
                                              REPO / ".venv-testserver" / "bin" / "transformers")),
    )  # fmt: skip
    args = [sys.executable, "-m", "pipeline.retrain_demo", "--out", str(tmp_path / "demo"), "--novel",
            str(novel_path), "--questions", str(questions_path)]  # fmt: skip
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    shown = []
    try:
        for line in proc.stdout:  # wait until the server answers and the first data step has started
            shown.append(line)
            if line.startswith("[3/9] q2a"):
                break
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    shown.append(rest)
    assert proc.returncode == 130, err
    assert "interrupted: everything the demo started is stopped" in err and "Traceback" not in err
    port = re.search(r"http://127\.0\.0\.1:(\d+)/v1", "".join(shown)).group(1)
    assert not http_ok(f"http://127.0.0.1:{port}/health", timeout=1.0)

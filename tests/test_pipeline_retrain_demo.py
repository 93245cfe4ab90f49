"""`make retrain-demo` as one test: the maintainer's whole loop on CPU (tiny model, `transformers serve`, the data
steps, build_dataset, XTuner training and merge, eval of base vs fine-tuned), then the same training command rerun
(nothing redone) and resumed after a kill. This is the suite's one real XTuner training run (tests/test_train.py
covers the config, the checks and a failing run). Slow: a few minutes on 2 cores."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.train import PRESETS
from xiyou.character import get_character
from xiyou.process import http_ok

REPO = Path(__file__).resolve().parent.parent


def _environment(name: str, env: str, default: Path) -> Path:
    value = os.environ.get(env, "").strip()
    path = Path(value) if value else default
    if not path.is_file():
        pytest.skip(f"{name} is absent at {path} (`make test` creates it; or set {env})")
    return path


@pytest.mark.slow
@pytest.mark.longest
def test_the_retrain_demo_runs_the_whole_loop_and_stops_what_it_started(
    tmp_path, novel_path, questions_path, tiny_model_dir
):
    env = dict(
        os.environ,
        XIYOU_TRAIN_PYTHON=str(_environment("the training environment", "XIYOU_TRAIN_PYTHON",
                                            REPO / ".venv-train" / "bin" / "python")),
        XIYOU_TESTSERVER_BIN=str(_environment("`transformers serve`", "XIYOU_TESTSERVER_BIN",
                                              REPO / ".venv-testserver" / "bin" / "transformers")),
    )  # fmt: skip
    out = tmp_path / "demo"
    # two questions and one chapter (11 passages) for the data steps: what is checked below needs a few answers; the
    # session's tiny model (pipeline.tiny_model builds it; tests/test_train.py runs that command)
    args = [sys.executable, "-m", "pipeline.retrain_demo", "--out", str(out), "--novel", str(novel_path),
            "--questions", str(questions_path), "--q2a", "2", "--chapters", "18",
            "--tiny-model", str(tiny_model_dir)]  # fmt: skip
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    shown = proc.stdout

    # every step is shown with its command and its time, and the summary adds them up
    for n, name in enumerate(["tiny model", "serve the tiny model", "q2a", "extract", "long_dialogue",
                              "build_dataset", "train + merge", "eval base", "eval fine-tuned"], start=1):  # fmt: skip
        assert f"[{n}/9] {name}" in shown
    assert shown.count("done in ") == 9 and re.search(r"total\s+\d+\.\d s", shown)

    # the data steps spoke to the served tiny model and stopped at its end of turn: the answer, nothing after it
    tiny = json.loads((tiny_model_dir / "tiny_model.json").read_text(encoding="utf-8"))
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
    assert not (out / "tiny-model").exists() and (tiny_model_dir / "tiny_model.json").is_file()  # read, not copied
    assert "| bajie | who-said-it accuracy |" in report

    # how to open the app on the merged model; and the server it started is gone
    assert f"XIYOU_MODEL_BAJIE={out / 'train' / 'merged'} XIYOU_BACKEND=transformers" in shown
    assert "apps/bajie/app.py" in shown
    port = re.search(r"http://127\.0\.0\.1:(\d+)/v1", shown).group(1)
    assert not http_ok(f"http://127.0.0.1:{port}/health", timeout=1.0)

    # the training step: every iteration logged with a finite loss, a LoRA adapter of the preset's rank, the
    # character's prompt in the config once, outputs that follow the umask, hints that name this run's folder
    work = out.resolve() / "train"
    losses = run["stages"]["train"]["losses"]
    assert [i for i, _ in losses] == list(range(1, PRESETS["cpu-tiny"].max_iters + 1))
    assert all(math.isfinite(loss) for _, loss in losses)
    adapter = json.loads((work / "adapter" / "adapter_config.json").read_text(encoding="utf-8"))
    assert adapter["r"] == PRESETS["cpu-tiny"].lora_r and adapter["peft_type"] == "LORA"
    config = (work / "config" / "xtuner_config.py").read_text(encoding="utf-8")
    assert config.count(repr(get_character("bajie").meta_instruction)) == 1
    umask = os.umask(0o022)
    os.umask(umask)
    for path in (work / "run.json", work / "config" / "xtuner_config.py"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    (train_log,) = (out / "logs").glob("*-train.log")
    trained = train_log.read_text(encoding="utf-8")
    assert "resuming" not in trained
    assert f"python -m pipeline.serve --models bajie={work / 'merged'}" in trained
    assert f"XIYOU_MODEL_BAJIE={work / 'merged'}" in trained

    # the maintainer reruns the same training command: every stage is done, nothing is redone
    dataset = out.resolve() / "dataset"
    again = [env["XIYOU_TRAIN_PYTHON"], "-m", "pipeline.train", "bajie", "--data", str(dataset / "train.jsonl"),
             "--val", str(dataset / "validation.jsonl"), "--base-model", str(tiny_model_dir.resolve()),
             "--work-dir", str(work), "--preset", "cpu-tiny"]  # fmt: skip
    rerun = subprocess.run(again, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "training already finished" in rerun.stdout and "already merged" in rerun.stdout
    assert "xtuner.tools.train" not in rerun.stdout

    # killed after the first checkpoint (iteration 4 of 8): the same command resumes there and merges again
    shutil.rmtree(work / "merged")
    (work / "iter_8.pth").unlink()
    (work / "last_checkpoint").write_text(str(work / "iter_4.pth"), encoding="utf-8")
    run["stages"] = {}
    (work / "run.json").write_text(json.dumps(run), encoding="utf-8")
    resumed = subprocess.run(again, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-5000:]
    assert f"resuming from {work / 'iter_4.pth'}" in resumed.stdout
    losses = json.loads((work / "run.json").read_text(encoding="utf-8"))["stages"]["train"]["losses"]
    assert [i for i, _ in losses] == [5, 6, 7, 8]
    assert (work / "merged" / "config.json").is_file()


@pytest.mark.slow
def test_ctrl_c_stops_the_server_and_the_step_it_started(tmp_path, novel_path, questions_path, tiny_model_dir):
    env = dict(
        os.environ,
        PYTHONUNBUFFERED="1",
        XIYOU_TRAIN_PYTHON=str(_environment("the training environment", "XIYOU_TRAIN_PYTHON",
                                            REPO / ".venv-train" / "bin" / "python")),
        XIYOU_TESTSERVER_BIN=str(_environment("`transformers serve`", "XIYOU_TESTSERVER_BIN",
                                              REPO / ".venv-testserver" / "bin" / "transformers")),
    )  # fmt: skip
    args = [sys.executable, "-m", "pipeline.retrain_demo", "--out", str(tmp_path / "demo"), "--novel",
            str(novel_path), "--questions", str(questions_path), "--tiny-model", str(tiny_model_dir)]  # fmt: skip
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


def test_a_tiny_model_folder_without_a_model_is_refused_before_anything_starts(tmp_path, novel_path, questions_path):
    not_a_model = tmp_path / "empty"
    not_a_model.mkdir()
    args = [sys.executable, "-m", "pipeline.retrain_demo", "--out", str(tmp_path / "demo"), "--novel",
            str(novel_path), "--questions", str(questions_path), "--tiny-model", str(not_a_model)]  # fmt: skip
    env = dict(os.environ, XIYOU_TRAIN_PYTHON=sys.executable)  # any python: the check comes first
    proc = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert f"--tiny-model {not_a_model}: no tiny model there (no tiny_model.json" in proc.stderr
    assert not (tmp_path / "demo").exists()  # nothing written, nothing started

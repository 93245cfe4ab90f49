"""pipeline.train: the XTuner config it generates, its checks, and the real XTuner path on CPU with a tiny model
(a failing run here; the training that succeeds, reruns and resumes is part of tests/test_pipeline_retrain_demo.py,
the suite's one real training run).

XTuner lives in the training environment (.venv-train, `make setup-train`): tests that need it run
`XIYOU_TRAIN_PYTHON` (the Makefile sets it) in a subprocess and skip with a reason when it is absent.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline import train
from pipeline.train import TrainError
from xiyou.character import get_character
from xiyou.env import REPO_ROOT

WUKONG = get_character("wukong")
ANSWERS = ["俺老孙来也！", "妖怪休走，吃俺老孙一棒！", "师父莫怕，有俺老孙在。", "这有何难，看俺的手段。"]


def train_python() -> Path:
    value = os.environ.get("XIYOU_TRAIN_PYTHON", "").strip()
    path = Path(value) if value else REPO_ROOT / ".venv-train" / "bin" / "python"
    if not path.is_file():
        pytest.skip(f"the training environment is absent at {path} (run `make setup-train`, or set XIYOU_TRAIN_PYTHON)")
    return path


def write_records(path: Path, n: int, *, system: str = WUKONG.meta_instruction, offset: int = 0) -> Path:
    """`n` XTuner conversation records made from the character's sample questions and a few stock replies."""
    qs = WUKONG.sample_questions
    with path.open("w", encoding="utf-8") as f:
        for i in range(offset, offset + n):
            turn = {"system": system, "input": qs[i % len(qs)], "output": ANSWERS[i % 4] + ANSWERS[(i + 1) % 4]}
            f.write(json.dumps({"id": f"r{i}", "conversation": [turn]}, ensure_ascii=False) + "\n")
    return path


def run_train(args: list[str], *, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run(
        [str(train_python()), "-m", "pipeline.train", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def trainable_tiny_model(tiny_model_dir: Path) -> Path:
    """The tiny model as `python -m pipeline.tiny_model` builds it: with a BOS token (XTuner starts every sample
    with BOS; InternLM2 has <s>)."""
    return tiny_model_dir


@pytest.fixture
def no_bos_model(tiny_model_dir: Path, tmp_path: Path) -> Path:
    """A copy of the tiny model whose tokenizer config declares no BOS (its vocabulary still has <s>)."""
    out = tmp_path / "no-bos"
    shutil.copytree(tiny_model_dir, out)
    config = out / "tokenizer_config.json"
    raw = json.loads(config.read_text(encoding="utf-8"))
    raw["bos_token"] = None
    config.write_text(json.dumps(raw), encoding="utf-8")
    return out


# --- the generated config ---------------------------------------------------------------------------------


def test_production_config_is_the_qlora_recipe_with_the_characters_prompt(tmp_path: Path) -> None:
    data = write_records(tmp_path / "train.jsonl", 3)
    text = train.render_config(WUKONG, train.make_settings("qlora-7b"), base_model="/models/base", data_files=[data])
    config = tmp_path / "wukong.py"
    config.write_text(text, encoding="utf-8")
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(train.NO_TORCHVISION_SHIM)!r})\n"
        "from mmengine.config import Config\n"
        "cfg = Config.fromfile(sys.argv[1])\n"
        "llm = cfg.model.llm\n"
        "hook = [h for h in cfg.custom_hooks if 'EvaluateChatHook' in str(h['type'])][0]\n"
        "print(json.dumps(dict(quant=llm.quantization_config.to_dict() if hasattr(llm.quantization_config, 'to_dict')"
        " else {k: v for k, v in llm.quantization_config.items() if k != 'type' and not k.endswith('dtype')},"
        " dtype=str(llm.torch_dtype), lora=dict(r=cfg.model.lora.r, alpha=cfg.model.lora.lora_alpha,"
        " dropout=cfg.model.lora.lora_dropout), SYSTEM=cfg.SYSTEM, hook_system=hook['system'],"
        " hook_inputs=hook['evaluation_inputs'], max_length=cfg.max_length, pack=cfg.pack_to_max_length,"
        " template=cfg.prompt_template, optim=str(cfg.optim_wrapper.type), seed=cfg.randomness.seed,"
        " data=cfg.train_dataset.dataset.data_files, model=llm.pretrained_model_name_or_path,"
        " train_cfg={k: v for k, v in cfg.train_cfg.items() if k != 'type'}), ensure_ascii=False))\n"
    )
    proc = subprocess.run(
        [str(train_python()), "-c", code, str(config)], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = json.loads(proc.stdout.strip().splitlines()[-1])
    assert cfg["quant"]["load_in_4bit"] is True
    assert cfg["quant"]["bnb_4bit_quant_type"] == "nf4"
    assert cfg["quant"]["bnb_4bit_use_double_quant"] is True
    assert cfg["dtype"] == "torch.float16"
    assert cfg["lora"] == {"r": 64, "alpha": 16, "dropout": 0.1}
    assert cfg["SYSTEM"] == WUKONG.meta_instruction == cfg["hook_system"]
    assert cfg["hook_inputs"] == list(WUKONG.sample_questions)
    assert cfg["max_length"] == 2048 and cfg["pack"] is True
    assert cfg["template"]["INSTRUCTION"].startswith("<|im_start|>user")  # internlm2_chat
    assert "AmpOptimWrapper" in cfg["optim"]
    assert cfg["seed"] == 42
    assert cfg["data"] == {"train": [str(data.resolve())]}
    assert cfg["model"] == "/models/base"
    assert cfg["train_cfg"] == {"max_epochs": 3}


def test_each_character_gets_its_own_system_prompt_and_questions(tmp_path: Path) -> None:
    settings = train.make_settings("qlora-7b")
    texts = {
        cid: train.render_config(get_character(cid), settings, base_model="b", data_files=[tmp_path / "d.jsonl"])
        for cid in ("sanzang", "wukong", "bajie", "wujing")
    }
    for cid, text in texts.items():
        c = get_character(cid)
        assert f"SYSTEM = {c.meta_instruction!r}" in text
        assert all(repr(q) in text for q in c.sample_questions)
        compile(text, f"{cid}.py", "exec")  # valid Python
    assert len(set(texts.values())) == 4


def test_set_overrides_are_validated() -> None:
    s = train.make_settings("qlora-7b", ["lora_r=8", "max-length=512", "load_in_4bit=false", "max_iters=null"])
    assert (s.lora_r, s.max_length, s.load_in_4bit, s.max_iters) == (8, 512, False, None)
    with pytest.raises(TrainError, match="unknown setting 'lora_rank'"):
        train.make_settings("qlora-7b", ["lora_rank=8"])
    with pytest.raises(TrainError, match="lora_r"):
        train.make_settings("qlora-7b", ["lora_r=0"])
    with pytest.raises(TrainError, match="KEY=VALUE"):
        train.make_settings("qlora-7b", ["lora_r"])
    with pytest.raises(TrainError, match="unknown preset"):
        train.make_settings("qlora-70b")


def test_records_are_checked_with_file_and_line(tmp_path: Path) -> None:
    good = write_records(tmp_path / "good.jsonl", 5)
    assert train.check_records(good, WUKONG).records == 5
    wrong_system = write_records(tmp_path / "sys.jsonl", 2, system="user")
    with pytest.raises(TrainError, match=r"sys\.jsonl:1: .*meta_instruction"):
        train.check_records(wrong_system, WUKONG)
    broken = tmp_path / "broken.jsonl"
    broken.write_text(good.read_text(encoding="utf-8") + '{"conversation": [{"input": "x"}]}\n', encoding="utf-8")
    with pytest.raises(TrainError, match=r"broken\.jsonl:6: conversation\[0\] needs string fields"):
        train.check_records(broken, WUKONG)
    with pytest.raises(TrainError, match="no such file"):
        train.check_records(tmp_path / "missing.jsonl", WUKONG)


def test_base_model_is_a_folder_or_a_modelscope_id(tmp_path: Path) -> None:
    assert train.resolve_base_model(train.DEFAULT_BASE_MODEL, download=False) == train.DEFAULT_BASE_MODEL
    with pytest.raises(TrainError, match=r"no config\.json"):
        train.resolve_base_model(str(tmp_path))
    with pytest.raises(TrainError, match="not a ModelScope id"):
        train.resolve_base_model(str(tmp_path / "nope"))


def test_a_modelscope_id_is_downloaded_with_snapshot_download(
    tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    modelscope = pytest.importorskip("modelscope")
    asked: list[str] = []

    def fake_snapshot_download(model_id: str, *args: object, **kwargs: object) -> str:
        asked.append(model_id)
        return str(tiny_model_dir)  # the folder ModelScope would have filled

    monkeypatch.setattr(modelscope, "snapshot_download", fake_snapshot_download)
    assert train.resolve_base_model(train.DEFAULT_BASE_MODEL) == str(tiny_model_dir)
    assert asked == ["Shanghai_AI_Laboratory/internlm2-chat-7b"]

    def offline(model_id: str, *args: object, **kwargs: object) -> str:
        raise ConnectionError("network is unreachable")

    monkeypatch.setattr(modelscope, "snapshot_download", offline)
    with pytest.raises(TrainError, match=r"could not download .*network is unreachable.*--base-model /path/to/model"):
        train.resolve_base_model("owner/model")


def test_several_gpus_use_torchrun_and_deepspeed_zero2() -> None:
    one = train.train_command(Path("c.py"), Path("wd"), python="py")
    assert one == ["py", "-m", "xtuner.tools.train", "c.py", "--work-dir", "wd"]
    four = train.train_command(
        Path("c.py"), Path("wd"), gpus=4, deepspeed="deepspeed_zero2", resume=Path("wd/iter_500.pth"), python="py"
    )
    assert four[:3] == ["py", "-m", "torch.distributed.run"] and "--nproc_per_node=4" in four
    assert four[four.index("-m", 3) + 1] == "xtuner.tools.train"
    assert four[four.index("--deepspeed") + 1] == "deepspeed_zero2"
    assert four[four.index("--resume") + 1] == "wd/iter_500.pth"
    assert four[-2:] == ["--launcher", "pytorch"]


def test_dry_run_prints_config_and_module_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_records(tmp_path / "train.jsonl", 3)
    rc = train.main(["bajie", "--data", str(data), "--work-dir", str(tmp_path / "wd"), "--gpus", "2", "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0
    assert f"SYSTEM = {get_character('bajie').meta_instruction!r}" in out
    assert 'bnb_4bit_quant_type="nf4"' in out
    assert "snapshot_download('Shanghai_AI_Laboratory/internlm2-chat-7b')" in out
    assert "-m torch.distributed.run" in out and "--nproc_per_node=2" in out and "deepspeed_zero2" in out
    assert "-m xtuner.tools.model_converters.pth_to_hf" in out and "-m xtuner.tools.model_converters.merge" in out
    assert not (tmp_path / "wd").exists()  # a dry run writes nothing


def test_cli_errors_are_actionable(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_records(tmp_path / "train.jsonl", 3)
    assert train.main(["monkey", "--data", str(data), "--dry-run"]) == 1
    assert "monkey" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train.main(["wukong"])  # --data is required
    assert "--data is required" in capsys.readouterr().err


# --- the real XTuner path (training environment) ----------------------------------------------------------


@pytest.mark.slow
def test_a_failing_training_run_exits_non_zero_with_xtuners_error(trainable_tiny_model: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken-model"
    shutil.copytree(trainable_tiny_model, broken)
    (broken / "model.safetensors").write_bytes(b"\0" * 64)  # config and tokenizer fine, weights unreadable
    data = write_records(tmp_path / "train.jsonl", 20)
    args = ["wukong", "--data", str(data), "--base-model", str(broken), "--work-dir", str(tmp_path / "w")]
    proc = run_train([*args, "--preset", "cpu-tiny"])
    assert proc.returncode == 1
    assert "error: train failed (exit code 1)" in proc.stderr
    assert "safetensors" in proc.stderr.lower()  # XTuner's own error, repeated in the summary
    assert not (tmp_path / "w" / "merged").exists()


@pytest.fixture
def xtuner_importable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let `run` pass its "is XTuner installed here" check in the app environment (these tests stop before XTuner)."""
    monkeypatch.setattr(train, "xtuner_installed", lambda: True)


def test_without_xtuner_the_training_environment_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train, "xtuner_installed", lambda: False)
    job = train.TrainJob(WUKONG, [tmp_path / "d.jsonl"], None, "b", tmp_path / "w", train.make_settings("cpu-tiny"))
    with pytest.raises(TrainError, match=r"XTuner is not installed.*\.venv-train/bin/python -m pipeline\.train"):
        train.run(job)


@pytest.mark.usefixtures("xtuner_importable")
def test_production_preset_on_a_cpu_machine_says_what_to_do(trainable_tiny_model: Path, tmp_path: Path) -> None:
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    data = write_records(tmp_path / "train.jsonl", 3)
    settings = train.make_settings("qlora-7b")
    job = train.TrainJob(WUKONG, [data], None, str(trainable_tiny_model), tmp_path / "w", settings)
    with pytest.raises(TrainError, match=r"needs a CUDA GPU.*--preset cpu-tiny.*pipeline\.tiny_model"):
        train.run(job)
    assert not (tmp_path / "w").exists()  # a refused run leaves no work dir behind


@pytest.mark.usefixtures("xtuner_importable")
def test_a_work_dir_of_another_run_is_not_resumed(trainable_tiny_model: Path, tmp_path: Path) -> None:
    data = write_records(tmp_path / "train.jsonl", 3)
    work = tmp_path / "w"
    work.mkdir()
    (work / "run.json").write_text(json.dumps({"config_sha256": "0" * 64, "stages": {}}), encoding="utf-8")
    (work / "iter_4.pth").write_bytes(b"checkpoint of another run")
    job = train.TrainJob(WUKONG, [data], None, str(trainable_tiny_model), work, train.make_settings("cpu-tiny"))
    with pytest.raises(TrainError, match="another config or other data"):
        train.run(job)


@pytest.mark.usefixtures("xtuner_importable")
def test_a_tokenizer_without_bos_is_refused_with_the_value_to_set(no_bos_model: Path, tmp_path: Path) -> None:
    data = write_records(tmp_path / "train.jsonl", 3)
    job = train.TrainJob(WUKONG, [data], None, str(no_bos_model), tmp_path / "w", train.make_settings("cpu-tiny"))
    with pytest.raises(TrainError, match="no BOS token") as refused:
        train.run(job)
    # The fix names the file and a value its vocabulary has.
    assert f'set "bos_token": "<s>" in {no_bos_model / "tokenizer_config.json"}' in str(refused.value)
    assert not (tmp_path / "w").exists()  # a refused run leaves no empty work dir behind
    # Following the advice makes the model acceptable.
    config = no_bos_model / "tokenizer_config.json"
    raw = json.loads(config.read_text(encoding="utf-8"))
    config.write_text(json.dumps({**raw, "bos_token": "<s>"}), encoding="utf-8")
    train.check_tokenizer(str(no_bos_model))


def test_without_a_bos_like_token_the_eos_is_suggested(tmp_path: Path, novel_path: Path) -> None:
    from tiny_model import train_tokenizer

    tok = train_tokenizer(novel_path, vocab_size=400, bos=False)
    tok.save_pretrained(tmp_path)
    with pytest.raises(TrainError, match=r'set "bos_token": "<\|endoftext\|>".*GPT-2 style models use their EOS'):
        train.check_tokenizer(str(tmp_path))


def test_the_tokenizers_length_warning_is_explained_once_and_kept_in_the_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    warning = (
        "Token indices sequence length is longer than the specified maximum sequence length for this model "
        "(900 > 512). Running this sequence through the model will result in indexing errors"
    )
    code = f"print({warning!r}); print('step 1'); print({warning!r}); print('step 2')"
    log = tmp_path / "logs" / "step.log"
    train.run_logged("step", [sys.executable, "-c", code], log, dict(os.environ))
    out = capsys.readouterr().out.split("\n", 1)[1]  # after the "[train] step: COMMAND" line
    assert "Token indices sequence length" not in out
    assert out.count("harmless: XTuner cuts every sample to max_length") == 1
    assert "step 1" in out and "step 2" in out
    assert log.read_text(encoding="utf-8").count(warning) == 2


def test_several_nodes_meet_at_node_0_as_xtuner_documents(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cluster = train.Cluster(nnodes=2, node_rank=1, master_addr="10.0.0.1", master_port=29500)
    cmd = train.train_command(
        Path("c.py"), Path("wd"), gpus=8, deepspeed="deepspeed_zero2", python="py", cluster=cluster
    )
    assert cmd[:3] == ["py", "-m", "torch.distributed.run"]
    for arg in ("--nnodes=2", "--node_rank=1", "--nproc_per_node=8", "--master_addr=10.0.0.1", "--master_port=29500"):
        assert arg in cmd
    assert cluster.env(8) == {
        "NPROC_PER_NODE": "8",
        "NNODES": "2",
        "NODE_RANK": "1",
        "ADDR": "10.0.0.1",
        "PORT": "29500",
    }
    # One GPU per node is still distributed.
    assert "--nnodes=2" in train.train_command(Path("c.py"), Path("wd"), gpus=1, python="py", cluster=cluster)
    # The dry run prints each node's command, then node 0's conversion and merge.
    data = write_records(tmp_path / "train.jsonl", 3)
    args = ["bajie", "--data", str(data), "--work-dir", str(tmp_path / "wd"), "--gpus", "4", "--dry-run"]
    assert train.main([*args, "--nnodes", "3", "--master-addr", "10.0.0.1", "--master-port", "29511"]) == 0
    out = capsys.readouterr().out
    for rank in range(3):
        line = next(x for x in out.splitlines() if x.startswith(f"#   node {rank}: "))
        assert f"NODE_RANK={rank}" in line and f"--node_rank={rank}" in line and "--nnodes=3" in line
        assert "--master_addr=10.0.0.1" in line and "--master_port=29511" in line and "--nproc_per_node=4" in line
    assert "on node 0 only" in out and "pth_to_hf" in out.split("on node 0 only")[1]
    assert not (tmp_path / "wd").exists()


def test_bad_node_settings_are_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    data = write_records(tmp_path / "train.jsonl", 3)
    base = ["wukong", "--data", str(data), "--dry-run"]
    assert train.main([*base, "--nnodes", "2"]) == 1
    assert "--master-addr" in capsys.readouterr().err  # several nodes need node 0's address and port
    assert train.main([*base, "--nnodes", "2", "--node-rank", "2", "--master-addr", "h", "--master-port", "1"]) == 1
    assert "--node-rank must be 0…1" in capsys.readouterr().err
    assert train.main([*base, "--master-port", "70000"]) == 1
    assert "--master-port must be a port number" in capsys.readouterr().err


def test_the_cpu_recipes_tiny_model_builder_makes_a_model_train_accepts(
    tmp_path: Path, novel_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from pipeline import tiny_model

    out = tmp_path / "tiny"
    assert tiny_model.main([str(out), "--novel", str(novel_path)]) == 0
    printed = capsys.readouterr().out
    assert f"--base-model {out}" in printed and f"transformers serve {out}" in printed
    train.check_tokenizer(str(out))  # has BOS and EOS: no refusal
    assert tiny_model.TinyModel.load(out).reply == tiny_model.REPLY
    assert tiny_model.main([str(tmp_path / "x"), "--novel", str(tmp_path / "missing.txt")]) == 1
    assert "is not a file" in capsys.readouterr().err


def test_loss_lines_are_parsed() -> None:
    log = (
        "11/29 - mmengine - INFO - Iter(train) [1/8]  lr: 2.0e-07  grad_norm: 6.9  loss: 13.8461\n"
        "11/29 - mmengine - INFO - Iter(train) [ 2/8]  lr: 2.0e-02  loss: nan\n"
    )
    parsed = train.parse_losses(log)
    assert parsed[0] == (1, 13.8461) and parsed[1][0] == 2 and math.isnan(parsed[1][1])


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))

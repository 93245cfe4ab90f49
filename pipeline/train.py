"""Fine-tune one character with XTuner (QLoRA), convert the adapter and merge it into the base model.

    python -m pipeline.train wukong --data data/wukong/train.jsonl [--val data/wukong/val.jsonl]
        [--base-model Shanghai_AI_Laboratory/internlm2-chat-7b | /models/internlm2-chat-7b]
        [--work-dir artifacts/train/wukong] [--gpus N] [--preset qlora-7b|cpu-tiny] [--set KEY=VALUE ...] [--dry-run]

Runs in the training environment (`.venv-train`, requirements-train.txt). One template
(`pipeline/xtuner_config.py.tmpl`) is filled with the character's `meta_instruction` (SYSTEM), its sample
questions (evaluation inputs) and the preset's settings, and written to `WORK_DIR/config/xtuner_config.py`. Then:

1. train: `python -m xtuner.tools.train CONFIG --work-dir WORK_DIR` (several GPUs: `torchrun` with
   `--nproc_per_node N` and DeepSpeed ZeRO-2, as `NPROC_PER_NODE=N xtuner train ... --deepspeed deepspeed_zero2`
   does); rerun, it resumes from the work dir's last checkpoint;
2. `xtuner.tools.model_converters.pth_to_hf`: the last checkpoint -> a PEFT adapter in `WORK_DIR/adapter`;
3. `xtuner.tools.model_converters.merge`: base model + adapter -> `WORK_DIR/merged` (what the apps load with
   `XIYOU_MODEL_<ID>` and what `pipeline.serve` serves);
4. with `--val`: the mean token loss of the base and of the merged model on the validation records.

XTuner's modules are called directly and their exit codes checked (the `xtuner` command exits 0 even when
training fails). Finished stages are recorded in `WORK_DIR/run.json`, so a rerun skips them.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import gc
import hashlib
import importlib.util
import json
import math
import os
import re
import shlex
import shutil
import string
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tqdm import tqdm

from xiyou.character import Character, CharacterError, get_character
from xiyou.env import REPO_ROOT
from xiyou.io import write_text_atomic
from xiyou.process import free_port, run_echoed

DEFAULT_BASE_MODEL = "Shanghai_AI_Laboratory/internlm2-chat-7b"
#: Where the training step writes, one folder per character (pipeline.serve looks here by default).
DEFAULT_WORK_ROOT = REPO_ROOT / "artifacts" / "train"
TEMPLATE_PATH = Path(__file__).with_name("xtuner_config.py.tmpl")
SHIMS_DIR = Path(__file__).with_name("xtuner_shims")
NO_TORCHVISION_SHIM = SHIMS_DIR / "no_torchvision"
CPU_SHIM = SHIMS_DIR / "cpu"
CONFIG_NAME = "xtuner_config.py"
MANIFEST_NAME = "run.json"
ADAPTER_DIR = "adapter"
MERGED_DIR = "merged"

XTUNER_TRAIN = "xtuner.tools.train"
XTUNER_PTH_TO_HF = "xtuner.tools.model_converters.pth_to_hf"
XTUNER_MERGE = "xtuner.tools.model_converters.merge"


class TrainError(RuntimeError):
    """Training could not run or failed; the message says what and what to do."""


class TrainSettings(BaseModel):
    """The parameters at the top of the generated XTuner config (see pipeline/xtuner_config.py.tmpl)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    load_in_4bit: bool = True
    torch_dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    lora_r: int = Field(64, ge=1)
    lora_alpha: int = Field(16, ge=1)
    lora_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    max_length: int = Field(2048, ge=16)
    pack_to_max_length: bool = True
    map_num_proc: int = Field(8, ge=1)
    batch_size: int = Field(1, ge=1)
    accumulative_counts: int = Field(16, ge=1)
    dataloader_num_workers: int = Field(0, ge=0)
    max_epochs: int = Field(3, ge=1)
    max_iters: int | None = Field(None, ge=3)
    amp: bool = True
    lr: float = Field(2e-4, gt=0.0)
    warmup_ratio: float = Field(0.03, gt=0.0, lt=1.0)
    save_steps: int = Field(500, ge=1)
    save_total_limit: int = Field(2, ge=-1)
    log_interval: int = Field(10, ge=1)
    evaluation_freq: int = Field(500, ge=1)
    evaluation_max_new_tokens: int = Field(300, ge=1)
    seed: int = 42

    @property
    def needs_cuda(self) -> bool:
        """4-bit nf4 weights and fp16 AMP (AmpOptimWrapper) only run on a CUDA GPU."""
        return self.load_in_4bit or self.amp


#: Named starting points for the settings; `--set KEY=VALUE` adjusts any field after the preset.
PRESETS: dict[str, TrainSettings] = {
    # InternLM2-chat-7B QLoRA on one GPU (~11 GB with max_length 2048), XTuner's recipe.
    "qlora-7b": TrainSettings(),
    # A small model on CPU (tests, trying the pipeline without a GPU): full precision, no quantization,
    # plain OptimWrapper, short samples, one process for the dataset map, a fixed handful of iterations
    # (the warmup is then counted in iterations and never rounds to zero).
    "cpu-tiny": TrainSettings(
        load_in_4bit=False,
        torch_dtype="float32",
        amp=False,
        lora_r=8,
        lora_alpha=16,
        lora_dropout=0.0,
        max_length=256,
        map_num_proc=1,
        accumulative_counts=1,
        max_iters=8,
        lr=2e-2,
        warmup_ratio=0.25,
        save_steps=4,
        save_total_limit=2,
        log_interval=1,
        evaluation_freq=1000,
        evaluation_max_new_tokens=8,
    ),
}


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """`KEY=VALUE` strings -> a dict; values are read as JSON when they parse (numbers, true/false, null)."""
    out: dict[str, Any] = {}
    fields = TrainSettings.model_fields
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise TrainError(f"--set {item!r}: expected KEY=VALUE, e.g. --set max_length=1024")
        if key not in fields:
            raise TrainError(f"--set {item!r}: unknown setting {key!r}; settings: {', '.join(fields)}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def make_settings(preset: str, overrides: Sequence[str] = ()) -> TrainSettings:
    """The preset's settings with `--set` overrides applied and validated."""
    if preset not in PRESETS:
        raise TrainError(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
    values = PRESETS[preset].model_dump()
    values.update(parse_overrides(overrides))
    try:
        return TrainSettings.model_validate(values)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(map(str, err['loc']))}: {err['msg']} (got {err.get('input')!r})" for err in e.errors()
        )
        raise TrainError(f"invalid training settings: {problems}") from None


# --------------------------------------------------------------------------------------------------------------
# the config


def render_config(
    character: Character,
    settings: TrainSettings,
    *,
    base_model: str,
    data_files: Sequence[str | Path],
    preset: str = "qlora-7b",
) -> str:
    """The XTuner config for `character`: the template with every parameter written as a Python literal."""
    template = string.Template(TEMPLATE_PATH.read_text(encoding="utf-8"))
    values: dict[str, str] = {k: repr(v) for k, v in settings.model_dump().items()}
    values["torch_dtype"] = f"torch.{settings.torch_dtype}"
    values.update(
        character_id=repr(character.id),
        preset=repr(preset),
        pretrained_model_name_or_path=repr(str(base_model)),
        data_files=repr([str(Path(p).resolve()) for p in data_files]),
        system=repr(character.meta_instruction),
        evaluation_inputs=_repr_list(character.sample_questions),
    )
    try:
        return template.substitute(values)
    except (KeyError, ValueError) as e:
        raise TrainError(
            f"{TEMPLATE_PATH}: placeholder {e} has no value; keep the template and TrainSettings in step"
        ) from None


def _repr_list(items: Sequence[str]) -> str:
    return "[\n" + "".join(f"    {item!r},\n" for item in items) + "]"


# --------------------------------------------------------------------------------------------------------------
# inputs


@dataclasses.dataclass(frozen=True)
class DataSummary:
    path: Path
    records: int
    sha256: str


def check_records(path: Path, character: Character, *, what: str = "--data") -> DataSummary:
    """Validate an XTuner conversation JSONL file and that its system prompt is the character's meta_instruction."""
    if not path.is_file():
        raise TrainError(f"{what} {path}: no such file (build it with `python -m pipeline.build_dataset`)")
    digest = hashlib.sha256()
    count = 0
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            digest.update(raw)
            if not raw.strip():
                continue
            where = f"{what} {path}:{lineno}"
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as e:
                raise TrainError(f"{where}: not valid JSON ({e.msg}); one JSON object per line is expected") from None
            conversation = record.get("conversation") if isinstance(record, dict) else None
            if not isinstance(conversation, list) or not conversation:
                raise TrainError(f"{where}: field 'conversation' must be a non-empty list of turns (XTuner format)")
            for i, turn in enumerate(conversation):
                if (
                    not isinstance(turn, dict)
                    or not isinstance(turn.get("input"), str)
                    or not isinstance(turn.get("output"), str)
                ):
                    raise TrainError(f"{where}: conversation[{i}] needs string fields 'input' and 'output'")
            system = conversation[0].get("system")
            if system != character.meta_instruction:
                raise TrainError(
                    f"{where}: conversation[0].system is {str(system)[:40]!r}…, not {character.id}'s meta_instruction; "
                    "the model must be trained with the system prompt the apps send. Rebuild the data with "
                    "`python -m pipeline.build_dataset` (it sets system from the character file)."
                )
            count += 1
    if count == 0:
        raise TrainError(f"{what} {path}: no records")
    return DataSummary(path.resolve(), count, digest.hexdigest())


def resolve_base_model(spec: str, *, download: bool = True) -> str:
    """A local model directory as is; otherwise a ModelScope id, downloaded with `snapshot_download`."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise TrainError(
                f"--base-model {spec}: the folder has no config.json; point at a Hugging Face model folder"
            )
        return str(path.resolve())
    if spec.startswith(("/", ".", "~")) or spec.count("/") != 1:
        raise TrainError(
            f"--base-model {spec!r}: no such folder, and not a ModelScope id (owner/name such as {DEFAULT_BASE_MODEL})"
        )
    if not download:
        return spec
    try:
        from modelscope import snapshot_download
    except ImportError:
        raise TrainError(
            "modelscope is not installed in this environment: pip install -r requirements-train.txt"
        ) from None
    print(f"[train] downloading the base model {spec} from ModelScope (resumes if interrupted) …", flush=True)
    try:
        return str(snapshot_download(spec))
    except Exception as e:  # network, unknown id: say which and what to do
        raise TrainError(
            f"could not download {spec} from ModelScope: {e}. Check the id and the network, or download it "
            "elsewhere and pass the folder with --base-model /path/to/model"
        ) from None


# --------------------------------------------------------------------------------------------------------------
# the commands


def subprocess_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for XTuner's processes, with the stand-ins of pipeline/xtuner_shims where they are needed."""
    env = dict(os.environ if base is None else base)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    shims = []
    if importlib.util.find_spec("torchvision") is None:
        shims.append(str(NO_TORCHVISION_SHIM))
    if not cuda_available():
        shims.append(str(CPU_SHIM))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (*shims, env.get("PYTHONPATH", "")) if p)
    return env


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Where this node stands in a multi-node run: torchrun's rendezvous, as XTuner's `NNODES`, `NODE_RANK`, `ADDR`
    and `PORT` set it (`NPROC_PER_NODE` is `--gpus`)."""

    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int | None = None  # None: a free port (one node only)

    def __post_init__(self) -> None:
        if self.nnodes < 1:
            raise TrainError(f"--nnodes must be at least 1, got {self.nnodes}")
        if not 0 <= self.node_rank < self.nnodes:
            raise TrainError(
                f"--node-rank must be 0…{self.nnodes - 1} with --nnodes {self.nnodes}, got {self.node_rank}"
            )
        if self.master_port is not None and not 1 <= self.master_port <= 65535:
            raise TrainError(f"--master-port must be a port number (1-65535), got {self.master_port}")
        if self.nnodes > 1 and (self.master_port is None or self.master_addr in ("127.0.0.1", "localhost", "")):
            raise TrainError(
                "several nodes meet at node 0: pass --master-addr (node 0's address, reachable from every node) "
                "and --master-port (the same free port on every node), e.g. --master-addr 10.0.0.1 --master-port 29500"
            )

    def env(self, gpus: int) -> dict[str, str]:
        """XTuner's own variables for this node (what `xtuner train` reads)."""
        if self.nnodes == 1 and gpus <= 1:
            return {}
        out = {"NPROC_PER_NODE": str(gpus), "NNODES": str(self.nnodes), "NODE_RANK": str(self.node_rank)}
        out["ADDR"] = self.master_addr
        if self.master_port is not None:
            out["PORT"] = str(self.master_port)
        return out

    def at_rank(self, rank: int) -> Cluster:
        return dataclasses.replace(self, node_rank=rank)


def train_command(
    config: Path,
    work_dir: Path,
    *,
    gpus: int = 1,
    deepspeed: str | None = None,
    resume: Path | None = None,
    python: str | None = None,
    port: int | None = None,
    cluster: Cluster | None = None,
) -> list[str]:
    """XTuner's training module; with several GPUs or nodes under torchrun, as `NPROC_PER_NODE=N NNODES=M
    NODE_RANK=R ADDR=… PORT=… xtuner train` does."""
    python = python or sys.executable
    cluster = cluster or Cluster()
    args = [str(config), "--work-dir", str(work_dir)]
    if deepspeed:
        args += ["--deepspeed", deepspeed]
    if resume is not None:
        args += ["--resume", str(resume)]
    if gpus <= 1 and cluster.nnodes == 1:
        return [python, "-m", XTUNER_TRAIN, *args]
    return [
        python, "-m", "torch.distributed.run", f"--nnodes={cluster.nnodes}", f"--node_rank={cluster.node_rank}",
        f"--nproc_per_node={gpus}", f"--master_addr={cluster.master_addr}",
        f"--master_port={cluster.master_port or port or 29500}",
        "-m", XTUNER_TRAIN, *args, "--launcher", "pytorch",
    ]  # fmt: skip


def pth_to_hf_command(
    config: Path, checkpoint: Path, out_dir: Path, *, fp32: bool, python: str | None = None
) -> list[str]:
    cmd = [python or sys.executable, "-m", XTUNER_PTH_TO_HF, str(config), str(checkpoint), str(out_dir)]
    cmd.append("--safe-serialization")
    if fp32:
        cmd.append("--fp32")
    return cmd


def merge_command(
    base_model: str, adapter: Path, out_dir: Path, *, device: str, python: str | None = None
) -> list[str]:
    return [
        python or sys.executable, "-m", XTUNER_MERGE, str(base_model), str(adapter), str(out_dir),
        "--max-shard-size", "2GB", "--safe-serialization", "--device", device,
    ]  # fmt: skip


#: transformers warns once per tokenizer when XTuner encodes a sample longer than the tokenizer's
#: `model_max_length`: "Token indices sequence length is longer than the specified maximum sequence length for this
#: model (… > …). Running this sequence through the model will result in indexing errors". Harmless here: XTuner
#: cuts every sample to `max_length` (and packs) before the model sees it. The line stays in the log; the terminal
#: gets this explanation instead.
TOKENIZER_LENGTH_WARNING = "Running this sequence through the model will result in indexing errors"
TOKENIZER_LENGTH_NOTE = (
    '[train] note: the tokenizer warned that a sample is longer than its model_max_length ("indexing errors"); '
    "harmless: XTuner cuts every sample to max_length before the model sees it (full line in the log)\n"
)


def _echo_filtered() -> Callable[[str], None]:
    """Print a step's output line by line, the tokenizer's length warning replaced by a short explanation."""
    explained = False

    def echo(line: str) -> None:
        nonlocal explained
        if TOKENIZER_LENGTH_WARNING in line or line.startswith("Token indices sequence length is longer"):
            if not explained:
                sys.stdout.write(TOKENIZER_LENGTH_NOTE)
                explained = True
            return
        sys.stdout.write(line)

    return echo


def run_logged(name: str, cmd: Sequence[str], log_path: Path, env: dict[str, str]) -> None:
    """Run one XTuner step, echoing its output and saving it to `log_path`; raise TrainError unless it exits 0."""
    print(f"[train] {name}: {' '.join(cmd)}", flush=True)
    started = time.monotonic()
    rc, tail = run_echoed(cmd, log_path=log_path, env=env, echo=_echo_filtered())
    sys.stdout.flush()
    if rc != 0:
        shown = "\n".join(f"    {line}" for line in tail)
        raise TrainError(f"{name} failed (exit code {rc}); the end of its output (full log: {log_path}):\n{shown}")
    print(f"[train] {name} done in {time.monotonic() - started:.1f} s", flush=True)


# --------------------------------------------------------------------------------------------------------------
# the work dir


def run_into(
    name: str,
    command: Callable[[Path], Sequence[str]],
    target: Path,
    expect: str,
    logs: Path,
    env: dict[str, str],
) -> None:
    """Run the step `name` (`command(folder)`) into a fresh `<target>.tmp`, check it wrote `expect` there, then
    move it into place as `target`: an interrupted step never leaves a half-written `target`."""
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    log = logs / f"{name}.log"
    run_logged(name, command(tmp), log, env)
    if not (tmp / expect).is_file():
        raise TrainError(f"{name} exited 0 but wrote no {expect} in {tmp}; see {log}")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)


def config_digest(config_text: str, data: Sequence[DataSummary]) -> str:
    h = hashlib.sha256(config_text.encode("utf-8"))
    for d in data:
        h.update(d.sha256.encode())
    return h.hexdigest()


def read_manifest(work_dir: Path) -> dict[str, Any]:
    path = work_dir / MANIFEST_NAME
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise TrainError(f"{path}: unreadable ({e}); delete it to start this work dir over") from None


def write_manifest(work_dir: Path, manifest: dict[str, Any]) -> None:
    write_text_atomic(work_dir / MANIFEST_NAME, json.dumps(manifest, ensure_ascii=False, indent=2) + "\n")


def last_checkpoint(work_dir: Path) -> Path | None:
    """The checkpoint mmengine recorded last in `work_dir/last_checkpoint`, if it still exists."""
    marker = work_dir / "last_checkpoint"
    if marker.is_file():
        path = Path(marker.read_text(encoding="utf-8").strip())
        if not path.is_absolute():
            path = work_dir / path
        if path.exists():
            return path
    found = sorted(work_dir.glob("iter_*.pth"), key=lambda p: int(p.stem.split("_")[1]))
    return found[-1] if found else None


def default_work_dir(character_id: str) -> Path:
    return DEFAULT_WORK_ROOT / character_id


LOSS_LINE = re.compile(r"Iter\(train\) \[\s*(\d+)/(\d+)\].*?\bloss: (\S+)")


def parse_losses(log_text: str) -> list[tuple[int, float]]:
    """(iteration, loss) pairs from mmengine's training log lines (`Iter(train) [3/8] ... loss: 2.1`)."""
    out = []
    for m in LOSS_LINE.finditer(log_text):
        try:
            out.append((int(m.group(1)), float(m.group(3))))
        except ValueError:
            out.append((int(m.group(1)), math.nan))
    return out


#: Tokens a tokenizer may already have for the start of a text, in the order they are suggested as BOS.
BOS_CANDIDATES = ("<s>", "<|begin_of_text|>", "<bos>", "<|startoftext|>", "<|endoftext|>")


def check_tokenizer(base_model: str) -> None:
    """XTuner prepends the tokenizer's BOS to every sample and fails deep in a worker without one: say so first,
    with the value to set."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(base_model, trust_remote_code=True)
    except Exception as e:
        raise TrainError(f"--base-model {base_model}: cannot load its tokenizer: {e}") from None
    config = Path(base_model) / "tokenizer_config.json"
    if tokenizer.bos_token_id is None:
        vocab = tokenizer.get_vocab()
        candidates = [t for t in BOS_CANDIDATES if t in vocab]
        if not candidates and tokenizer.eos_token:
            candidates = [tokenizer.eos_token]
        fix = (
            f'set "bos_token": {json.dumps(candidates[0], ensure_ascii=False)} in {config} (a token its vocabulary '
            f"has{'; GPT-2 style models use their EOS' if candidates[0] == tokenizer.eos_token else ''})"
            if candidates
            else f'add a BOS token (e.g. "<s>") to the tokenizer and set "bos_token" in {config}'
        )
        raise TrainError(
            f"--base-model {base_model}: the tokenizer has no BOS token; XTuner starts every sample with BOS "
            f"(InternLM2: <s>). Fix: {fix}. `python -m pipeline.tiny_model` builds a CPU test model that has one."
        )
    if tokenizer.eos_token_id is None:
        raise TrainError(
            f"--base-model {base_model}: the tokenizer has no EOS token; XTuner ends every reply with EOS "
            f'(InternLM2: </s>). Set "eos_token" in {config}.'
        )


def xtuner_installed() -> bool:
    return importlib.util.find_spec("xtuner") is not None


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


# --------------------------------------------------------------------------------------------------------------
# validation loss


def validation_loss(model_dir: str, records_path: Path, *, max_length: int, max_records: int = 200) -> float:
    """Mean per-token loss of the model on the records' replies, encoded exactly as XTuner trains on them."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if str(NO_TORCHVISION_SHIM) not in sys.path and importlib.util.find_spec("torchvision") is None:
        sys.path.insert(0, str(NO_TORCHVISION_SHIM))
    from xtuner.dataset.map_fns import template_map_fn_factory
    from xtuner.dataset.utils import encode_fn
    from xtuner.utils import PROMPT_TEMPLATE

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.float16 if device == "cuda" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=dtype, trust_remote_code=True).to(device)
    model.eval()
    apply_template = template_map_fn_factory(template=PROMPT_TEMPLATE.internlm2_chat)
    total, tokens = 0.0, 0
    with records_path.open(encoding="utf-8") as f:
        lines = [line for line in f if line.strip()][:max_records]
    with torch.no_grad():
        for line in tqdm(lines, desc=f"validation loss ({Path(model_dir).name})", unit="record"):
            example = apply_template({"conversation": json.loads(line)["conversation"]})
            enc = encode_fn(example, tokenizer, max_length, input_ids_with_output=True)
            labels = torch.tensor([enc["labels"]], device=device)
            n = int((labels[:, 1:] != -100).sum())
            if n == 0:
                continue
            out = model(input_ids=torch.tensor([enc["input_ids"]], device=device), labels=labels)
            total += float(out.loss) * n
            tokens += n
    del model
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    if tokens == 0:
        raise TrainError(f"--val {records_path}: no reply tokens to score")
    return total / tokens


# --------------------------------------------------------------------------------------------------------------
# the whole step


@dataclasses.dataclass
class TrainJob:
    character: Character
    data: list[Path]
    val: Path | None
    base_model: str
    work_dir: Path
    settings: TrainSettings
    preset: str = "qlora-7b"
    gpus: int = 1
    deepspeed: str | None = None
    merge_device: str | None = None
    cluster: Cluster = dataclasses.field(default_factory=Cluster)

    @property
    def config_path(self) -> Path:
        # In a subfolder: mmengine dumps its resolved copy of the config to WORK_DIR/<config file name>.
        return self.work_dir / "config" / CONFIG_NAME

    @property
    def adapter_dir(self) -> Path:
        return self.work_dir / ADAPTER_DIR

    @property
    def merged_dir(self) -> Path:
        return self.work_dir / MERGED_DIR

    def config_text(self, base_model: str | None = None) -> str:
        return render_config(
            self.character,
            self.settings,
            base_model=base_model or self.base_model,
            data_files=self.data,
            preset=self.preset,
        )

    def train_command(self, *, resume: Path | None = None, python: str | None = None, rank: int | None = None):
        cluster = self.cluster if rank is None else self.cluster.at_rank(rank)
        port = None if cluster.master_port or (self.gpus <= 1 and cluster.nnodes == 1) else free_port()
        return train_command(
            self.config_path, self.work_dir, gpus=self.gpus, deepspeed=self.deepspeed, resume=resume,
            python=python, port=port, cluster=cluster,
        )  # fmt: skip

    def commands(
        self, base_model: str, *, resume: Path | None = None, device: str = "cpu", python: str | None = None
    ) -> dict[str, list[str]]:
        checkpoint = resume or self.work_dir / "iter_N.pth"
        fp32 = self.settings.torch_dtype == "float32"
        return {
            "train": self.train_command(resume=resume, python=python),
            "pth_to_hf": pth_to_hf_command(self.config_path, checkpoint, self.adapter_dir, fp32=fp32, python=python),
            "merge": merge_command(base_model, self.adapter_dir, self.merged_dir, device=device, python=python),
        }


def dry_run(job: TrainJob) -> None:
    base = resolve_base_model(job.base_model, download=False)
    print(f"# XTuner config that would be written to {job.config_path}")
    print(job.config_text(base))
    resume = last_checkpoint(job.work_dir) if job.work_dir.is_dir() else None
    print("# commands (in the training environment)")
    if base != job.base_model or not Path(base).is_dir():
        print(f"#   download: modelscope.snapshot_download({base!r})")
    device = job.merge_device or ("cuda" if cuda_available() else "cpu")
    train_env_python = REPO_ROOT / ".venv-train" / "bin" / "python"
    python = sys.executable if xtuner_installed() or not train_env_python.is_file() else str(train_env_python)
    cmds = job.commands(base, resume=resume, device=device, python=python)
    for path in job.data:
        if not Path(path).is_file():
            print(f"#   warning: --data {path} does not exist yet")
    if job.gpus > 1 or job.cluster.nnodes > 1:
        print(f"#   NPROC_PER_NODE={job.gpus} NNODES={job.cluster.nnodes}: torchrun + DeepSpeed {job.deepspeed}")
    if job.cluster.nnodes > 1:
        print(f"#   {job.cluster.nnodes} nodes: run on each node, in the same checkout and data paths:")
        for rank in range(job.cluster.nnodes):
            env = " ".join(f"{k}={v}" for k, v in job.cluster.at_rank(rank).env(job.gpus).items())
            print(f"#   node {rank}: {env} {shlex.join(job.train_command(resume=resume, python=python, rank=rank))}")
        print("#   then, on node 0 only (where the checkpoints are):")
        cmds.pop("train")
    for name, cmd in cmds.items():
        print(f"#   {name}: {' '.join(cmd)}")
    if resume:
        print(f"#   (resumes from {resume})")


# --------------------------------------------------------------------------------------------------------------
# the run: checks first (nothing is written when one fails), then a table of stages, each skipped when done


@dataclasses.dataclass
class TrainRun:
    """What the stages share: the job, the checked inputs, the base model's folder, the manifest being written."""

    job: TrainJob
    base: str
    val: DataSummary | None
    manifest: dict[str, Any]
    env: dict[str, str]

    @property
    def stages(self) -> dict[str, Any]:
        return self.manifest["stages"]

    @property
    def logs(self) -> Path:
        return self.job.work_dir / "logs"


@dataclasses.dataclass(frozen=True)
class Stage:
    """One step of the run: `run` does it and returns what the manifest records under `name`; `pending` says
    whether it is still to do (default: not recorded yet); `done` is what a rerun prints when it is skipped."""

    name: str
    run: Callable[[TrainRun], dict[str, Any]]
    done: Callable[[TrainRun], str] | None = None
    pending: Callable[[TrainRun], bool] | None = None
    all_nodes: bool = False  # also on nodes other than node 0 (training); the others are node 0's alone

    def is_pending(self, r: TrainRun) -> bool:
        return self.pending(r) if self.pending is not None else self.name not in r.stages


def _train(r: TrainRun) -> dict[str, Any]:
    work_dir, log = r.job.work_dir, r.logs / "train.log"
    resume = last_checkpoint(work_dir)
    env = dict(r.env, **r.job.cluster.env(r.job.gpus))
    if resume:
        print(f"[train] resuming from {resume}", flush=True)
        # mmengine checkpoints hold more than tensors (optimizer, message hub); torch >= 2.6 loads only
        # tensors unless told otherwise. They were written by this work dir's own run, so they are trusted.
        env["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = "1"
    started = time.monotonic()
    run_logged("train", r.job.train_command(resume=resume), log, env)
    if r.job.cluster.node_rank > 0:
        return {"node_rank": r.job.cluster.node_rank, "seconds": round(time.monotonic() - started, 1)}
    checkpoint = last_checkpoint(work_dir)
    if checkpoint is None:
        raise TrainError(f"training exited 0 but left no checkpoint in {work_dir}; see {log}")
    losses = parse_losses(log.read_text(encoding="utf-8", errors="replace"))
    if any(not math.isfinite(loss) for _, loss in losses):
        bad = next(i for i, loss in losses if not math.isfinite(loss))
        raise TrainError(
            f"the training loss is not finite from iteration {bad} on (see {log}): lower the learning rate "
            "(--set lr=...) or check the data; delete the work dir to start over"
        )
    if losses:
        (i0, first), (i1, last) = losses[0], losses[-1]
        print(f"[train] loss: first {first:.4f} (iter {i0}), last {last:.4f} (iter {i1})", flush=True)
    return {"checkpoint": str(checkpoint), "seconds": round(time.monotonic() - started, 1), "losses": losses}


def _convert(r: TrainRun) -> dict[str, Any]:
    checkpoint, fp32 = Path(r.stages["train"]["checkpoint"]), r.job.settings.torch_dtype == "float32"
    command = functools.partial(pth_to_hf_command, r.job.config_path, checkpoint, fp32=fp32)
    run_into("pth_to_hf", command, r.job.adapter_dir, "adapter_config.json", r.logs, r.env)
    return {"adapter": str(r.job.adapter_dir)}


def _merge(r: TrainRun) -> dict[str, Any]:
    device = r.job.merge_device or ("cuda" if cuda_available() else "cpu")
    command = functools.partial(merge_command, r.base, r.job.adapter_dir, device=device)
    run_into("merge", command, r.job.merged_dir, "config.json", r.logs, r.env)
    return {"merged": str(r.job.merged_dir)}


def _validate(r: TrainRun) -> dict[str, Any]:
    val, max_length = r.val, r.job.settings.max_length
    assert val is not None
    print(f"[train] validation loss on {val.records} records of {val.path} …", flush=True)
    before = validation_loss(r.base, val.path, max_length=max_length)
    after = validation_loss(str(r.job.merged_dir), val.path, max_length=max_length)
    if not (math.isfinite(before) and math.isfinite(after)):
        raise TrainError(f"validation loss is not finite (base {before}, merged {after}): the training diverged")
    print(f"[train] validation loss: base {before:.4f} -> merged {after:.4f}", flush=True)
    return {"sha256": val.sha256, "records": val.records, "base_loss": before, "merged_loss": after}


#: The run, in order. A rerun skips what run.json records as done.
STAGES: tuple[Stage, ...] = (
    Stage(
        "train", _train, lambda r: f"training already finished ({r.stages['train'].get('checkpoint')})", all_nodes=True
    ),
    Stage("pth_to_hf", _convert, lambda r: f"adapter already converted ({r.job.adapter_dir})"),
    Stage("merge", _merge, lambda r: f"already merged ({r.job.merged_dir})"),
    Stage(
        "validation",
        _validate,
        pending=lambda r: r.val is not None and r.stages.get("validation", {}).get("sha256") != r.val.sha256,
    ),
)


def prepare(job: TrainJob) -> TrainRun:
    """Every check before anything is written: the environment, the data, the GPU, the base model and its
    tokenizer, a work dir of another run. Only then is the work dir created, with its config and manifest."""
    if not xtuner_installed():
        raise TrainError(
            f"XTuner is not installed in this environment ({sys.executable}): run the training environment's "
            "python, e.g. .venv-train/bin/python -m pipeline.train … (make setup-train builds it)"
        )
    data = [check_records(p, job.character) for p in job.data]
    val = check_records(job.val, job.character, what="--val") if job.val else None
    if job.settings.needs_cuda and not cuda_available():
        raise TrainError(
            "this preset needs a CUDA GPU (4-bit nf4 weights and fp16 mixed precision) and torch sees none. "
            "To exercise the pipeline on a CPU, use a small model: --preset cpu-tiny --base-model /path/to/small-model "
            "(python -m pipeline.tiny_model builds one; or --set load_in_4bit=false --set amp=false "
            "--set torch_dtype=float32)."
        )
    if (job.gpus > 1 or job.cluster.nnodes > 1) and job.deepspeed and importlib.util.find_spec("deepspeed") is None:
        raise TrainError(f"--gpus {job.gpus} trains with DeepSpeed ({job.deepspeed}): pip install deepspeed==0.16.2")
    job.work_dir = job.work_dir.resolve()
    work_dir = job.work_dir
    manifest = read_manifest(work_dir)
    base = manifest.get("base_model_path") if manifest.get("base_model") == job.base_model else None
    if not base or not Path(base).is_dir():
        base = resolve_base_model(job.base_model)
    check_tokenizer(base)
    text = job.config_text(base)
    digest = config_digest(text, data)
    stages: dict[str, Any] = manifest.get("stages", {})
    if manifest and manifest.get("config_sha256") != digest and (stages or last_checkpoint(work_dir)):
        raise TrainError(
            f"{work_dir} holds a run with another config or other data (see {work_dir / MANIFEST_NAME}); "
            "resuming it would mix the two. Use another --work-dir, or delete this one to start over."
        )
    work_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(job.config_path, text)
    manifest.update(
        character=job.character.id,
        preset=job.preset,
        settings=job.settings.model_dump(),
        base_model=job.base_model,
        base_model_path=base,
        data=[{"path": str(d.path), "records": d.records, "sha256": d.sha256} for d in data],
        config=str(job.config_path),
        config_sha256=digest,
        adapter=str(job.adapter_dir),
        merged=str(job.merged_dir),
        stages=stages,
    )
    if job.cluster.node_rank == 0:
        write_manifest(work_dir, manifest)
    return TrainRun(job, base, val, manifest, subprocess_env())


def run(job: TrainJob) -> Path:
    """Train, convert and merge; returns the merged model folder. Finished stages are skipped on a rerun."""
    r = prepare(job)
    for stage in STAGES:
        if job.cluster.node_rank > 0 and not stage.all_nodes:
            continue
        if stage.is_pending(r):
            r.stages[stage.name] = stage.run(r)
            if job.cluster.node_rank == 0:  # node 0 keeps the record (the work dir may be shared)
                write_manifest(job.work_dir, r.manifest)
        elif stage.done is not None:
            print(f"[train] {stage.done(r)}", flush=True)
    if job.cluster.node_rank > 0:
        print(f"[train] node {job.cluster.node_rank}: training done; node 0 converts and merges", flush=True)
        return job.merged_dir
    cid = job.character.id
    print(f"[train] {cid}: merged model in {job.merged_dir}", flush=True)
    print(f"        try it:   {_model_var(cid)}={job.merged_dir} streamlit run apps/{cid}/app.py")
    print(f"        serve it: python -m pipeline.serve --models {cid}={job.merged_dir} --dry-run   (docs/serving.md)")
    return job.merged_dir


def _model_var(character_id: str) -> str:
    return f"XIYOU_MODEL_{character_id.upper()}"


def check_env() -> int:
    """Import XTuner's three modules the way `run` starts them (with the torchvision stand-in if needed)."""
    code = (
        f"import {XTUNER_TRAIN}, {XTUNER_PTH_TO_HF}, {XTUNER_MERGE}, torch, transformers, peft, mmengine, xtuner; "
        "print('xtuner', xtuner.__version__, '| torch', torch.__version__, '| transformers', transformers.__version__,"
        " '| peft', peft.__version__, '| mmengine', mmengine.__version__, '| cuda', torch.cuda.is_available())"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=subprocess_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        print(proc.stdout + proc.stderr, file=sys.stderr)
        print(
            "[train] the training environment is broken: see above (pip install -r requirements-train.txt)",
            file=sys.stderr,
        )
        return 1
    print(f"[train] training environment OK: {proc.stdout.strip()}")
    return 0


# --------------------------------------------------------------------------------------------------------------
# CLI


def _env_int(name: str, default: int | None) -> int | None:
    value = os.environ.get(name, "").strip()
    try:
        return int(value) if value else default
    except ValueError:
        raise SystemExit(f"error: ${name}={value!r} is not a whole number; unset it or fix it") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipeline.train",
        description="Fine-tune one character with XTuner (QLoRA), then convert the adapter and merge it.",
        epilog=f"Presets: {', '.join(PRESETS)}. Settings for --set: {', '.join(TrainSettings.model_fields)}.",
    )
    p.add_argument("character", nargs="?", help="character id (sanzang, wukong, bajie, wujing)")
    p.add_argument("--data", type=Path, action="append", help="training records (XTuner JSONL); repeat for several")
    p.add_argument("--val", type=Path, help="validation records: the loss of the base and merged model is reported")
    p.add_argument(
        "--base-model", default=DEFAULT_BASE_MODEL, help="ModelScope id or local folder (default: %(default)s)"
    )
    p.add_argument(
        "--work-dir", type=Path, help=f"output folder (default: {DEFAULT_WORK_ROOT.relative_to(REPO_ROOT)}/ID)"
    )
    p.add_argument(
        "--gpus",
        type=int,
        default=_env_int("NPROC_PER_NODE", 1),
        help="GPUs on this node (default: $NPROC_PER_NODE or 1); more than one uses torchrun + DeepSpeed",
    )
    p.add_argument(
        "--deepspeed",
        choices=["none", "deepspeed_zero1", "deepspeed_zero2", "deepspeed_zero3"],
        help="DeepSpeed config of XTuner (default: deepspeed_zero2 with several GPUs, none with one)",
    )
    p.add_argument(
        "--preset", default="qlora-7b", choices=list(PRESETS), help="settings to start from (default: %(default)s)"
    )
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="change one setting"
    )
    p.add_argument(
        "--merge-device", choices=["cpu", "cuda", "auto"], help="device for the merge (default: cuda if any)"
    )
    p.add_argument(
        "--nnodes", type=int, default=_env_int("NNODES", 1), help="nodes training together (default: $NNODES or 1)"
    )
    p.add_argument(
        "--node-rank", type=int, default=_env_int("NODE_RANK", 0), help="this node's rank (default: $NODE_RANK or 0)"
    )
    p.add_argument(
        "--master-addr",
        default=os.environ.get("ADDR", "127.0.0.1"),
        help="node 0's address, reachable from every node (default: $ADDR or %(default)s)",
    )
    p.add_argument(
        "--master-port",
        type=int,
        default=_env_int("PORT", None),
        help="the rendezvous port on node 0, the same on every node (default: $PORT; one node: a free port)",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="print the config and the commands (each node's); run nothing"
    )
    p.add_argument("--check-env", action="store_true", help="check that XTuner imports in this environment, then exit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.check_env:
        return check_env()
    if not args.character:
        parser.error("the character id is required (sanzang, wukong, bajie or wujing)")
    if not args.data:
        parser.error("--data is required: the training records (python -m pipeline.build_dataset writes them)")
    if args.gpus < 1:
        parser.error(f"--gpus must be at least 1, got {args.gpus}")
    try:
        character = get_character(args.character)
        settings = make_settings(args.preset, args.overrides)
        cluster = Cluster(args.nnodes, args.node_rank, args.master_addr, args.master_port)
        deepspeed = args.deepspeed or ("deepspeed_zero2" if args.gpus > 1 or args.nnodes > 1 else "none")
        job = TrainJob(
            character=character,
            data=list(args.data),
            val=args.val,
            base_model=args.base_model,
            work_dir=args.work_dir or default_work_dir(character.id),
            settings=settings,
            preset=args.preset,
            gpus=args.gpus,
            deepspeed=None if deepspeed == "none" else deepspeed,
            merge_device=args.merge_device,
            cluster=cluster,
        )
        if args.dry_run:
            dry_run(job)
        else:
            run(job)
    except (TrainError, CharacterError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\n[train] interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

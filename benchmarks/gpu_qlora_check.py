"""GPU check of the training step: the real 4-bit QLoRA config, a few iterations, on a small InternLM2 model.

    .venv-train/bin/python benchmarks/gpu_qlora_check.py [--iters 20] [--max-length 2048] [--out result.json]

Needs a CUDA GPU and the training environment with a CUDA build of torch 2.13.0 (requirements-train.txt;
bitsandbytes 0.45.0 for nf4). Nothing is downloaded:

1. builds a small InternLM2-architecture model locally (InternLM2's own modeling code, as shipped inside XTuner,
   loaded with trust_remote_code exactly like internlm2-chat-7b; random weights; a byte-level BPE tokenizer with
   InternLM2's <s>, </s>, <|im_start|>, <|im_end|> trained on the character files' text);
2. writes wukong training records (his meta_instruction as system, his sample questions);
3. runs `python -m pipeline.train` twice, side by side: the production preset `qlora-7b` (4-bit nf4 double-quant
   base, fp16 AMP, LoRA r 64) and the same with `load_in_4bit=false` (fp16 LoRA), each for --iters iterations at
   --max-length with packing, then pth_to_hf and merge;
4. loads the merged QLoRA model through the apps' transformers backend on the GPU and generates a few tokens;
5. prints iterations/s and peak GPU memory (mmengine's `memory`, torch.cuda.max_memory_allocated) for both, and
   their ratios; writes them as JSON to --out (default $OUT/gpu_qlora_check.json when $OUT is set).

`--cpu-smoke` runs the same script on a CPU with the `cpu-tiny` preset (no quantization): it checks the model
build and the whole pipeline path, not speed or memory.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from xiyou.character import get_character, load_characters  # noqa: E402

SPECIAL = ["<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>"]
ITER_LINE = re.compile(r"Iter\(train\) \[\s*(\d+)/(\d+)\].*?\btime: ([\d.]+)(?:.*?\bmemory: (\d+))?.*?\bloss: (\S+)")


def build_tokenizer(out_dir: Path, vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = []
    for c in load_characters().values():
        texts += [c.meta_instruction, c.persona_prompt, c.greeting, *c.sample_questions]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(texts * 4 + ["system\nuser\nassistant\n"], trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="</s>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        model_max_length=4096,
        chat_template=(
            "{{ bos_token }}{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + "
            "'<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
        ),
    )
    tokenizer.save_pretrained(out_dir)
    return tokenizer


def build_internlm2(out_dir: Path, *, hidden: int, layers: int, vocab_size: int) -> Path:
    """A small InternLM2 (remote-code architecture, as internlm2-chat-7b) with random weights, saved to out_dir."""
    import importlib.util

    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    out_dir.mkdir(parents=True, exist_ok=True)
    spec = importlib.util.find_spec("xtuner")
    if spec is None or spec.origin is None:
        raise SystemExit("xtuner is not installed: run this in the training environment (.venv-train)")
    src = Path(spec.origin).parent / "_lite" / "modelings" / "internlm2"
    for name in ("configuration_internlm2.py", "modeling_internlm2.py"):
        shutil.copy(src / name, out_dir / name)
    tokenizer = build_tokenizer(out_dir, vocab_size)
    config = {
        "architectures": ["InternLM2ForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_internlm2.InternLM2Config",
            "AutoModel": "modeling_internlm2.InternLM2ForCausalLM",
            "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM",
        },
        "model_type": "internlm2",
        "vocab_size": len(tokenizer),
        "hidden_size": hidden,
        "intermediate_size": hidden * 8 // 3 // 64 * 64,
        "num_hidden_layers": layers,
        "num_attention_heads": hidden // 64,
        "num_key_value_heads": max(1, hidden // 256),
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "rope_theta": 1000000,
        "bias": False,
        "hidden_act": "silu",
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "tie_word_embeddings": False,
        "torch_dtype": "float16",
    }
    (out_dir / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    cfg = AutoConfig.from_pretrained(out_dir, trust_remote_code=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, trust_remote_code=True, torch_dtype=torch.float16)
    model.save_pretrained(out_dir, safe_serialization=True)
    for name in ("configuration_internlm2.py", "modeling_internlm2.py"):  # save_pretrained may not copy them
        if not (out_dir / name).exists():
            shutil.copy(src / name, out_dir / name)
    params = sum(p.numel() for p in model.parameters())
    print(f"[check] built a {params / 1e6:.1f}M-parameter InternLM2 model in {out_dir}", flush=True)
    return out_dir


def write_records(path: Path, n: int) -> Path:
    c = get_character("wukong")
    sentences = [s for s in c.persona_prompt.replace("。", "。\n").splitlines() if s.strip()]
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            answer = "".join(sentences[(i + k) % len(sentences)] for k in range(3))
            turn = {"system": c.meta_instruction, "input": c.sample_questions[i % len(c.sample_questions)]}
            turn["output"] = answer
            f.write(json.dumps({"id": f"gpu-{i}", "conversation": [turn]}, ensure_ascii=False) + "\n")
    return path


def run_pipeline(name: str, model: Path, data: Path, work: Path, preset: str, overrides: list[str]) -> dict:
    cmd = [sys.executable, "-m", "pipeline.train", "wukong", "--data", str(data), "--base-model", str(model)]
    cmd += ["--work-dir", str(work), "--preset", preset]
    for item in overrides:
        cmd += ["--set", item]
    print(f"[check] {name}: {' '.join(cmd)}", flush=True)
    started = time.monotonic()
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    wall = time.monotonic() - started
    log = (work / "logs" / "train.log").read_text(encoding="utf-8", errors="replace") if work.is_dir() else ""
    if proc.returncode != 0:
        print(proc.stdout[-4000:], proc.stderr[-4000:], sep="\n", file=sys.stderr)
        return {"name": name, "ok": False, "exit_code": proc.returncode, "error": proc.stderr[-2000:]}
    rows = [m.groups() for m in ITER_LINE.finditer(log)]
    times = [float(t) for _, _, t, _, _ in rows]
    steady = times[2:] or times
    memory = [int(m) for *_, m, _ in rows if m]
    losses = [float(loss) for *_, loss in rows]
    return {
        "name": name,
        "ok": True,
        "iterations": len(rows),
        "iter_per_s": round(1.0 / statistics.mean(steady), 3) if steady else None,
        "peak_memory_mb": max(memory) if memory else None,
        "first_loss": losses[0] if losses else None,
        "last_loss": losses[-1] if losses else None,
        "wall_s_train_convert_merge": round(wall, 1),
        "merged": str(work / "merged"),
    }


def generate_with_app_backend(merged: Path, device: str) -> str:
    from xiyou.backends.base import GenerationSettings, collect
    from xiyou.backends.transformers_backend import TransformersBackend

    c = get_character("wukong")
    backend = TransformersBackend(c, merged, device=device)
    messages = [{"role": "system", "content": c.meta_instruction}, {"role": "user", "content": c.sample_questions[0]}]
    return collect(backend, messages, GenerationSettings(max_new_tokens=16))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--iters", type=int, default=20)
    p.add_argument("--max-length", type=int, default=2048)
    p.add_argument("--records", type=int, default=400)
    p.add_argument("--hidden", type=int, default=1024)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--vocab", type=int, default=8000)
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    p.add_argument("--cpu-smoke", action="store_true", help="CPU, cpu-tiny preset: checks the path, not the numbers")
    p.add_argument("--out", type=Path)
    args = p.parse_args()

    import torch

    if not args.cpu_smoke and not torch.cuda.is_available():
        print("no CUDA GPU here: this check needs one (or --cpu-smoke to check the path on a CPU)", file=sys.stderr)
        return 2
    out = args.out or (Path(os.environ["OUT"]) / "gpu_qlora_check.json" if os.environ.get("OUT") else None)
    root = Path(tempfile.mkdtemp(prefix="gpu-qlora-check-"))
    try:
        model = build_internlm2(root / "model", hidden=args.hidden, layers=args.layers, vocab_size=args.vocab)
        data = write_records(root / "train.jsonl", args.records)
        common = [f"max_iters={args.iters}", f"max_length={args.max_length}", f"save_steps={args.iters}"]
        common += ["log_interval=1", "evaluation_freq=100000", "evaluation_max_new_tokens=16", "accumulative_counts=1"]
        if args.cpu_smoke:
            runs = [("lora-cpu", "cpu-tiny", [])]
        else:
            runs = [("qlora-4bit", "qlora-7b", []), ("lora-fp16", "qlora-7b", ["load_in_4bit=false"])]
        results = [run_pipeline(n, model, data, root / n, preset, common + extra) for n, preset, extra in runs]
        device = "cpu" if args.cpu_smoke else "cuda"
        if results[0]["ok"]:
            reply = generate_with_app_backend(Path(results[0]["merged"]), device)
            results[0]["generated"] = reply
            print(f"[check] the merged model through the app backend ({device}) says: {reply!r}", flush=True)
        summary = {
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch": torch.__version__,
            "iters": args.iters,
            "max_length": args.max_length,
            "runs": results,
        }
        print(f"\n{'run':<12} {'ok':<4} {'iter/s':>8} {'peak MB':>9} {'loss first→last':>18} {'wall s':>8}")
        for r in results:
            loss = f"{r.get('first_loss')}→{r.get('last_loss')}" if r["ok"] else "-"
            print(
                f"{r['name']:<12} {r['ok']!s:<4} {r.get('iter_per_s') or '-':>8} {r.get('peak_memory_mb') or '-':>9} "
                f"{loss:>18} {r.get('wall_s_train_convert_merge', '-'):>8}"
            )
        if len(results) == 2 and all(r["ok"] for r in results):
            q, f = results
            if q["peak_memory_mb"] and f["peak_memory_mb"]:
                summary["memory_ratio_qlora_over_fp16"] = round(q["peak_memory_mb"] / f["peak_memory_mb"], 3)
            if q["iter_per_s"] and f["iter_per_s"]:
                summary["speed_ratio_qlora_over_fp16"] = round(q["iter_per_s"] / f["iter_per_s"], 3)
            print(
                f"ratios (QLoRA / fp16 LoRA): peak memory {summary.get('memory_ratio_qlora_over_fp16')}, "
                f"iterations/s {summary.get('speed_ratio_qlora_over_fp16')}"
            )
        if out:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(summary, ensure_ascii=False, indent=2), encoding="utf-8")
            print(f"[check] results: {out}")
        return 0 if all(r["ok"] for r in results) else 1
    finally:
        if args.keep:
            print(f"[check] kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

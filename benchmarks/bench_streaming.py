"""Streaming through the transformers backend vs plain `model.generate`, side by side in one run.

Same tiny model (pipeline/tiny_model.py, built from the novel unless --model is given), same prompt, same number of
new tokens (forced with min_new_tokens = max_new_tokens, greedy). Prints tokens/s of each way, their ratio
(target: backend / plain >= 0.95; the original demos re-decoded the whole reply at every token) and the time to
first token. The backend runs as the pages build it: deltas paced to at most 60 a second (`DELTA_INTERVAL_S`).
Also measured, for comparison: the backend with every token a delta of its own (`min_delta_interval_s=0`: the
reading thread is woken at every token) and the stock `TextIteratorStreamer` in a thread (the original demos).

Two model sizes are measured: the test suite's tiny model (hidden 64, 2 layers: a token costs about 1 ms, so any
fixed cost per token shows, the worst case for a streaming design) and a small one (hidden 512, 8 layers, still
random weights and the same tokenizer: a few ms per token; a 7B model on a GPU takes 20-50 ms per token, where the
handoff between the generating thread and the reader is negligible).

Torch runs with one intra-op thread (--threads): PyTorch sizes its OpenMP pool per calling thread, so with the
default settings `generate` in the main thread and in a worker thread run different kernels, and on a busy
machine the main thread's spinning pool makes plain `generate` look many times slower than it is.

    .venv/bin/python benchmarks/bench_streaming.py [--tokens 256] [--rounds 16] [--sizes tiny,small] [--model DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=256, help="new tokens per reply (forced)")
    parser.add_argument("--rounds", type=int, default=16, help="rounds; each runs every way once")
    parser.add_argument("--model", type=Path, help="a model folder (default: build the models of --sizes)")
    parser.add_argument("--sizes", default="tiny,small", help="built models to measure: tiny, small")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (see above)")
    args = parser.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    from transformers import TextIteratorStreamer

    from xiyou.backends.base import GenerationSettings
    from xiyou.backends.transformers_backend import TransformersBackend
    from xiyou.env import novel_path

    sizes = {"tiny": {}, "small": {"hidden_size": 512, "num_layers": 8}}
    tmp = tempfile.TemporaryDirectory(prefix="xiyou-bench-")
    if args.model is not None:
        model_dirs = [args.model]
    else:
        from pipeline.tiny_model import build_tiny_model

        novel = novel_path()
        if novel is None:
            print("no novel to build the tiny model from: set XIYOU_NOVEL, or pass --model DIR", file=sys.stderr)
            return 2
        wanted = [w.strip() for w in args.sizes.split(",") if w.strip()]
        unknown = [w for w in wanted if w not in sizes]
        if unknown:
            parser.error(f"--sizes: unknown {unknown}; use tiny, small")
        model_dirs = [build_tiny_model(Path(tmp.name) / w, novel, **sizes[w]).path for w in wanted]
    for model_dir in model_dirs:
        measure(model_dir, args, GenerationSettings, TransformersBackend, TextIteratorStreamer, torch)
        print()
    tmp.cleanup()
    return 0


def measure(model_dir: Path, args: argparse.Namespace, GenerationSettings, TransformersBackend, TextIteratorStreamer,
            torch) -> None:  # fmt: skip
    """Measure every way on one model and print the numbers."""
    from xiyou.character import get_character

    character = get_character("wukong")
    n = args.tokens
    backend = TransformersBackend(character, model_dir, generate_overrides={"min_new_tokens": n})
    unpaced_backend = TransformersBackend(
        character, model_dir, generate_overrides={"min_new_tokens": n}, min_delta_interval_s=0
    )
    loaded = backend.loaded
    messages = [
        {"role": "system", "content": character.meta_instruction},
        {"role": "user", "content": "大圣，你当年为什么要大闹天宫？"},
    ]
    settings = GenerationSettings(max_new_tokens=n, temperature=0.0)
    assert backend.max_new_tokens(settings) == n, f"--tokens {n} exceeds half the model's context"
    input_ids = torch.tensor([backend.prompt_ids(messages)], device=loaded.device)
    common = dict(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        do_sample=False,
        temperature=None,
        top_p=None,
        top_k=None,
        eos_token_id=loaded.stop_ids,
        pad_token_id=loaded.tokenizer.pad_token_id,
    )
    model = loaded.model

    # Check every way really produces n tokens.
    produced: list[int] = []
    real_generate = model.generate

    def counting_generate(*a, **kw):
        out = real_generate(*a, **kw)
        if kw.get("min_new_tokens"):
            produced.append(out.shape[1] - input_ids.shape[1])
        return out

    def plain() -> tuple[float, float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            out = model.generate(**common, max_new_tokens=n, min_new_tokens=n)
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        assert out.shape[1] - input_ids.shape[1] == n
        t0 = time.perf_counter()
        with torch.inference_mode():
            model.generate(**common, max_new_tokens=1)
        return total, time.perf_counter() - t0, cpu

    deltas: dict[int, list[int]] = {}  # id(backend) -> deltas per reply

    def through(b: TransformersBackend) -> tuple[float, float, float]:
        first, count = None, 0
        t0, c0 = time.perf_counter(), time.process_time()
        for _delta in b.stream(messages, settings):
            count += 1
            if first is None:
                first = time.perf_counter() - t0
        deltas.setdefault(id(b), []).append(count)
        return time.perf_counter() - t0, first or float("nan"), time.process_time() - c0

    def stock_streamer() -> tuple[float, float, float]:
        streamer = TextIteratorStreamer(loaded.tokenizer, skip_prompt=True, skip_special_tokens=True)

        def work() -> None:
            with torch.inference_mode():
                model.generate(**common, max_new_tokens=n, min_new_tokens=n, streamer=streamer)

        first = None
        t0, c0 = time.perf_counter(), time.process_time()
        thread = threading.Thread(target=work)
        thread.start()
        for text in streamer:
            if text and first is None:
                first = time.perf_counter() - t0
        thread.join()
        return time.perf_counter() - t0, first or float("nan"), time.process_time() - c0

    unpaced = "backend stream, every token"
    ways = {
        "plain generate": plain,
        "backend stream": lambda: through(backend),
        unpaced: lambda: through(unpaced_backend),
        "stock TextIteratorStreamer": stock_streamer,
    }
    model.generate = counting_generate
    for way in ways.values():  # warm-up
        way()
    model.generate = real_generate
    times: dict[str, list[float]] = {k: [] for k in ways}
    ttft: dict[str, list[float]] = {k: [] for k in ways}
    cpu: dict[str, list[float]] = {k: [] for k in ways}
    names = list(ways)
    for r in range(args.rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotated: no way always follows another
            total, first, cpu_s = ways[name]()
            times[name].append(total)
            ttft[name].append(first)
            cpu[name].append(cpu_s)
    assert len(produced) == 4 and all(p == n for p in produced), f"produced {produced} tokens instead of {n}"

    print(f"model: {model_dir} ({loaded.device}, {sum(p.numel() for p in model.parameters()):,} parameters)")
    print(f"prompt: {input_ids.shape[1]} tokens; new tokens per reply: {n} (forced, greedy); rounds: {args.rounds}")
    for name in ways:
        best = n / min(times[name])
        median = n / statistics.median(times[name])
        first_ms = statistics.median(ttft[name]) * 1e3
        cpu_ms = statistics.median(cpu[name]) * 1e3 / n
        print(
            f"  {name:32s} median {median:7.1f} tokens/s  best {best:7.1f} tokens/s  "
            f"first token (median) {first_ms:6.2f} ms  CPU {cpu_ms:5.3f} ms/token"
        )
    print("  time to first token: plain generate = a generate call for 1 new token (prompt already tokenized);")
    print("  the streams = until the first non-empty text (prompt building, and a whole character, included)")
    for name in ("backend stream", unpaced, "stock TextIteratorStreamer"):
        paired = statistics.median(p / s for p, s in zip(times["plain generate"], times[name]))
        best = min(times["plain generate"]) / min(times[name])
        per_cpu = statistics.median(cpu["plain generate"]) / statistics.median(cpu[name])
        print(
            f"tokens/s ratio {name} / plain generate: {paired:.3f} (median of rounds), {best:.3f} (best of each), "
            f"{per_cpu:.3f} (per CPU second)"
        )
    for name, b in (("backend stream", backend), (unpaced, unpaced_backend)):
        print(f"deltas per reply of {n} tokens, {name}: median {statistics.median(deltas[id(b)]):.0f}")
    print("target: backend stream / plain generate >= 0.95")


if __name__ == "__main__":
    sys.exit(main())

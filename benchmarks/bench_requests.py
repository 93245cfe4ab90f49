"""Request throughput of the pipeline's engine vs a sequential loop like the original scripts, vs the ideal.

    .venv/bin/python benchmarks/bench_requests.py            # 2,000 requests at 100 ms latency, concurrency 32

The scripted OpenAI-compatible server (tests/scripted_openai.py) runs in its own process with a fixed latency
per answer. Measured side by side in one run:

- engine: `pipeline.llm.run_requests` (the shared client's aiohttp session, worker pool, retries armed) writing
  every answer to a `JsonlStore`, as q2a does;
- sequential: the original scripts' loop, one synchronous `OpenAI().chat.completions.create` after the other.
  It is measured on a sample (`--sequential-sample`, default 100) and extrapolated to all requests, because
  the full loop would take requests × latency (200 s for the defaults); `--sequential-sample 0` runs all;
- ideal: requests × latency ÷ concurrency (no overhead at all).

The engine is timed `--runs` times (default 3) and the best run counts: the client and the server share the
machine's cores with whatever else runs, and on a busy 2-core machine the engine's CPU per request queues behind
other processes. Each run also prints the engine's CPU time per request (this process only, not the server's):
less noisy than wall time under load, and what decides how far a wave of requests queues behind itself.

Targets: engine time within 1.15× of the ideal, engine at least 20× faster than the sequential loop.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from openai import OpenAI  # noqa: E402

from pipeline.llm import EngineConfig, Request, run_requests  # noqa: E402
from pipeline.store import JsonlStore  # noqa: E402
from xiyou.process import Process  # noqa: E402


def start_server(latency: float) -> tuple[Process, str]:
    server = [sys.executable, str(REPO / "tests" / "scripted_openai.py"), "--latency", str(latency)]
    proc = Process.start(server, pipe=True)
    line = next(iter(proc.lines()), "")
    if not line.startswith("READY "):
        proc.kill()
        raise SystemExit(f"the scripted server did not start: {line!r}")
    return proc, line.split()[1]


def requests(n: int) -> list[Request]:
    return [
        Request(id=f"bench-{i}", messages=[{"role": "user", "content": f"第{i}个问题：你是谁？"}]) for i in range(n)
    ]


def bench_engine(base_url: str, n: int, concurrency: int) -> tuple[float, int, int, float]:
    """(seconds, records stored, retries, CPU ms per request) of one engine run."""
    config = EngineConfig(base_url=base_url, model="bench", api_key="sk-bench", concurrency=concurrency, progress=False)
    with tempfile.TemporaryDirectory() as tmp, JsonlStore(Path(tmp) / "bench.jsonl") as store:
        todo = requests(n)
        cpu0, t0 = time.process_time(), time.perf_counter()
        stats = run_requests(config, todo, lambda r, text: store.append({"id": r.id, "output": text}))
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        return elapsed, len(store), stats.retries, cpu * 1000 / n


def bench_sequential(base_url: str, n: int) -> float:
    client = OpenAI(base_url=base_url, api_key="sk-bench", max_retries=0)
    t0 = time.perf_counter()
    for r in requests(n):
        client.chat.completions.create(model="bench", messages=list(r.messages))
    elapsed = time.perf_counter() - t0
    client.close()
    return elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--latency", type=float, default=0.1, help="seconds per answer at the server (default 0.1)")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--sequential-sample", type=int, default=100, help="requests to time sequentially (0: all)")
    p.add_argument("--runs", type=int, default=3, help="engine runs; the best counts, all are printed (default 3)")
    args = p.parse_args(argv)

    server, base_url = start_server(args.latency)
    try:
        bench_engine(base_url, min(64, args.requests), args.concurrency)  # warm-up: imports, connections
        runs = [bench_engine(base_url, args.requests, args.concurrency) for _ in range(max(1, args.runs))]
        engine_s, stored, retries, cpu_ms = min(runs)
        sample = args.sequential_sample or args.requests
        seq_sample_s = bench_sequential(base_url, sample)
    finally:
        server.kill()
    seq_s = seq_sample_s / sample * args.requests
    ideal_s = args.requests * args.latency / args.concurrency
    n = args.requests
    print(f"{n} requests, {args.latency * 1000:.0f} ms latency per answer, concurrency {args.concurrency}")
    print(f"  engine (concurrency {args.concurrency}): {engine_s:8.2f} s  {n / engine_s:8.1f} req/s  "
          f"({stored} records stored, {retries} retries)")  # fmt: skip
    if len(runs) > 1:
        print(f"    best of {len(runs)} runs: " + ", ".join(f"{r[0]:.2f} s" for r in runs))
    print(f"    engine CPU per request: {cpu_ms:.2f} ms in the best run; all runs: "
          + ", ".join(f"{r[3]:.2f}" for r in runs))  # fmt: skip
    extrapolated = f", extrapolated from {sample} requests in {seq_sample_s:.2f} s" if sample < n else ""
    print(f"  sequential loop:            {seq_s:8.2f} s  {n / seq_s:8.1f} req/s{extrapolated}")
    print(f"  ideal (n × latency ÷ c):    {ideal_s:8.2f} s  {n / ideal_s:8.1f} req/s")
    print(f"  engine / ideal:       {engine_s / ideal_s:6.3f}×   (target ≤ 1.15×)")
    print(f"  speed-up vs sequential: {seq_s / engine_s:6.1f}×   (target ≥ 20×)")
    ok = engine_s / ideal_s <= 1.15 and seq_s / engine_s >= 20 and stored == n
    print("  targets met" if ok else "  TARGETS NOT MET")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

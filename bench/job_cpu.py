"""Scheduler CPU per problem as a job grows: 10^3, 10^4 and 10^5 problems (issue: flat within 2x).

One job through the job core (`run_job` over a `LocalQueue` and an in-memory store) on the
in-process `Runner` with instant sim engines, under a job budget so every search opens,
spends against and closes a ledger account. Everything runs in this one process, so its CPU
time is the scheduler's (batching, contexts, ledger), the job loop's and the sim engines'; the
engines' share is a constant per problem, so any growth with job size is the scheduler's or
the loop's. Each size runs in a fresh process (no warm caches from a smaller run).

    python -m bench.job_cpu                  # 1e3, 1e4, 1e5; writes bench/results/job_cpu.json
    python -m bench.job_cpu --sizes 1000     # one size
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "job_cpu.json"


def one(n: int, strategy: str, budget: str) -> dict:
    from ponder.config import PonderConfig
    from ponder.jobs.core import run_job
    from ponder.jobs.local import LocalQueue
    from ponder.jobs.spec import JobSpec
    from ponder.jobs.store import MemoryStore
    from ponder.scheduler import make_runner
    from ponder.tasks.datasets import load_problems

    cfg = PonderConfig.from_dict({
        "policy": {"kind": "sim"}, "reward": {"kind": "sim"}, "cluster": {"address": "inprocess"},
        "scheduler": {"max_concurrent_searches": 256, "batch_window_ms": 0.5},
    })
    problems = load_problems(f"arith:{n}:seed=11")
    per_query = 4 * 200  # about what best_of_n n=4 spends per problem on the sim
    spec = JobSpec.build(cfg, [strategy], [budget], dataset=f"arith:{n}", job_budget=per_query * n)
    store = MemoryStore()
    queue = LocalQueue(spec.plan(problems), store)
    runner = make_runner(cfg)
    cpu0, t0 = time.process_time(), time.perf_counter()
    asyncio.run(run_job(runner, spec, queue, concurrency=256, poll_s=0.01))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    recs = store.records()
    assert len(recs) == n and all(r["stop_reason"] != "error" for r in recs)
    return {"problems": n, "strategy": strategy, "budget": budget, "cpu_s": cpu, "wall_s": wall,
            "cpu_ms_per_problem": 1000 * cpu / n, "accuracy": sum(bool(r["correct"]) for r in recs) / n}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    ap.add_argument("--strategy", default="best_of_n")
    ap.add_argument("--budget", default="n=4")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(one(args.sizes[0], args.strategy, args.budget)))
        return
    rows = []
    for n in args.sizes:
        out = subprocess.run([sys.executable, "-m", "bench.job_cpu", "--child", "--sizes", str(n),
                              "--strategy", args.strategy, "--budget", args.budget],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{n:>7} problems: {r['cpu_s']:8.1f} s CPU, {r['cpu_ms_per_problem']:.2f} ms/problem, "
              f"wall {r['wall_s']:.1f} s, accuracy {100 * r['accuracy']:.1f}%", flush=True)
    ratio = max(r["cpu_ms_per_problem"] for r in rows) / min(r["cpu_ms_per_problem"] for r in rows)
    print(f"largest / smallest CPU per problem: {ratio:.2f}x")
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps({"rows": rows, "max_over_min": ratio}, indent=1) + "\n")


if __name__ == "__main__":
    main()

"""`auto` against uniform weighted best-of-N@64: tokens to reach best-of-64's accuracy.

Best-of-N@64 (PRM-weighted vote, `last` step rewards) runs on every problem; its accuracy is the
bar and its mean tokens per problem the reference cost. `auto` then runs under job budgets that
are fractions of that cost (shared through the ledger, so easy problems give tokens to hard
ones); the answer is the cheapest fraction whose accuracy reaches the bar, as tokens actually
spent over best-of-64's. Runs on the shipped tiny HF models (`--engine hf`, the default) or on
the sim engines (`--engine sim`, quick and CPU-cheap).
"""

from __future__ import annotations

import asyncio
import atexit
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ponder.actors.factory import build_policy, build_reward
from ponder.config import PonderConfig
from ponder.scheduler.runner import Runner
from ponder.search.types import Problem, SearchResult
from ponder.tasks.datasets import load_problems

FRACTIONS = (1 / 16, 1 / 8, 1 / 4, 1 / 2, 1.0)


def make_runner(engine: str, concurrency: int) -> Runner:
    if engine == "hf":
        import torch

        torch.set_num_threads(1)  # the machine is shared
        cfg = PonderConfig()
        # Load from a snapshot: the engines memory-map the weights, and retraining that rewrites
        # the shipped files mid-run would crash the run (SIGBUS) or mix two models.
        snap = Path(tempfile.mkdtemp(prefix="ponder-bench-models-"))
        atexit.register(shutil.rmtree, snap, True)
        for ec in (cfg.policy, cfg.reward):
            ec.path = str(shutil.copytree(ec.path, snap / Path(ec.path).name))
    else:
        cfg = PonderConfig.from_dict({"policy": {"kind": "sim"}, "reward": {"kind": "sim"}})
    cfg.cluster.address = None
    cfg.scheduler.max_concurrent_searches = concurrency
    return Runner(build_policy(cfg.policy), build_reward(cfg.reward), cfg)


async def _run(runner: Runner, problems: list[Problem], strategy: str, budget: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    results: list[SearchResult] = [r async for _, r in runner.run(problems, strategy, budget)]
    out = {
        "strategy": strategy,
        "budget": budget,
        "accuracy": round(statistics.mean(bool(r.correct) for r in results), 4),
        "tokens_per_problem": round(statistics.mean(r.compute.cost for r in results), 1),
        "errors": sum(1 for r in results if r.stop_reason == "error"),
        "run_s": round(time.perf_counter() - t0, 1),
    }
    if strategy == "auto":
        bins = [r.meta.get("difficulty") for r in results]
        out["bins"] = {b: bins.count(b) for b in sorted(set(bins), key=str)}
    return out


def compare(problems: int, engine: str = "hf", dataset: str | None = None, n: int = 64,
            fractions: tuple[float, ...] = FRACTIONS, concurrency: int = 16, log: Any = print) -> dict[str, Any]:
    ps = load_problems(dataset or f"arith:{problems}:seed=7")[:problems]
    runner = make_runner(engine, concurrency)
    uniform = asyncio.run(_run(runner, ps, "best_of_n", f"n={n}"))
    log(f"  best-of-{n}: accuracy {uniform['accuracy']:.3f}, {uniform['tokens_per_problem']:.0f} tokens/problem "
        f"({uniform['run_s']:.0f} s)")
    autos = []
    for f in fractions:
        budget = str(max(1, int(uniform["tokens_per_problem"] * f)))
        autos.append({"fraction": f, **asyncio.run(_run(runner, ps, "auto", budget))})
        a = autos[-1]
        log(f"  auto @ {f:.3f} x: accuracy {a['accuracy']:.3f}, {a['tokens_per_problem']:.0f} tokens/problem "
            f"({a['run_s']:.0f} s)")
    # A bar of 0 (best-of-64 solved nothing, e.g. untrained models) is reached by anything: no ratio.
    reached = [a for a in autos if a["accuracy"] >= uniform["accuracy"]] if uniform["accuracy"] > 0 else []
    best = min(reached, key=lambda a: a["tokens_per_problem"]) if reached else None
    return {
        "engine": engine,
        "problems": len(ps),
        "dataset": dataset or f"arith:{problems}:seed=7",
        "uniform": uniform,
        "auto": autos,
        "auto_reaching_bar": best,
        "token_ratio": round(best["tokens_per_problem"] / uniform["tokens_per_problem"], 4) if best else None,
    }

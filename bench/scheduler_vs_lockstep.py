"""Ponder's scheduler against a lockstep loop, on simulated GPU pools; and scheduler CPU cost.

Workload: arithmetic problems (`arith:N`), beam search N=16 (beam width 4), on 8 policy and 4 PRM
simulated replicas (`ponder.actors.sim` engines with the H100 latency calibration below), in one
process on a virtual clock (`bench.clock`, `bench.simpool`). Both modes run the same search code
with the same seeds, so they give the same answers; only the order and grouping of engine calls
differ. The lockstep loop is swept over its batch size and its best time is compared.

Calibration (assumptions for vLLM on one H100 in bf16, not measurements; the arithmetic sim
writes steps of ~8 tokens, where real MATH steps are ~50-100, so decode steps weigh less here):
- policy, 1.5B (Qwen2.5-Math-1.5B class): 15 ms per engine call (scheduling, prefix-cache
  lookup, detokenisation), 0.3 ms per request (prefill of the new step with prefix caching),
  4 ms per decode step (the batch's longest output; a 1.5B decode step is memory-bound at low
  batch), 20 us per generated token (compute at large batch, ~50k tokens/s);
- PRM, 7B (Qwen2.5-Math-PRM-7B class), prefill only: 10 ms per call, 0.2 ms per request, 40 us
  per prefilled token (~14 GFLOP a token at ~350 TFLOP/s effective), with a prefix cache of 100k
  prefixes per replica (only a node's new step is prefilled when its parent is cached there);
- both: at most 256 sequences a batch (vLLM's `max_num_seqs`); the rest waits for the next batch.
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import time
from dataclasses import dataclass
from typing import Any

from bench.clock import run as run_loop
from bench.lockstep import run_lockstep
from bench.simpool import sim_pools
from ponder.config import PonderConfig
from ponder.scheduler.runner import Runner
from ponder.search.types import Problem, SearchResult
from ponder.tasks.datasets import load_problems

POLICY_H100 = {"call_overhead_s": 0.015, "per_request_s": 0.0003, "per_step_s": 0.004, "per_token_s": 0.00002,
               "max_batch_seqs": 256}
PRM_H100 = {"call_overhead_s": 0.010, "per_request_s": 0.0002, "per_token_s": 0.00004, "prefix_cache": 100_000,
            "max_batch_seqs": 256}
STRATEGY, BUDGET = "beam_search", "n=16"


@dataclass
class Setup:
    problems: int = 500
    policy_replicas: int = 8
    reward_replicas: int = 4
    # Calls in flight per replica. vLLM merges concurrent requests into its running batch, as the
    # sim device does, so a replica should take many; a cap of 4 makes later calls queue outside
    # the engine and miss the next batch (~20% slower here).
    max_inflight_per_replica: int = 64
    max_batch: int = 64  # the scheduler's batcher: requests per pool call (SchedulerConfig's default)
    time_scale: float = 1.0  # latencies x this (real clock only: keeps a run short)
    virtual: bool = True


def config(concurrency: int, max_batch: int = 64) -> PonderConfig:
    cfg = PonderConfig.from_dict({"policy": {"kind": "sim"}, "reward": {"kind": "sim"}, "cluster": {"address": None}})
    cfg.search.strategy, cfg.search.budget = STRATEGY, BUDGET
    cfg.scheduler.max_concurrent_searches = concurrency
    cfg.scheduler.max_batch = max_batch
    return cfg


def scaled(opts: dict[str, float], k: float) -> dict[str, float]:
    return {key: v * k if key.endswith("_s") else v for key, v in opts.items()}


def summary(mode: str, results: list[SearchResult], wall: float, pools: tuple[Any, Any], setup: Setup,
            **extra: Any) -> dict[str, Any]:
    policy, reward = pools
    sim_wall = wall / setup.time_scale
    expansions = sum(r.compute.generations for r in results)
    pb, pr = policy.device_batches(), reward.device_batches()
    return {
        "mode": mode,
        **extra,
        "wall_s": round(sim_wall, 3),
        "policy_busy": round(policy.device_busy_s() / (len(policy.engines) * wall), 4),
        "reward_busy": round(reward.device_busy_s() / (len(reward.engines) * wall), 4),
        "expansions": expansions,
        "expansions_per_s": round(expansions / sim_wall, 1),
        "scored": sum(r.compute.score_calls for r in results),
        "policy_batches": pb[0],
        "policy_mean_batch": round(pb[1] / max(1, pb[0]), 1),
        "reward_batches": pr[0],
        "reward_mean_batch": round(pr[1] / max(1, pr[0]), 1),
        "accuracy": round(statistics.mean(bool(r.correct) for r in results), 4),
        "answers": [r.answer for r in results],
    }


async def _pools(setup: Setup) -> tuple[Any, Any]:
    return await sim_pools(scaled(POLICY_H100, setup.time_scale), scaled(PRM_H100, setup.time_scale),
                           setup.policy_replicas, setup.reward_replicas, setup.max_inflight_per_replica)


async def scheduler_run(problems: list[Problem], setup: Setup, concurrency: int) -> dict[str, Any]:
    pools = await _pools(setup)
    runner = Runner(*pools, config(concurrency, setup.max_batch))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    # Snapshots when 10% and 90% of the searches have finished: busy fractions in between are the
    # steady state, without the ramp-up and the tail of the job.
    marks = {max(1, len(problems) // 10): None, max(1, len(problems) * 9 // 10): None}
    by_id = {}
    async for p, r in runner.run(problems):
        by_id[p.id] = r
        if len(by_id) in marks:
            marks[len(by_id)] = (loop.time(), pools[0].device_busy_s(), pools[1].device_busy_s())
    wall = loop.time() - t0
    results = [by_id[p.id] for p in problems]
    (ta, pa, ra), (tb, pb, rb) = marks.values()
    steady = {}
    if tb > ta:
        steady = {"steady_policy_busy": round((pb - pa) / (len(pools[0].engines) * (tb - ta)), 4),
                  "steady_reward_busy": round((rb - ra) / (len(pools[1].engines) * (tb - ta)), 4)}
    return summary("scheduler", results, wall, pools, setup, concurrency=concurrency, **steady)


async def lockstep_run(problems: list[Problem], setup: Setup, batch_size: int) -> dict[str, Any]:
    pools = await _pools(setup)
    runner = Runner(*pools, config(batch_size))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    results, phases = await run_lockstep(runner, problems, batch_size, STRATEGY, BUDGET)
    wall = loop.time() - t0
    return summary("lockstep", results, wall, pools, setup, batch_size=batch_size, phases=phases)


def compare(setup: Setup, batch_sizes: list[int], concurrencies: list[int], load: int = 0, log: Any = print
            ) -> dict[str, Any]:
    """The lockstep sweep, the scheduler sweep, and (with `load` > 0) the scheduler alone on `load`
    problems all in flight, for the pools' busy fractions under a saturating load."""
    problems = load_problems(f"arith:{setup.problems}")
    lockstep = []
    for b in batch_sizes:
        t = time.perf_counter()
        lockstep.append(run_loop(lockstep_run(problems, setup, b), setup.virtual))
        log(f"  lockstep batch {b:4d}: {lockstep[-1]['wall_s']:8.2f} s  ({time.perf_counter() - t:.0f} s to run)")
    sched = []
    for c in concurrencies:
        t = time.perf_counter()
        sched.append(run_loop(scheduler_run(problems, setup, c), setup.virtual))
        log(f"  scheduler concurrency {c:4d}: {sched[-1]['wall_s']:8.2f} s  ({time.perf_counter() - t:.0f} s to run)")
    under_load = None
    if load:
        t = time.perf_counter()
        heavy = load_problems(f"arith:{load}:seed=1")
        under_load = run_loop(scheduler_run(heavy, setup, load), setup.virtual)
        log(f"  scheduler under load ({load} searches): policy busy {under_load['steady_policy_busy']:.1%}, "
            f"PRM busy {under_load['steady_reward_busy']:.1%} (steady state)  ({time.perf_counter() - t:.0f} s to run)")
        # The same replicas split in proportion to the demand the run just measured.
        total = setup.policy_replicas + setup.reward_replicas
        demand_p = under_load["steady_policy_busy"] * setup.policy_replicas
        demand_r = under_load["steady_reward_busy"] * setup.reward_replicas
        p = min(total - 1, max(1, round(total * demand_p / (demand_p + demand_r))))
        split = dataclasses.replace(setup, policy_replicas=p, reward_replicas=total - p)
        t = time.perf_counter()
        same = p == setup.policy_replicas
        balanced = dict(under_load) if same else run_loop(scheduler_run(heavy, split, load), setup.virtual)
        balanced.update(policy_replicas=p, reward_replicas=total - p)
        log(f"  ... with {p} policy / {total - p} PRM replicas: policy busy {balanced['steady_policy_busy']:.1%}, "
            f"PRM busy {balanced['steady_reward_busy']:.1%}  ({time.perf_counter() - t:.0f} s to run)")
        for r in (under_load, balanced):
            r.pop("answers", None)
        under_load["balanced_split"] = balanced
    best_l = min(lockstep, key=lambda r: r["wall_s"])
    best_s = min(sched, key=lambda r: r["wall_s"])
    same = all(best_s["answers"] == r["answers"] for r in lockstep + sched)
    for r in lockstep + sched:
        r.pop("answers")
    return {
        "setup": {**setup.__dict__, "strategy": STRATEGY, "budget": BUDGET, "policy_latency": POLICY_H100,
                  "reward_latency": PRM_H100, "clock": "virtual" if setup.virtual else "real"},
        "lockstep_sweep": lockstep,
        "scheduler_sweep": sched,
        "best_lockstep": best_l,
        "scheduler": best_s,
        "speedup": round(best_l["wall_s"] / best_s["wall_s"], 3),
        "under_load": under_load,
        "same_answers": same,
    }


# ----- scheduler CPU per expansion, instant engines -----------------------------------------------


class _Timed:
    """Wraps an instant engine and adds up the CPU seconds spent inside it."""

    def __init__(self, engine: Any):
        self.engine = engine
        self.cpu_s = 0.0
        self.device = engine.device
        self.info = engine.info

    async def _timed(self, call: Any) -> Any:
        t = time.process_time()
        try:
            return await call
        finally:
            self.cpu_s += time.process_time() - t

    async def generate(self, requests: list[Any]) -> list[Any]:
        return await self._timed(self.engine.generate(requests))

    async def score(self, requests: list[Any]) -> list[Any]:
        return await self._timed(self.engine.score(requests))


async def _cpu_run(problems: list[Problem], setup: Setup, concurrency: int) -> dict[str, Any]:
    policy, reward = await sim_pools({}, {}, setup.policy_replicas, setup.reward_replicas,
                                     setup.max_inflight_per_replica, wrap=_Timed)
    runner = Runner(policy, reward, config(concurrency, setup.max_batch))
    w0, c0 = time.perf_counter(), time.process_time()
    results = [r async for _, r in runner.run(problems)]
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    engine_cpu = sum(e.cpu_s for e in policy.engines + reward.engines)
    expansions = sum(r.compute.generations for r in results)
    sched_cpu = cpu - engine_cpu
    return {
        "problems": len(problems),
        "concurrency": concurrency,
        "expansions": expansions,
        "scored": sum(r.compute.score_calls for r in results),
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "engine_cpu_s": round(engine_cpu, 3),
        "scheduler_cpu_s": round(sched_cpu, 3),
        "scheduler_cpu_us_per_expansion": round(1e6 * sched_cpu / expansions, 2),
        "expansions_per_scheduler_cpu_s": round(expansions / sched_cpu, 1),
        "expansions_per_wall_s": round(expansions / wall, 1),
    }


def scheduler_cpu(setup: Setup, problems: int, concurrency: int = 256, repeats: int = 3) -> dict[str, Any]:
    """Best of `repeats` (the machine is shared): CPU per expansion of the in-process runner
    (batching, contexts, pool routing, search code) with zero-latency sim engines; the engines'
    own CPU is subtracted."""
    ps = load_problems(f"arith:{problems}")
    runs = [run_loop(_cpu_run(ps, setup, concurrency), virtual=False) for _ in range(repeats)]
    return min(runs, key=lambda r: r["scheduler_cpu_us_per_expansion"])

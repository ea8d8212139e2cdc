"""Ponder's scheduler against lockstep baselines, on simulated GPU pools; and scheduler CPU cost.

Workload: arithmetic problems (`arith:N`), beam search N=16 (beam width 4), on 8 policy and 4 PRM
simulated replicas (`ponder.actors.sim` engines), in one process on a virtual clock
(`bench.clock`, `bench.simpool`). Every mode runs the same search code with the same seeds, so
they give the same answers (checked); only the order and grouping of engine calls differ.

Modes (see `bench/lockstep.py`):
- *ponder*: the in-process `Runner` over `ReplicaPool`s, F searches in flight;
- *lockstep*: one lockstep loop, batch b (b searches in flight), swept over b;
- *k loops*: k lockstep loops side by side over the same pools, each of batch F/k;
- *search-and-learn*: its beam search, one problem at a time per GPU with the policy and the
  PRM co-located on each of the 12 GPUs (the PRM without a prefix cache);
- the *lower bound* from the run's own work (`lower_bound`): the larger of each pool's total
  work at ideal batching divided by its replicas, and the slowest search run alone.

Two device models (`DEVICES`), both assumptions for vLLM on one H100 in bf16, not measurements
(the arithmetic sim writes steps of ~8 tokens, where real MATH steps are ~50-100):
- *static*: a batch runs until its longest output ends; calls that arrive meanwhile wait for the
  next batch; the per-call overhead is device time. Policy 1.5B (Qwen2.5-Math-1.5B class): 15 ms
  a call, 0.3 ms a request (prefill of the new step, prefix cached), 4 ms a decode step (the
  batch's longest output), 20 us a generated token. PRM 7B (Qwen2.5-Math-PRM-7B class): 10 ms a
  call, 0.2 ms a request, 40 us a prefilled token, 100k cached prefixes a replica.
- *vllm*: continuous batching (a request joins at the next decode step and each sequence leaves
  when it is done), the per-call overhead (15 / 10 ms) on the host, not the device, and a prefix
  cache on the policy too (100k prefixes a replica; a cached prefix costs no prefill). Policy:
  a step costs 4 ms + 20 us per running sequence + 10 us per prefilled prompt token (a 1.5B
  prefill, ~3 GFLOP a token) + 0.1 ms per admitted request. PRM: a step costs 5 ms (reading 7B of
  weights) + 40 us per prefilled token + 0.2 ms per request, up to 8192 tokens a step.
- both: at most 256 sequences at once (vLLM's `max_num_seqs`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from bench.clock import run as run_loop
from bench.lockstep import run_kloops, run_lockstep, run_search_and_learn
from bench.simpool import sim_pools
from ponder.actors.sim import SimPolicy, SimReward, count_tokens, share_gpu
from ponder.config import PonderConfig
from ponder.scheduler.runner import Runner
from ponder.search.types import Problem, SearchResult
from ponder.tasks.datasets import load_problems

POLICY_H100 = {"call_overhead_s": 0.015, "per_request_s": 0.0003, "per_step_s": 0.004, "per_token_s": 0.00002,
               "max_batch_seqs": 256}
PRM_H100 = {"call_overhead_s": 0.010, "per_request_s": 0.0002, "per_token_s": 0.00004, "prefix_cache": 100_000,
            "max_batch_seqs": 256}
POLICY_VLLM = {"device": "continuous", "call_overhead_s": 0.015, "per_request_s": 0.0001, "per_step_s": 0.004,
               "per_token_s": 0.00002, "per_prefill_token_s": 0.00001, "prefix_cache": 100_000,
               "max_batch_seqs": 256}
PRM_VLLM = {"device": "continuous", "call_overhead_s": 0.010, "per_request_s": 0.0002, "per_step_s": 0.005,
            "per_token_s": 0.00004, "prefix_cache": 100_000, "max_batch_seqs": 256, "max_step_tokens": 8192}
DEVICES = {"static": (POLICY_H100, PRM_H100), "vllm": (POLICY_VLLM, PRM_VLLM)}
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
    device: str = "static"  # a key of DEVICES
    pool_opts: dict[str, Any] = field(default_factory=dict)  # ReplicaPool options (affinity) for ponder's pools
    policy_max_batch: int = 0  # scheduler.policy_max_batch: requests per policy call (0: max_batch)
    admit_order: str = ""  # a key of ADMIT_ORDERS: the order searches are admitted in ("": the job's)
    job_order: str = ""  # a key of JOB_ORDERS: the batchers' order among job work ("": arrival)
    time_scale: float = 1.0  # latencies x this (real clock only: keeps a run short)
    virtual: bool = True

    def latency(self) -> tuple[dict[str, Any], dict[str, Any]]:
        pol, prm = DEVICES[self.device]
        return scaled(pol, self.time_scale), scaled(prm, self.time_scale)


def _ops(problem: str) -> int:
    from ponder.tasks.arith.problems import parse

    return len(parse(problem).ops)


# Orders among job work in the batchers (`Batcher.job_order`), lower first. "long_prompt": the
# longest problem statement first (a longer arithmetic chain needs more steps; on MATH this is
# only a weak hint). "oracle": the most steps left first, from the chain's true length (not
# available to a real scheduler: an upper bound on what ordering can do).
JOB_ORDERS = {
    "long_prompt": lambda r: -len(r.problem),
    "oracle": lambda r: len(r.steps) - _ops(r.problem),
    "deepest": lambda r: -len(r.steps),
}


# Admission orders (the order ponder's runner is given the problems; results are by id).
# "long_prompt": the longest problem statement first, so the longest searches do not start last.
ADMIT_ORDERS = {
    "long_prompt": lambda p: -len(p.problem),
    "oracle": lambda p: -_ops(p.problem),
}


def config(concurrency: int, max_batch: int = 64) -> PonderConfig:
    cfg = PonderConfig.from_dict({"policy": {"kind": "sim"}, "reward": {"kind": "sim"}, "cluster": {"address": None}})
    cfg.search.strategy, cfg.search.budget = STRATEGY, BUDGET
    cfg.scheduler.max_concurrent_searches = concurrency
    cfg.scheduler.max_batch = max_batch
    return cfg


def scaled(opts: dict[str, Any], k: float) -> dict[str, Any]:
    return {key: v * k if key.endswith("_s") else v for key, v in opts.items()}


def _devices(engines: list[Any], wall: float) -> dict[str, Any]:
    batches = sum(e.device.batches for e in engines)
    now = asyncio.get_running_loop().time()
    return {
        "busy": round(sum(e.device.busy_seconds(now) for e in engines) / (len(engines) * wall), 4),
        "batches": batches,  # batches (static) or steps (continuous)
        "mean_requests": round(sum(e.device.requests for e in engines) / max(1, batches), 1),
        "mean_seqs": round(sum(e.device.seqs for e in engines) / max(1, batches), 1),
        "prefill_tokens": sum(e.device.prefill_tokens for e in engines),
    }


def summary(mode: str, results: list[SearchResult], wall: float, engines: tuple[list[Any], list[Any]],
            setup: Setup, **extra: Any) -> dict[str, Any]:
    sim_wall = wall / setup.time_scale
    expansions = sum(r.compute.generations for r in results)
    pd, rd = _devices(engines[0], wall), _devices(engines[1], wall)
    return {
        "mode": mode,
        **extra,
        "wall_s": round(sim_wall, 3),
        "policy_busy": pd["busy"],
        "reward_busy": rd["busy"],
        "expansions": expansions,
        "expansions_per_s": round(expansions / sim_wall, 1),
        "scored": sum(r.compute.score_calls for r in results),
        "policy_batches": pd["batches"],
        "policy_mean_batch": pd["mean_requests"],
        "policy_mean_seqs": pd["mean_seqs"],
        "policy_prefill_tokens": pd["prefill_tokens"],
        "reward_batches": rd["batches"],
        "reward_mean_batch": rd["mean_requests"],
        "reward_prefill_tokens": rd["prefill_tokens"],
        "engine_cached_tokens": sum(r.compute.engine_cached_tokens for r in results),
        "accuracy": round(statistics.mean(bool(r.correct) for r in results), 4),
        "answers": [r.answer for r in results],
        "_expansions": [r.compute.generations for r in results],
    }


class _Traced:
    """Wraps a sim engine and records the work it is given: per policy request its samples'
    output lengths, per PRM request its problem and steps (for `lower_bound`)."""

    def __init__(self, engine: Any, trace: dict[str, list]):
        self.engine, self.trace = engine, trace
        self.device = engine.device
        self.info = engine.info

    async def generate(self, requests: list[Any]) -> list[Any]:
        out = await self.engine.generate(requests)
        for req, samples in zip(requests, out):
            self.trace["policy"].append((req.problem, [sum(st.tokens for st in c) for c in samples]))
        return out

    async def score(self, requests: list[Any]) -> list[Any]:
        out = await self.engine.score(requests)
        self.trace["reward"] += [(req.problem, tuple(req.steps)) for req in requests]
        return out


async def _pools(setup: Setup, trace: dict[str, list] | None = None, pool_opts: dict[str, Any] | None = None
                 ) -> tuple[Any, Any]:
    wrap = (lambda e: _Traced(e, trace)) if trace is not None else (lambda e: e)
    pol, prm = setup.latency()
    return await sim_pools(pol, prm, setup.policy_replicas, setup.reward_replicas, setup.max_inflight_per_replica,
                           wrap=wrap, pool_opts=pool_opts)


def _engines(pools: tuple[Any, Any]) -> tuple[list[Any], list[Any]]:
    return pools[0].engines, pools[1].engines


async def scheduler_run(problems: list[Problem], setup: Setup, concurrency: int,
                        trace: dict[str, list] | None = None) -> dict[str, Any]:
    pools = await _pools(setup, trace, setup.pool_opts)
    cfg = config(concurrency, setup.max_batch)
    cfg.scheduler.policy_max_batch = setup.policy_max_batch or None  # the config knob, as a user sets it
    runner = Runner(*pools, cfg)
    if setup.job_order:
        runner.policy.batcher.job_order = runner.reward.batcher.job_order = JOB_ORDERS[setup.job_order]
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    # Snapshots when 10%, 50% and 90% of the searches have finished: busy fractions between the
    # 10% and 90% marks are the steady state, without the ramp-up and the tail of the job.
    keys = [max(1, len(problems) * k // 10) for k in (1, 5, 9)]
    marks: dict[int, Any] = {k: None for k in keys}
    by_id = {}
    order = sorted(problems, key=ADMIT_ORDERS[setup.admit_order]) if setup.admit_order else problems
    async for p, r in runner.run(order):
        by_id[p.id] = r
        if len(by_id) in marks and marks[len(by_id)] is None:
            marks[len(by_id)] = (loop.time(), pools[0].device_busy_s(), pools[1].device_busy_s(),
                                 pools[0].device_batches(), pools[0].device_seqs())
    wall = loop.time() - t0
    results = [by_id[p.id] for p in problems]
    (ta, pa, ra, _, _), (_, _, _, bm, sm), (tb, pb, rb, bb, sb) = (marks[k] for k in keys)
    extra: dict[str, Any] = {}
    if tb > ta:
        extra = {"steady_policy_busy": round((pb - pa) / (len(pools[0].engines) * (tb - ta)), 4),
                 "steady_reward_busy": round((rb - ra) / (len(pools[1].engines) * (tb - ta)), 4),
                 "finish_marks_s": [round(m[0] - t0, 3) for m in (marks[k] for k in keys)],
                 "busy_by_phase": _phases(marks, keys, t0, loop.time(), pools),
                 "policy_mean_seqs_50_90": round((sb - sm) / max(1, bb[0] - bm[0]), 1)}
    routing = {role: {k: pool.counts[k] for k in ("affinity_hits", "affinity_misses")}
               for role, pool in zip(("policy", "reward"), pools)}
    return summary("ponder", results, wall, _engines(pools), setup, searches_in_flight=concurrency,
                   routing=routing, **extra)


def _phases(marks: dict[int, Any], keys: list[int], t0: float, t1: float, pools: tuple[Any, Any]) -> dict[str, Any]:
    """Pool busy fractions between the finish marks: start-10%, 10-50%, 50-90%, 90%-end."""
    pts = [(t0, 0.0, 0.0)] + [marks[k][:3] for k in keys] + [(t1, pools[0].device_busy_s(), pools[1].device_busy_s())]
    out = {}
    for (ta, pa, ra), (tb, pb, rb), name in zip(pts, pts[1:], ("0-10", "10-50", "50-90", "90-100")):
        dt = max(tb - ta, 1e-9)
        out[name] = {"s": round(tb - ta, 3), "policy": round((pb - pa) / (len(pools[0].engines) * dt), 3),
                     "reward": round((rb - ra) / (len(pools[1].engines) * dt), 3)}
    return out


async def lockstep_run(problems: list[Problem], setup: Setup, batch_size: int, k: int = 1, order: str = ""
                       ) -> dict[str, Any]:
    """One lockstep loop (k = 1) or k loops side by side; `order` (a key of ADMIT_ORDERS) sorts
    the problems first, so a batch holds problems of about the same length."""
    pools = await _pools(setup)
    loop = asyncio.get_running_loop()
    todo = sorted(problems, key=ADMIT_ORDERS[order]) if order else problems
    t0 = loop.time()
    if k == 1:
        results, phases = await run_lockstep(Runner(*pools, config(batch_size)), todo, batch_size, STRATEGY, BUDGET)
    else:
        results, phases = await run_kloops(lambda: Runner(*pools, config(batch_size)), todo, k, batch_size,
                                           STRATEGY, BUDGET)
    wall = loop.time() - t0
    by_id = {p.id: r for p, r in zip(todo, results)}
    results = [by_id[p.id] for p in problems]
    mode = "lockstep" if k == 1 else "kloops"
    return summary(mode, results, wall, _engines(pools), setup, loops=k, batch_size=batch_size,
                   searches_in_flight=k * batch_size, phases=phases, order=order or "as given")


async def search_and_learn_run(problems: list[Problem], setup: Setup) -> dict[str, Any]:
    """search-and-learn's beam search on the same 12 GPUs: each runs a policy and a PRM (no
    prefix cache) co-located, one problem at a time."""
    pol, prm = setup.latency()
    prm = {**prm, "prefix_cache": 0}
    gpus = setup.policy_replicas + setup.reward_replicas
    engines = [(SimPolicy(**pol), SimReward(**prm)) for _ in range(gpus)]
    for pair in engines:
        share_gpu(*pair)
    runners = [Runner(p, r, config(1)) for p, r in engines]
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    results, phases = await run_search_and_learn(runners, problems, STRATEGY, BUDGET)
    wall = loop.time() - t0
    out = summary("search_and_learn", results, wall, ([p for p, _ in engines], [r for _, r in engines]), setup,
                  gpus=gpus, searches_in_flight=gpus, phases=phases)
    out["gpu_busy"] = round(out["policy_busy"] + out["reward_busy"], 4)  # both roles share each GPU
    return out


async def alone_run(problem: Problem, setup: Setup) -> float:
    """One search alone on fresh, idle pools: its critical path."""
    pools = await _pools(setup)
    runner = Runner(*pools, config(1, setup.max_batch))
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async for _ in runner.run([problem]):
        pass
    return loop.time() - t0


def _sorted_chunk_max(lengths: list[int], size: int) -> int:
    """The least sum of batch maxima over any split of `lengths` into batches of <= `size`."""
    ordered = sorted(lengths, reverse=True)
    return sum(ordered[::size]) if size else (ordered[0] if ordered else 0)


def lower_bound(trace: dict[str, list], setup: Setup, critical_path_s: float) -> dict[str, Any]:
    """A lower bound on the job's wall time from its own work (the requests one run made; every
    mode makes the same ones): each pool's total work at ideal batching (every batch full, a
    perfect prefix cache: every tree on one replica, each prefix computed once), divided by its
    replicas, and the slowest search alone. The bound is the largest of the three."""
    pol, prm = setup.latency()
    get = lambda d, k: d.get(k, 0.0)
    lengths = [n for _, ls in trace["policy"] for n in ls]
    p_requests, p_tokens = len(trace["policy"]), sum(lengths)
    p_prefill = sum(count_tokens(q) for q in {q for q, _ in trace["policy"]})  # each problem once; steps are generated
    seqs = pol.get("max_batch_seqs") or len(lengths)
    # PRM: every distinct prefix is prefilled once (its last step; the problem once a tree).
    nodes = {(q, steps[:k]) for q, steps in trace["reward"] for k in range(1, len(steps) + 1)}
    r_prefill = sum(count_tokens(q) for q in {q for q, _ in trace["reward"]}) + sum(count_tokens(st[-1]) for _, st in nodes)
    r_requests = len(trace["reward"])
    rseqs = prm.get("max_batch_seqs") or r_requests
    if pol.get("device", "static") == "continuous":
        steps = math.ceil(p_tokens / seqs)  # every step decodes max_num_seqs sequences
        policy = (get(pol, "per_step_s") * steps + get(pol, "per_token_s") * p_tokens
                  + get(pol, "per_prefill_token_s") * p_prefill + get(pol, "per_request_s") * p_requests)
    else:
        batches = math.ceil(len(lengths) / seqs)
        policy = (get(pol, "call_overhead_s") * batches + get(pol, "per_request_s") * p_requests
                  + get(pol, "per_token_s") * p_tokens + get(pol, "per_step_s") * _sorted_chunk_max(lengths, seqs)
                  + get(pol, "per_prefill_token_s") * p_prefill)
    if prm.get("device", "static") == "continuous":
        steps = max(math.ceil(r_requests / rseqs), math.ceil(r_prefill / prm.get("max_step_tokens", 8192)))
        reward = get(prm, "per_step_s") * steps + get(prm, "per_token_s") * r_prefill + get(prm, "per_request_s") * r_requests
    else:
        reward = (get(prm, "call_overhead_s") * math.ceil(r_requests / rseqs) + get(prm, "per_request_s") * r_requests
                  + get(prm, "per_token_s") * r_prefill)
    policy /= setup.policy_replicas
    reward /= setup.reward_replicas
    parts = {"policy_pool_s": round(policy, 3), "reward_pool_s": round(reward, 3),
             "critical_path_s": round(critical_path_s, 3)}
    return {"bound_s": max(parts.values()), **parts, "policy_requests": p_requests, "policy_tokens": p_tokens,
            "policy_ideal_prefill": p_prefill, "reward_requests": r_requests, "reward_ideal_prefill": r_prefill}


def _run(coro: Any, setup: Setup, log: Any, label: str) -> Any:
    t = time.perf_counter()
    out = run_loop(coro, setup.virtual)
    if isinstance(out, dict) and "wall_s" in out:
        log(f"  [{setup.device}] {label:34s} {out['wall_s']:8.3f} s  ({time.perf_counter() - t:.0f} s to run)")
    return out


# ponder's configurations: the defaults, and with the longest-first hint (admission and the
# batchers' order among job work both by problem length).
# "ponder_lpt_pmb8": the same with `scheduler.policy_max_batch` 8 (policy calls of 8 requests).
PONDER = {"ponder": {}, "ponder_lpt": {"admit_order": "long_prompt", "job_order": "long_prompt"},
          "ponder_lpt_pmb8": {"admit_order": "long_prompt", "job_order": "long_prompt", "policy_max_batch": 8}}
# Variants at the largest number in flight, to show what each lever does.
VARIANTS = {
    "ponder_old_affinity": {"pool_opts": {"affinity_load_factor": 0.0}},  # slack 64 alone (before)
    "ponder_lpt_slack1024": {"admit_order": "long_prompt", "job_order": "long_prompt",
                             "pool_opts": {"affinity_slack": 1024}},
    "ponder_oracle": {"admit_order": "oracle", "job_order": "oracle"},
}


def compare_device(setup: Setup, problems: list[Problem], lockstep_batches: list[int], in_flight: list[int],
                   loops: list[int], critical: int = 5, search_and_learn: bool = True, variants: bool = True,
                   log: Any = print) -> dict[str, Any]:
    """Every mode on one device model, the lower bound, and the ratios."""
    trace: dict[str, list] = {"policy": [], "reward": []}
    top = max(in_flight)
    ponder: dict[str, list[dict[str, Any]]] = {}
    for name, opts in PONDER.items():
        s = dataclasses.replace(setup, **opts)
        ponder[name] = [_run(scheduler_run(problems, s, c, trace if (c == top and name == "ponder") else None),
                             setup, log, f"{name}, {c} in flight") for c in in_flight]
        for r in ponder[name]:
            r["config"] = name
    extra = []
    for name, opts in (VARIANTS.items() if variants else ()):
        r = _run(scheduler_run(problems, dataclasses.replace(setup, **opts), top), setup, log, f"{name}, {top} in flight")
        r["config"] = name
        extra.append(r)
    baselines = []
    for order in ("", "long_prompt"):
        tag = ", sorted" if order else ""
        for b in (lockstep_batches if not order else [b for b in lockstep_batches if b in in_flight]):
            baselines.append(_run(lockstep_run(problems, setup, b, 1, order), setup, log, f"lockstep, batch {b}{tag}"))
        for f in in_flight:
            for k in loops:
                if k > 1 and f // k >= 1:
                    baselines.append(_run(lockstep_run(problems, setup, f // k, k, order), setup, log,
                                          f"{k} loops x batch {f // k}{tag}"))
    sal = _run(search_and_learn_run(problems, setup), setup, log, "search-and-learn (1 a GPU)") if search_and_learn else None
    # The critical path: the searches with the most expansions, each alone on idle pools.
    plain = ponder["ponder"][-1]
    longest = sorted(zip(plain["_expansions"], problems), key=lambda x: -x[0])[:critical]
    alone = [run_loop(alone_run(p, setup), setup.virtual) for _, p in longest]
    bound = lower_bound(trace, setup, max(alone) / setup.time_scale)
    log(f"  [{setup.device}] lower bound {bound['bound_s']:.3f} s (policy {bound['policy_pool_s']:.3f}, "
        f"PRM {bound['reward_pool_s']:.3f}, slowest search {bound['critical_path_s']:.3f})")
    runs = [r for rs in ponder.values() for r in rs] + extra
    every = runs + baselines + ([sal] if sal else [])
    same = all(r["answers"] == plain["answers"] for r in every)
    for r in every:
        r.pop("answers")
        r.pop("_expansions", None)
        r["over_bound"] = round(r["wall_s"] / bound["bound_s"], 3)
    lockstep = [r for r in baselines if r["loops"] == 1]
    by_flight: dict[str, Any] = {}
    for f in in_flight:
        same_f = [x for x in baselines if x["searches_in_flight"] == f]
        best = min(same_f, key=lambda x: x["wall_s"]) if same_f else None
        row: dict[str, Any] = {"best_baseline": None if best is None else
                               {k: best[k] for k in ("mode", "loops", "batch_size", "order", "wall_s")}}
        for name, rs in ponder.items():
            r = next(x for x in rs if x["searches_in_flight"] == f)
            row[name] = {"wall_s": r["wall_s"], "over_bound": r["over_bound"],
                         "speedup_vs_best_baseline": None if best is None else round(best["wall_s"] / r["wall_s"], 3),
                         "speedup_vs_lockstep": next((round(x["wall_s"] / r["wall_s"], 3) for x in lockstep
                                                      if x["batch_size"] == f and x["order"] == "as given"), None)}
        by_flight[str(f)] = row
    best_p = min(runs, key=lambda r: r["wall_s"])
    best_l = min(lockstep, key=lambda r: r["wall_s"])
    best_k = min(baselines, key=lambda r: r["wall_s"])
    return {
        "device": setup.device,
        "policy_latency": DEVICES[setup.device][0],
        "reward_latency": DEVICES[setup.device][1],
        "lower_bound": bound,
        "ponder_sweep": ponder,
        "ponder_variants": extra,
        "baselines": baselines,
        "search_and_learn": sal,
        "best_ponder": best_p,
        "best_lockstep": best_l,
        "best_simple_baseline": best_k,
        "ponder_over_bound": round(best_p["wall_s"] / bound["bound_s"], 3),
        "speedup_vs_best_lockstep": round(best_l["wall_s"] / best_p["wall_s"], 3),
        "speedup_vs_best_simple_baseline": round(best_k["wall_s"] / best_p["wall_s"], 3),
        "speedup_vs_search_and_learn": round(sal["wall_s"] / best_p["wall_s"], 3) if sal else None,
        "at_equal_in_flight": by_flight,
        "same_answers": same,
    }


def compare(setup: Setup, lockstep_batches: list[int], in_flight: list[int], loops: list[int] = (2, 4, 8),
            load: int = 0, devices: tuple[str, ...] = ("static", "vllm"), variants: bool = True, log: Any = print
            ) -> dict[str, Any]:
    """`compare_device` on each device model, and (with `load` > 0, static device) the scheduler
    alone on `load` problems all in flight, for the pools' busy fractions under a saturating load."""
    problems = load_problems(f"arith:{setup.problems}")
    out: dict[str, Any] = {"setup": {**{k: v for k, v in setup.__dict__.items() if k != "device"},
                                     "strategy": STRATEGY, "budget": BUDGET,
                                     "clock": "virtual" if setup.virtual else "real"}}
    for d in devices:
        out[d] = compare_device(dataclasses.replace(setup, device=d), problems, list(lockstep_batches),
                                list(in_flight), list(loops), variants=variants, log=log)
    out["same_answers"] = all(out[d]["same_answers"] for d in devices)
    if len(devices) > 1:
        out["same_answers"] = out["same_answers"] and len({out[d]["best_ponder"]["accuracy"] for d in devices}) == 1
    out["under_load"] = under_load(setup, load, log) if load else None
    return out


def under_load(setup: Setup, load: int, log: Any = print) -> dict[str, Any]:
    t = time.perf_counter()
    heavy = load_problems(f"arith:{load}:seed=1")
    res = run_loop(scheduler_run(heavy, setup, load), setup.virtual)
    log(f"  scheduler under load ({load} searches): policy busy {res['steady_policy_busy']:.1%}, "
        f"PRM busy {res['steady_reward_busy']:.1%} (steady state)  ({time.perf_counter() - t:.0f} s to run)")
    # The same replicas split in proportion to the demand the run just measured.
    total = setup.policy_replicas + setup.reward_replicas
    demand_p = res["steady_policy_busy"] * setup.policy_replicas
    demand_r = res["steady_reward_busy"] * setup.reward_replicas
    p = min(total - 1, max(1, round(total * demand_p / (demand_p + demand_r))))
    split = dataclasses.replace(setup, policy_replicas=p, reward_replicas=total - p)
    t = time.perf_counter()
    balanced = dict(res) if p == setup.policy_replicas else run_loop(scheduler_run(heavy, split, load), setup.virtual)
    balanced.update(policy_replicas=p, reward_replicas=total - p)
    log(f"  ... with {p} policy / {total - p} PRM replicas: policy busy {balanced['steady_policy_busy']:.1%}, "
        f"PRM busy {balanced['steady_reward_busy']:.1%}  ({time.perf_counter() - t:.0f} s to run)")
    for r in (res, balanced):
        r.pop("answers", None)
        r.pop("_expansions", None)
    res["balanced_split"] = balanced
    res["concurrency"] = load
    return res


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

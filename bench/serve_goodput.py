"""Serving goodput through the real HTTP server: ponder's scheduler against a FIFO baseline.

    .venv/bin/python -m bench.serve_goodput            # full run (~6-8 min); bench/results/serve_goodput.json
    .venv/bin/python -m bench.serve_goodput --quick    # smoke run (~1-2 min); serve_goodput-quick.json

One process starts a local Ray cluster on loopback, Ray Serve on a free loopback port, and the
service (`ponder.api.app.build_app`) over `sim` engines with the calibrated H100 latency model
(`POLICY_H100` / `PRM_H100` from `bench.scheduler_vs_lockstep`): 2 policy and 1 PRM replica
actors, one ingress replica. Every query is `POST /v1/solve` (beam search, n=8, beam width 4) on an
arithmetic problem (`arith:200:seed=5`) with its reference answer, sent by an open-loop client
(httpx): Poisson arrivals at a fixed seed, each request sent at its arrival time whatever the
earlier ones are doing. Latency is client-side, from the request's scheduled arrival time to its
response (so a late client cannot hide queueing).

The two systems share the server, the scheduler actor and the replica pools; only the
admission limits differ, set at run time with `RemoteRunner.set_admission`:
- ponder: max_running 1024 (every query runs at once; the scheduler batches their engine calls
  across searches);
- FIFO: max_running 1, a large waiting room: one query's search at a time, in arrival order
  (its engine calls are batched only within the one search).
They alternate rate by rate (ponder at rate r, FIFO at rate r, then the next rate), so both see
the same machine. The arrival times at a rate are the same for both (same seed), and so are the
problems (request i at every rate is problem i mod 200, with its id, so its seeds are the same).

SLO: a p99 latency target of 5x the unloaded latency, measured at the start as the median of
sequential single queries. A system passes a rate when its p99 <= SLO, every request got an
answer (no 429, no error) and it kept up (answered/s >= 0.75 x the rate its arrivals had: a
point is a bounded burst, so past saturation its p99 alone grows only to about n / capacity).
Its goodput is the highest swept rate that passed; also reported, the stricter top of the run
of passing rates from the bottom of the grid (they differ when the p99 is noisy near the SLO).
The same sweep gives goodput at 3x and 10x too (a system sweeps on until it fails the loosest,
10x, or stops keeping up), since the ratio depends on the SLO. Rates are a geometric grid
(x1.3) from 0.35 / unloaded p50, with about 12 s of arrivals a rate (40 to 300 requests).
Also reported per rate: p50/p90/p99 latency, achieved throughput, the pools' busy fractions
(from the scheduler's stats, deltas over the rate's wall time), mean batch sizes, and the CPU
used by each kind of process (from /proc): the machine has 2 cores, and the client, the HTTP
proxy, the ingress, the scheduler and the replica actors all share them, so where the CPU is
the limit rather than the simulated GPUs shows there. `--resummarize FILE` recomputes the
summary (goodput, ratios) of a results file from its points without measuring.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import random
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

from bench.scheduler_vs_lockstep import POLICY_H100, PRM_H100

RESULTS = Path(__file__).resolve().parent / "results"
STRATEGY, BUDGET = "beam_search", "n=8"
DATASET = "arith:200:seed=5"
NAMESPACE = "ponder-bench-goodput"
BIG = 1024  # admission limits that never bind here
SLO_FACTOR = 5.0  # the SLO: p99 <= 5 x the unloaded p50
OTHER_SLOS = (3.0, 10.0)  # also reported, from the same sweep (it runs until the loosest one fails)
# A point also fails when the answers did not keep up with the arrivals: answered/s below this
# fraction of the offered rate. A point is a bounded burst, so past saturation its p99 is only
# about n / capacity and a loose SLO alone would pass any rate.
SUSTAINED = 0.75
CORES = os.cpu_count() or 1


# ----- processes and their CPU (Linux /proc) -------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _kind(cmdline: str) -> str:
    for key, kind in (("ray::Scheduler", "scheduler"), ("PolicyReplica", "policy replicas"),
                      ("RewardReplica", "PRM replicas"), ("ServeReplica", "ingress"), ("ProxyActor", "http proxy"),
                      ("ServeController", "serve controller"), ("raylet", "ray core"), ("gcs_server", "ray core")):
        if key in cmdline:
            return kind
    return "ray other"


def _cpu_s(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime
    except (OSError, IndexError, ValueError):
        return None


def cluster_cpu() -> dict[int, tuple[str, float]]:
    """pid -> (kind, CPU seconds) for this cluster's processes (the raylet's and GCS's trees) and
    this driver (the load generator and the bench; its Ray threads included)."""
    import ray

    node = ray._private.worker._global_node
    roots = {p.process.pid for procs in node.all_processes.values() for p in procs if p.process is not None}
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parent[int(d)] = int(f.read().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                pass
    ours = set(roots)
    changed = True
    while changed:
        changed = False
        for pid, pp in parent.items():
            if pp in ours and pid not in ours:
                ours.add(pid)
                changed = True
    out: dict[int, tuple[str, float]] = {}
    for pid in ours:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        cpu = _cpu_s(pid)
        if cpu is not None:
            out[pid] = (_kind(cmd), cpu)
    me = _cpu_s(os.getpid())
    if me is not None:
        out[os.getpid()] = ("client (driver)", me)
    return out


def cpu_delta(a: dict[int, tuple[str, float]], b: dict[int, tuple[str, float]], wall: float) -> dict[str, float]:
    """Cores used per kind of process between two snapshots (CPU seconds / wall seconds)."""
    by: dict[str, float] = {}
    for pid, (kind, cpu) in b.items():
        by[kind] = by.get(kind, 0.0) + cpu - (a[pid][1] if pid in a else 0.0)
    out = {k: round(v / wall, 3) for k, v in sorted(by.items(), key=lambda kv: -kv[1])}
    out["total"] = round(sum(by.values()) / wall, 3)
    return out


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine (other users' processes included)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


# ----- the service -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_config(policy_replicas: int, reward_replicas: int) -> Any:
    from ponder.config import PonderConfig

    cfg = PonderConfig.load("configs/sim.yaml", [
        "cluster.address=auto", "cluster.cpus_per_replica=0",
        f"cluster.policy_replicas={policy_replicas}", f"cluster.reward_replicas={reward_replicas}",
        # As in the sched bench: replicas take many calls in flight (vLLM merges them into its batch).
        "cluster.max_inflight_per_replica=64",
        # One ingress replica: a second one would re-apply the config's admission limits when it
        # connects to the scheduler, and 2 cores have no room for it anyway.
        "api.min_replicas=1", "api.max_replicas=1",
        f"api.max_running={BIG}", f"api.max_queued={4 * BIG}",
        f"api.tenant_max_running={BIG}", f"api.tenant_max_queued={4 * BIG}",
        f"jobs.worker={NAMESPACE}-jobs",
    ])
    cfg.policy.options = dict(POLICY_H100)
    cfg.reward.options = dict(PRM_H100)
    cfg.search.strategy, cfg.search.budget = STRATEGY, BUDGET
    return cfg


def start_service(cfg: Any) -> str:
    import ray
    from ray import serve

    from ponder.api.app import build_app

    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, namespace=NAMESPACE, logging_level=logging.ERROR)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(cfg, redis_url=None, tokens={}), name="ponder", route_prefix="/")
    return f"http://127.0.0.1:{port}"


async def wait_healthy(client: Any, timeout_s: float = 300.0) -> dict[str, Any]:
    t = time.monotonic()
    last: Any = None
    while time.monotonic() - t < timeout_s:
        try:
            r = await client.get("/healthz", timeout=60)
            if r.status_code == 200:
                return r.json()
            last = r.text[:200]
        except Exception as e:  # noqa: BLE001  (the proxy is not up yet)
            last = repr(e)
        await asyncio.sleep(0.5)
    raise TimeoutError(f"the service did not become healthy: {last}")


# ----- load generation ---------------------------------------------------------------------------------


def body_of(p: Any) -> dict[str, Any]:
    return {"problem": p.problem, "answer": p.answer, "id": p.id, "strategy": STRATEGY, "budget": BUDGET}


async def one_request(client: Any, p: Any, due: float) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    delay = due - loop.time()
    if delay > 0:
        await asyncio.sleep(delay)
    sent = loop.time()
    rec: dict[str, Any] = {"id": p.id, "lag_s": sent - due}
    try:
        r = await client.post("/v1/solve", json=body_of(p))
        rec["status"] = r.status_code
        if r.status_code == 200:
            d = r.json()
            rec.update(answer=d["answer"], correct=d["correct"], stop_reason=d["stop_reason"],
                       queued_s=d["queued_s"], search_s=d["wall_time_s"], error=d.get("error"),
                       tokens=d["compute"].get("policy_tokens", 0) + d["compute"].get("prm_tokens", 0))
        else:
            rec["error"] = r.text[:200]
            rec["retry_after"] = r.headers.get("retry-after")
    except Exception as e:  # noqa: BLE001  (a failed request is a data point)
        rec["status"] = None
        rec["error"] = f"{type(e).__name__}: {e}"[:200]
    rec["done"] = loop.time()
    rec["latency_s"] = rec["done"] - due
    return rec


def pct(xs: list[float], q: float) -> float | None:
    """The q-th percentile, linear interpolation between order statistics (numpy's default)."""
    if not xs:
        return None
    s = sorted(xs)
    k = (len(s) - 1) * q / 100
    lo, hi = math.floor(k), math.ceil(k)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def arrivals(rate: float, n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(n):
        t += rng.expovariate(rate)
        out.append(t)
    return out


def busy(s0: dict[str, Any], s1: dict[str, Any], role: str, wall: float) -> dict[str, float]:
    a, b = s0[f"{role}_pool"], s1[f"{role}_pool"]
    per0 = {r["id"]: r.get("busy_s", 0.0) for r in a["per_replica"]}
    reps = b["per_replica"]
    replica = sum(r.get("busy_s", 0.0) - per0.get(r["id"], 0.0) for r in reps) / (wall * max(1, len(reps)))
    return {"pool": round((b["busy_s"] - a["busy_s"]) / wall, 4), "replica_mean": round(replica, 4)}


async def run_point(client: Any, runner: Any, problems: list[Any], system: str, rate: float, n: int, seed: int,
                    slo: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    loop = asyncio.get_running_loop()
    times = arrivals(rate, n, seed)
    s0, c0, m0 = await runner.stats(), cluster_cpu(), machine_busy()
    t0 = loop.time() + 0.05
    recs = await asyncio.gather(*(one_request(client, problems[i % len(problems)], t0 + t) for i, t in enumerate(times)))
    t_end = loop.time()
    s1, c1, m1 = await runner.stats(), cluster_cpu(), machine_busy()
    wall = t_end - t0
    ok = [r for r in recs if r["status"] == 200 and r.get("stop_reason") != "error" and r.get("answer") is not None]
    lat = [r["latency_s"] for r in recs]  # every request: a refused or failed one counts as it came back
    n429 = sum(r["status"] == 429 for r in recs)
    failed = len(recs) - len(ok)
    p99 = pct(lat, 99)
    dp = s1["expansion_requests"] - s0["expansion_requests"]
    dpb = s1["policy_batches"] - s0["policy_batches"]
    dr = s1["score_requests"] - s0["score_requests"]
    drb = s1["reward_batches"] - s0["reward_batches"]
    point = {
        "system": system,
        "rate": round(rate, 4),
        "requests": n,
        "ok": len(ok),
        "rejected_429": n429,
        "failed": failed,
        "correct": sum(bool(r.get("correct")) for r in ok),
        "p50_s": round(pct(lat, 50), 4),
        "p90_s": round(pct(lat, 90), 4),
        "p99_s": round(p99, 4),
        "max_s": round(max(lat), 4),
        "mean_queued_s": round(statistics.mean(r.get("queued_s", 0.0) for r in ok), 4) if ok else None,
        "mean_search_s": round(statistics.mean(r["search_s"] for r in ok), 4) if ok else None,
        "client_lag_p99_s": round(pct([r["lag_s"] for r in recs], 99), 4),
        "arrival_span_s": round(times[-1], 3),
        "wall_s": round(wall, 3),
        # Answered queries per second over the point (first arrival to last response), and whether
        # that kept up with the arrivals this point actually drew (n / last arrival time).
        "throughput": round(len(ok) / wall, 3),
        "offered": round(n / times[-1], 3),
        "sustained": len(ok) / wall >= SUSTAINED * n / times[-1],
        "passes": failed == 0 and p99 <= slo and len(ok) / wall >= SUSTAINED * n / times[-1],
        "passes_at": {f"{f:g}x": failed == 0 and p99 <= slo / SLO_FACTOR * f and len(ok) / wall >= SUSTAINED * n / times[-1]
                      for f in sorted((*OTHER_SLOS, SLO_FACTOR))},
        "policy_busy": busy(s0, s1, "policy", wall),
        "reward_busy": busy(s0, s1, "reward", wall),
        "policy_mean_batch": round(dp / dpb, 2) if dpb else 0.0,
        "reward_mean_batch": round(dr / drb, 2) if drb else 0.0,
        "scheduler_cpu": round((s1["scheduler_cpu_s"] - s0["scheduler_cpu_s"]) / wall, 3),
        "cpu_cores": cpu_delta(c0, c1, wall),
        "machine_cpu_busy": round((m1[0] - m0[0]) / max(1, m1[1] - m0[1]), 3),
    }
    return point, recs


# ----- the bench ---------------------------------------------------------------------------------------


async def bench(url: str, cfg: Any, quick: bool, log: Any) -> dict[str, Any]:
    import httpx

    from ponder.jobs.spec import runner_config
    from ponder.jobs.worker import scheduler_names
    from ponder.scheduler.scheduler import RemoteRunner
    from ponder.tasks.datasets import load_problems

    problems = load_problems(DATASET)
    limits = httpx.Limits(max_connections=4096, max_keepalive_connections=4096)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(600.0), limits=limits, trust_env=False) as client:
        health = await wait_healthy(client)  # the ingress connects to the scheduler (and sets its limits) here
        runner = await RemoteRunner.connect(runner_config(cfg), *scheduler_names(runner_config(cfg)))
        ponder_limits = {"max_running": BIG, "max_queued": 4 * BIG, "tenant_max_running": BIG,
                         "tenant_max_queued": 4 * BIG}
        fifo_limits = {**ponder_limits, "max_running": 1, "tenant_max_running": 1}

        # Warm-up (connections, Ray workers, code paths), then the unloaded latency: one query at a time.
        await runner.set_admission(ponder_limits)
        warm = problems[-8:]
        await asyncio.gather(*(one_request(client, p, 0.0) for p in warm))
        before = (await runner.stats())["searches"]["started"]
        loop = asyncio.get_running_loop()
        unloaded = []
        for p in problems[:12 if quick else 30]:
            unloaded.append(await one_request(client, p, loop.time()))
        after = (await runner.stats())["searches"]["started"]
        if after - before != len(unloaded):
            raise RuntimeError(f"the scheduler this bench controls saw {after - before} searches for "
                               f"{len(unloaded)} requests: it is not the service's scheduler")
        bad = [r for r in unloaded if r["status"] != 200]
        if bad:
            raise RuntimeError(f"unloaded requests failed: {bad[0]}")
        ul = [r["latency_s"] for r in unloaded]
        base = statistics.median(ul)
        slo = SLO_FACTOR * base
        log(f"unloaded latency ({len(ul)} sequential queries): p50 {base * 1000:.0f} ms, p90 {pct(ul, 90) * 1000:.0f} ms, "
            f"max {max(ul) * 1000:.0f} ms (server-side search {statistics.median(r['search_s'] for r in unloaded) * 1000:.0f} ms)"
            f" -> SLO: p99 <= {slo * 1000:.0f} ms")

        # Rates: a geometric grid from 0.35 / unloaded p50 (FIFO's capacity is about 1 / its mean latency).
        step = 2.0 if quick else 1.3
        r0 = 0.35 / base
        grid = [r0 * step ** k for k in range(40)]
        # Requests per rate: about t_target seconds of arrivals, so that an overload shows in the p99.
        n_min, n_max, t_target = (16, 80, 5.0) if quick else (40, 300, 12.0)
        loosest = max((*OTHER_SLOS, SLO_FACTOR)) / SLO_FACTOR * slo

        def n_for(rate: float) -> int:
            return int(min(n_max, max(n_min, rate * t_target)))

        limits_of = {"ponder": ponder_limits, "fifo": fifo_limits}
        active = {"ponder": True, "fifo": True}
        points: dict[str, list[dict[str, Any]]] = {"ponder": [], "fifo": []}
        answers: dict[str, dict[str, set]] = {"ponder": {}, "fifo": {}, "unloaded": {}}
        for r in unloaded:
            answers["unloaded"].setdefault(r["id"], set()).add(r["answer"])
        budget_s = 100.0 if quick else 420.0  # stop sweeping (and say so) rather than run past this
        t_sweep = time.monotonic()
        out_of_time = False
        for k, rate in enumerate(grid):
            if not any(active.values()):
                break
            for system in ("ponder", "fifo"):
                if not active[system]:
                    continue
                if time.monotonic() - t_sweep > budget_s:
                    out_of_time = True
                    break
                await runner.set_admission(limits_of[system])
                point, recs = await run_point(client, runner, problems, system, rate, n_for(rate), 1000 + k, slo)
                points[system].append(point)
                for r in recs:
                    if r.get("status") == 200:
                        answers[system].setdefault(r["id"], set()).add(r.get("answer"))
                c = point["cpu_cores"]
                log(f"  {system:6s} {rate:7.2f}/s x{point['requests']:3d}: p50 {point['p50_s']:6.3f} p90 {point['p90_s']:6.3f} "
                    f"p99 {point['p99_s']:6.3f} s, {point['throughput']:6.2f} answered/s, 429 {point['rejected_429']}, "
                    f"failed {point['failed']}, busy policy {point['policy_busy']['replica_mean']:.0%} PRM "
                    f"{point['reward_busy']['replica_mean']:.0%}, CPU {c['total']:.2f} cores "
                    f"(machine {point['machine_cpu_busy']:.0%}) {'ok' if point['passes'] else 'FAIL'}")
                if point["failed"] or point["p99_s"] > loosest or not point["sustained"]:
                    active[system] = False
            if out_of_time:
                break
        stats = await runner.stats()

    # The same problem must get the same answer everywhere (seeded engines: timing must not matter).
    ids = set().union(*answers.values())
    mismatches = []
    for pid in sorted(ids):
        seen = {s: sorted(map(str, a[pid])) for s, a in answers.items() if pid in a}
        if len({x for v in seen.values() for x in v}) > 1:
            mismatches.append({"id": pid, "answers": seen})
    both = [pid for pid in ids if pid in answers["ponder"] and pid in answers["fifo"]]

    return summarize({
        "setup": {
            "strategy": STRATEGY, "budget": BUDGET, "dataset": DATASET, "policy_replicas": cfg.cluster.policy_replicas,
            "reward_replicas": cfg.cluster.reward_replicas, "max_inflight_per_replica": cfg.cluster.max_inflight_per_replica,
            "ingress_replicas": 1, "policy_latency": POLICY_H100, "reward_latency": PRM_H100,
            "scheduler": {"max_batch": cfg.scheduler.max_batch, "batch_window_ms": cfg.scheduler.batch_window_ms},
            "admission": {"ponder": ponder_limits, "fifo": fifo_limits},
            "arrivals": "Poisson, open loop; seed 1000 + rate index (the same times for both systems)",
            "latency": "client-side, from the scheduled arrival time to the response",
            "requests_per_rate": f"clamp(rate x {t_target:.0f} s, {n_min}, {n_max})",
            "rate_grid": {"start": round(r0, 4), "step": step, "note": GRID_NOTE},
            "machine_cores": CORES, "quick": quick, "health": health,
        },
        "unloaded": {"requests": len(ul), "p50_s": round(base, 4), "p90_s": round(pct(ul, 90), 4),
                     "p50_by_level_s": {lv: round(statistics.median(r["latency_s"] for r, p in zip(unloaded, problems)
                                                                    if p.level == lv), 4)
                                        for lv in sorted({p.level for p in problems[:len(unloaded)]})},
                     "max_s": round(max(ul), 4), "search_p50_s": round(statistics.median(r["search_s"] for r in unloaded), 4)},
        "slo": {"p99_s": round(slo, 4), "factor": SLO_FACTOR, "unloaded_p50_s": round(base, 4)},
        "points": points,
        "sweep_out_of_time": out_of_time,
        "answers": {"problems_seen": len(ids), "seen_in_both": len(both), "mismatches": mismatches},
        "final_scheduler_stats": {k: stats[k] for k in ("searches", "admission", "tokens", "policy_mean_batch",
                                                        "reward_mean_batch", "scheduler_cpu_s")},
    })


GRID_NOTE = ("nominal Poisson rates start x step^k, start = 0.35 / unloaded p50; each system stops after a point "
             "that fails the loosest SLO (10x), has a failed request, or does not keep up")


def goodput(pts: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """A system's goodput at SLO `key` from its sweep: the highest swept (nominal) rate that passed
    (the issue's definition), and the stricter one, the top of the run of passing rates from the
    bottom of the grid (the same when the p99 is monotone in the rate; noise in a p99 of 40-300
    samples near the SLO makes them differ)."""
    passing = [p for p in pts if p["passes_at"][key]]
    best = max(passing, key=lambda p: p["rate"]) if passing else None
    first_fail = next((i for i, p in enumerate(pts) if not p["passes_at"][key]), len(pts))
    strict = pts[first_fail - 1] if first_fail else None
    return {"rate": best["rate"] if best else 0.0,
            "offered": best["offered"] if best else 0.0,  # the rate the point's arrivals actually had
            "throughput": best["throughput"] if best else 0.0, "p99_s": best["p99_s"] if best else None,
            "strict_rate": strict["rate"] if strict else 0.0,
            "strict_throughput": strict["throughput"] if strict else 0.0,
            "failing_rates_below_goodput": [p["rate"] for p in pts if not p["passes_at"][key] and best
                                            and p["rate"] < best["rate"]],
            "last_swept_passed": bool(pts) and pts[-1]["passes_at"][key]}


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if a and b else None


def summarize(res: dict[str, Any]) -> dict[str, Any]:
    """Goodput per SLO and system, the ratios, and where the limits were, from `res["points"]`
    (also run on a results file by `--resummarize`: nothing here measures)."""
    points, base = res["points"], res["unloaded"]["p50_s"]
    step = res["setup"]["rate_grid"]["step"] if isinstance(res["setup"].get("rate_grid"), dict) else 1.3
    keys = sorted(points["ponder"][0]["passes_at"], key=lambda k: float(k[:-1])) if points["ponder"] else []
    by_slo = {}
    for key in keys:
        g = {s: goodput(pts, key) for s, pts in points.items()}
        by_slo[key] = {
            "p99_s": round(float(key[:-1]) * base, 4), "goodput": g,
            "ratio": _ratio(g["ponder"]["rate"], g["fifo"]["rate"]),
            "ratio_offered": _ratio(g["ponder"]["offered"], g["fifo"]["offered"]),
            "ratio_throughput": _ratio(g["ponder"]["throughput"], g["fifo"]["throughput"]),
            "ratio_strict": _ratio(g["ponder"]["strict_rate"], g["fifo"]["strict_rate"]),
            # ponder passed its last rate: its goodput (and the ratio) is at least this.
            "ratio_is_lower_bound": g["ponder"]["last_swept_passed"],
            # FIFO never failed (the sweep ran out of time first): the ratio is unknown.
            "ratio_undetermined": g["fifo"]["last_swept_passed"],
        }
    main = by_slo.get(f"{SLO_FACTOR:g}x", {})
    res["slo"]["definition"] = (f"p99 latency <= {SLO_FACTOR:g} x the unloaded p50, every request answered (no 429, "
                                f"no error), and answered/s >= {SUSTAINED:g} x the offered rate")
    res["setup"]["rate_grid"] = {**(res["setup"]["rate_grid"] if isinstance(res["setup"].get("rate_grid"), dict)
                                    else {"start": points["ponder"][0]["rate"], "step": step}), "note": GRID_NOTE}
    res["goodput"] = main.get("goodput")
    res["ratio"] = main.get("ratio")
    res["ratio_note"] = ("undetermined: FIFO passed every rate swept" if main.get("ratio_undetermined")
                         else "a lower bound: ponder passed its last swept rate" if main.get("ratio_is_lower_bound")
                         else f"resolution: one grid step (x{step:g}) on each side")
    res["by_slo"] = by_slo
    # Where is the limit? The cluster's processes near all cores, or the whole machine (other users too) busy.
    res["cpu_bound_points"] = [
        {"system": p["system"], "rate": p["rate"], "cores": p["cpu_cores"]["total"],
         "machine_cpu_busy": p["machine_cpu_busy"], "throughput": p["throughput"]}
        for pts in points.values() for p in pts
        if p["cpu_cores"]["total"] >= 0.85 * min(CORES, 2) or p["machine_cpu_busy"] >= 0.9]
    # Each system's first failing rate (primary SLO): device busy fractions and CPU there.
    res["at_first_failure"] = {
        s: {"rate": p["rate"], "offered": p["offered"], "p99_s": p["p99_s"], "throughput": p["throughput"],
            "sustained": p["sustained"], "policy_busy": p["policy_busy"], "reward_busy": p["reward_busy"],
            "cluster_cores": p["cpu_cores"]["total"], "machine_cpu_busy": p["machine_cpu_busy"]}
        for s, pts in points.items() for p in [next((p for p in pts if not p["passes"]), None)] if p is not None}
    res["accuracy"] = {s: round(sum(p["correct"] for p in pts) / max(1, sum(p["ok"] for p in pts)), 4)
                       for s, pts in points.items()}
    return res


def table(res: dict[str, Any]) -> str:
    rows = [f"SLO: p99 <= {res['slo']['p99_s'] * 1000:.0f} ms (5 x unloaded p50 {res['unloaded']['p50_s'] * 1000:.0f} ms)",
            ("| system | rate /s (drawn) | n | p50 s | p90 s | p99 s | answered/s | 429 | fail | busy policy / PRM | "
             "mean batch policy / PRM | CPU cores (sched, ingress, proxy, replicas, client) | pass |"),
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in ("ponder", "fifo"):
        for p in res["points"][s]:
            c = p["cpu_cores"]
            reps = c.get("policy replicas", 0) + c.get("PRM replicas", 0)
            rows.append(
                f"| {s} | {p['rate']:.2f} ({p['offered']:.2f}) | {p['requests']} | {p['p50_s']:.3f} | {p['p90_s']:.3f} | {p['p99_s']:.3f} | "
                f"{p['throughput']:.2f} | {p['rejected_429']} | {p['failed']} | "
                f"{p['policy_busy']['replica_mean']:.0%} / {p['reward_busy']['replica_mean']:.0%} | "
                f"{p['policy_mean_batch']:.1f} / {p['reward_mean_batch']:.1f} | {c['total']:.2f} "
                f"({c.get('scheduler', 0):.2f}, {c.get('ingress', 0):.2f}, {c.get('http proxy', 0):.2f}, {reps:.2f}, "
                f"{c.get('client (driver)', 0):.2f}) | {'yes' if p['passes'] else 'no'} |")
    for key, b in res["by_slo"].items():
        g = b["goodput"]
        ratio = "n/a" if b["ratio"] is None else f"{b['ratio']:.2f}x" + (" (lower bound)" if b["ratio_is_lower_bound"] else "")
        if b["ratio_undetermined"]:
            ratio += " (undetermined: FIFO passed every rate swept)"
        strict = "n/a" if b["ratio_strict"] is None else f"{b['ratio_strict']:.2f}x"
        rows.append(f"SLO {key} unloaded p50 (p99 <= {b['p99_s']:.2f} s){' [primary]' if key == f'{SLO_FACTOR:g}x' else ''}: "
                    f"goodput ponder {g['ponder']['rate']:.2f}/s ({g['ponder']['throughput']:.2f} answered/s), "
                    f"FIFO {g['fifo']['rate']:.2f}/s ({g['fifo']['throughput']:.2f} answered/s): ratio {ratio}; "
                    f"strict (passing from the bottom): ponder {g['ponder']['strict_rate']:.2f}, "
                    f"FIFO {g['fifo']['strict_rate']:.2f}: {strict}")
    a = res["answers"]
    rows.append(f"answers: {a['problems_seen']} problems, {a['seen_in_both']} in both systems, "
                f"{len(a['mismatches'])} with differing answers")
    return "\n".join(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a 1-2 minute smoke run")
    ap.add_argument("--policy-replicas", type=int, default=2)
    ap.add_argument("--reward-replicas", type=int, default=1)
    ap.add_argument("--out", type=Path, help="where the JSON goes (default: bench/results/serve_goodput[-quick].json)")
    ap.add_argument("--resummarize", type=Path, metavar="JSON",
                    help="recompute the goodput summary of a results file from its points (no measuring) and print it")
    args = ap.parse_args()
    if args.resummarize:
        res = summarize(json.loads(args.resummarize.read_text()))
        args.resummarize.write_text(json.dumps(res, indent=1) + "\n")
        print(table(res))
        return

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    t_start = time.perf_counter()
    cfg = make_config(args.policy_replicas, args.reward_replicas)
    import ray

    try:
        url = start_service(cfg)
        log(f"service at {url} ({time.perf_counter() - t_start:.0f} s to deploy)")
        res = asyncio.run(bench(url, cfg, args.quick, log))
    finally:
        ray.shutdown()  # the local cluster, with Serve and the detached scheduler and replicas in it
    res["run_wall_s"] = round(time.perf_counter() - t_start, 1)
    out = args.out or RESULTS / ("serve_goodput-quick.json" if args.quick else "serve_goodput.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(table(res))
    print(f"({res['run_wall_s']:.0f} s; {out})")


if __name__ == "__main__":
    main()

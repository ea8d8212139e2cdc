"""Scheduler CPU per expansion in the Ray `SchedulerActor` (instant sim replicas, local cluster).

The actor reports its own process CPU (`scheduler_cpu_s`): the runner, the pools' routing and
the Ray client work of sending calls to the replica actors and decoding their replies. The
replicas run in their own processes, so engine CPU is not in it. One policy and one PRM
replica keep the run light on a 2-core machine; the actor's CPU per expansion is the figure.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.scheduler_vs_lockstep import config
from ponder.tasks.datasets import load_problems


def ray_scheduler_cpu(problems: int = 200, concurrency: int = 256, replicas: int = 1) -> dict[str, Any]:
    import ray

    from ponder.scheduler.scheduler import RemoteRunner

    cfg = config(concurrency)
    cfg.cluster.address = "local"
    cfg.cluster.policy_replicas = cfg.cluster.reward_replicas = replicas
    cfg.cluster.max_inflight_per_replica = 64
    cfg.cluster.cpus_per_replica = 0.0
    ps = load_problems(f"arith:{problems}")
    runner = RemoteRunner.start(cfg)
    try:
        async def go() -> tuple[list[Any], dict[str, Any], dict[str, Any], float]:
            before = await runner.stats()
            t = time.perf_counter()
            res = [r async for _, r in runner.run(ps)]
            wall = time.perf_counter() - t
            return res, before, await runner.stats(), wall

        results, before, after, wall = asyncio.run(go())
    finally:
        runner.shutdown()
        ray.shutdown()
    expansions = sum(r.compute.generations for r in results)
    cpu = after["scheduler_cpu_s"] - before["scheduler_cpu_s"]
    return {
        "problems": problems,
        "replicas_per_pool": replicas,
        "expansions": expansions,
        "wall_s": round(wall, 3),
        "actor_cpu_s": round(cpu, 3),
        "actor_cpu_us_per_expansion": round(1e6 * cpu / expansions, 2),
        "expansions_per_actor_cpu_s": round(expansions / cpu, 1),
        "policy_calls": after["policy_pool"]["calls"],
        "reward_calls": after["reward_pool"]["calls"],
    }


if __name__ == "__main__":
    print(ray_scheduler_cpu())

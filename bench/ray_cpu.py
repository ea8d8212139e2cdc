"""Scheduler CPU per expansion in the Ray scheduler actor(s) (instant sim replicas, local cluster).

Each actor reports its own process CPU (`scheduler_cpu_s`): the runner, the pools' routing and
the Ray client work of sending calls to the replica actors and decoding their replies. The
replicas run in their own processes, so engine CPU is not in it.

    python -m bench.ray_cpu                      # 1+1 and 8+4 replicas, 1 shard
    python -m bench.ray_cpu --shards 1 2 4       # shard scaling on 2+2 replicas

With K shards (`cluster.scheduler_shards`) the searches split over K actors sharing the
replicas; the figure per shard is its CPU per expansion it drove, and the projected capacity
is what K actors with a core each would drive (sum over shards of expansions / shard CPU). The
wall-clock rate is also given, but on a machine with fewer cores than actors + replicas it
measures the machine, not the scheduler.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

from bench.scheduler_vs_lockstep import config
from ponder.tasks.datasets import load_problems


def ray_scheduler_cpu(problems: int = 200, concurrency: int = 256, replicas: int = 1,
                      reward_replicas: int | None = None, shards: int = 1) -> dict[str, Any]:
    import ray

    from ponder.scheduler import make_runner

    cfg = config(concurrency)
    cfg.cluster.address = "local"
    cfg.cluster.policy_replicas = replicas
    cfg.cluster.reward_replicas = replicas if reward_replicas is None else reward_replicas
    cfg.cluster.max_inflight_per_replica = 64
    cfg.cluster.cpus_per_replica = 0.0
    cfg.cluster.scheduler_shards = shards
    cfg.scheduler.max_concurrent_searches = max(1, concurrency // shards)  # the same in flight in all
    ps = load_problems(f"arith:{problems}")
    runner = make_runner(cfg)
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
    out = {
        "problems": problems,
        "policy_replicas": cfg.cluster.policy_replicas,
        "reward_replicas": cfg.cluster.reward_replicas,
        "shards": shards,
        "expansions": expansions,
        "wall_s": round(wall, 3),
        "expansions_per_wall_s": round(expansions / wall, 1),
        "actor_cpu_s": round(cpu, 3),
        "actor_cpu_us_per_expansion": round(1e6 * cpu / expansions, 2),
        "expansions_per_actor_cpu_s": round(expansions / cpu, 1),
        "policy_calls": after["policy_pool"]["calls"] - before["policy_pool"]["calls"],
        "reward_calls": after["reward_pool"]["calls"] - before["reward_pool"]["calls"],
        # Ray calls actually made: a replica's sub-batches of one event-loop turn travel together
        "policy_ray_calls": after["policy_pool"]["ray_calls"] - before["policy_pool"]["ray_calls"],
        "reward_ray_calls": after["reward_pool"]["ray_calls"] - before["reward_pool"]["ray_calls"],
    }
    if shards > 1:
        per = [a["scheduler_cpu_s"] - b["scheduler_cpu_s"] for a, b in zip(after["shards"], before["shards"])]
        done = [a["searches"]["finished"] - b["searches"]["finished"] for a, b in zip(after["shards"], before["shards"])]
        per_search = expansions / max(1, sum(done))
        out["shard_cpu_s"] = [round(c, 3) for c in per]
        out["shard_searches"] = done
        # what K actors with a core each would drive: each shard's expansions over its own CPU
        out["projected_expansions_per_s"] = round(sum(d * per_search / c for d, c in zip(done, per) if c > 0), 1)
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=400)
    ap.add_argument("--shards", type=int, nargs="*", help="shard counts to run on 2+2 replicas")
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args(argv)
    runs = []
    if args.shards:
        for k in args.shards:
            runs.append(ray_scheduler_cpu(args.problems, replicas=2, shards=k))
            print(json.dumps(runs[-1]), flush=True)
    else:
        for pol, rew in ((1, 1), (8, 4)):
            runs.append(ray_scheduler_cpu(args.problems, replicas=pol, reward_replicas=rew))
            print(json.dumps(runs[-1]), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(runs, f, indent=1)


if __name__ == "__main__":
    main()

"""Scheduler shards: K Scheduler actors driving one set of replicas.

One Scheduler actor's CPU bounds how many expansions a deployment can drive (tens of
microseconds of Python per expansion in that actor: contexts, batching, routing, Ray calls). With
`cluster.scheduler_shards` = K, K actors each host their own runner and pools, and every pool
attaches to the replicas of one `ReplicaOwner`: the replicas (and their GPUs) are shared, only the
scheduling is split. Shard 0 starts first and creates the replicas; the others attach to them.

- A search lives on one shard, chosen by a stable hash of its problem id, so a problem's
  searches meet the same shard and results equal one scheduler's (seeds come from the tree).
- A job is opened on every shard with 1/K of its budget and queries each (the hash spreads a
  job's problems evenly; a small job's shares can differ by a few queries).
- `cancel`, `cancel_job`, `close_job` and `stats` go to every shard and are merged.
- Every shard routes by the replicas' total load: each packed reply carries the work the other
  shards' pools have on that replica (`ponder/actors/pool.py`, "shared load"), so a replica one
  shard saturates is avoided by the others without an extra call.
- The pools keep fixed sizes (the config refuses autoscaling with shards): a pool that scaled
  would change replicas under the other shards' pools.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

import ray

from ponder.actors.replica import EngineBuilder
from ponder.config import Budget, PonderConfig
from ponder.scheduler.interface import SchedulerAPI
from ponder.scheduler.scheduler import RemoteRunner
from ponder.search.types import Problem, SearchResult


def shard_names(name: str, shards: int) -> list[str]:
    """Actor names of a named scheduler's shards (shard 0 keeps the plain name)."""
    return [name if i == 0 else f"{name}.{i}" for i in range(shards)]


def shard_of(key: str, shards: int) -> int:
    return zlib.crc32(key.encode()) % shards


async def connect_scheduler(config: PonderConfig, name: str, owner_name: str) -> SchedulerAPI:
    """The named (detached) scheduler of a deployment: one actor, or its shards."""
    k = config.cluster.scheduler_shards
    if k == 1:
        return await RemoteRunner.connect(config, name, owner_name)
    shards = []
    for shard in shard_names(name, k):  # in order: shard 0 creates the replicas, the rest attach
        shards.append(await RemoteRunner.connect(config, shard, owner_name))
    return ShardedRunner(shards, config)


def _merge(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the numbers of per-shard reports (nested dicts too); other values from the first
    shard that has one (not None)."""
    out: dict[str, Any] = {}
    for rep in reports:
        for k, v in rep.items():
            if isinstance(v, bool) or not isinstance(v, (int, float, dict)):
                if out.get(k) is None:
                    out[k] = v
            elif isinstance(v, dict):
                out[k] = _merge([out[k], v]) if isinstance(out.get(k), dict) else _merge([v])
            else:
                out[k] = out.get(k, 0) + v
    return out


class ShardedRunner(SchedulerAPI):
    def __init__(self, shards: list[RemoteRunner], config: PonderConfig):
        self.shards = shards
        self.config = config

    @classmethod
    def start(cls, config: PonderConfig, policy_builder: EngineBuilder | None = None,
              reward_builder: EngineBuilder | None = None, owner_name: str | None = None) -> ShardedRunner:
        import uuid

        owner_name = owner_name or f"ponder-shards-{uuid.uuid4().hex[:8]}"
        shards = [RemoteRunner.start(config, policy_builder, reward_builder, owner_name=owner_name)
                  for _ in range(config.cluster.scheduler_shards)]  # one after another: see the module doc
        return cls(shards, config)

    def _for(self, problem: Problem) -> RemoteRunner:
        return self.shards[shard_of(problem.id, len(self.shards))]

    async def _all(self, method: str, *args: Any, **kw: Any) -> list[Any]:
        return list(await asyncio.gather(*(getattr(s, method)(*args, **kw) for s in self.shards)))

    async def solve(self, problem: Problem, strategy: str | None = None, budget: str | Budget | None = None,
                    params: dict[str, Any] | None = None, *, job: str | None = None,
                    search_id: str | None = None) -> SearchResult:
        return await self._for(problem).solve(problem, strategy, budget, params, job=job, search_id=search_id)

    async def stream(self, problem: Problem, strategy: str | None = None, budget: str | Budget | None = None,
                     params: dict[str, Any] | None = None, **kw: Any) -> AsyncIterator[dict[str, Any]]:
        async for event in self._for(problem).stream(problem, strategy, budget, params, **kw):
            yield event

    async def set_admission(self, limits: dict[str, Any]) -> None:
        # Each shard admits its share: a tenant's limits hold across the shards in sum.
        k = len(self.shards)
        await self._all("set_admission", {key: -(-v // k) for key, v in limits.items()})  # ceil: 0 stays 0

    async def open_job(self, job_id: str, *, budget: float | None = None, queries: int = 0,
                       groups: dict[str, int] | None = None) -> None:
        k = len(self.shards)
        await self._all("open_job", job_id, budget=None if budget is None else budget / k,
                        queries=-(-queries // k) if queries else 0,
                        groups={g: -(-n // k) for g, n in (groups or {}).items()} or None)

    async def close_job(self, job_id: str) -> dict[str, Any]:
        return _merge([r for r in await self._all("close_job", job_id) if r])

    async def job_stats(self, job_id: str) -> dict[str, Any] | None:
        reports = [r for r in await self._all("job_stats", job_id) if r]
        return _merge(reports) if reports else None

    async def cancel(self, search_id: str) -> bool:
        return any(await self._all("cancel", search_id))

    async def cancel_job(self, job_id: str) -> int:
        return sum(await self._all("cancel_job", job_id))

    async def run(self, problems: Iterable[Problem], strategy: str | None = None,
                  budget: str | Budget | None = None, params: dict[str, Any] | None = None,
                  ) -> AsyncIterator[tuple[Problem, SearchResult]]:
        parts: list[list[Problem]] = [[] for _ in self.shards]
        for p in problems:
            parts[shard_of(p.id, len(self.shards))].append(p)
        queue: asyncio.Queue = asyncio.Queue()

        async def pump(shard: RemoteRunner, part: list[Problem]) -> None:
            try:
                async for item in shard.run(part, strategy, budget, params):
                    await queue.put(item)
            finally:
                await queue.put(None)

        tasks = [asyncio.ensure_future(pump(s, part)) for s, part in zip(self.shards, parts) if part]
        try:
            left = len(tasks)
            while left:
                item = await queue.get()
                if item is None:
                    left -= 1
                else:
                    yield item
            for t in tasks:
                t.result()  # a shard's error surfaces here
        finally:
            for t in tasks:
                t.cancel()

    async def stats(self) -> dict[str, Any]:
        per = await self._all("stats")
        merged = _merge(per)
        merged["shards"] = [{"scheduler_cpu_s": s["scheduler_cpu_s"], "searches": s.get("searches")} for s in per]
        # The pools are the same replicas seen from each shard: report one shard's replica counts.
        for pool in ("policy_pool", "reward_pool"):
            if pool in per[0] and "replicas" in per[0][pool]:
                merged[pool]["replicas"] = per[0][pool]["replicas"]
        return merged

    async def scale(self, policy: int | None = None, reward: int | None = None) -> dict[str, int]:
        raise NotImplementedError("pools of a sharded scheduler keep fixed sizes (cluster.scheduler_shards > 1)")

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.shutdown)

    def shutdown(self) -> None:
        # Only shard 0 shuts the replicas down (through the owner); the others just go.
        for s in self.shards[1:]:
            ray.kill(s.actor)
        self.shards[0].shutdown()

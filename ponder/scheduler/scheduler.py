"""The Scheduler actor: one async Ray actor hosting a `Runner` over two replica pools.

Searches run as asyncio tasks inside the actor; their requests are batched per pool by the
runner and routed to replicas by the pools. `RemoteRunner` is the thin client `make_runner`
returns when `cluster.address` is set: it has the in-process runner's `solve` and `run`, so
callers do not care where the searches run. Engines are seeded per request, so results match
the in-process runner for the same seed.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import ray

from ponder.actors.pool import ReplicaPool
from ponder.actors.replica import EngineBuilder
from ponder.config import Budget, PonderConfig
from ponder.scheduler.interface import SchedulerAPI
from ponder.search.types import Problem, SearchResult, problem_from_dict, problem_to_dict


def _budget_arg(budget: str | Budget | None) -> str | None:
    # Budgets cross the wire as their spec string.
    if isinstance(budget, Budget):
        return budget.label() if budget.label() != "unbounded" else None
    return budget


# The actor allocates a dozen objects per expansion (requests, steps, nodes, futures): at Python's
# default gen-0 threshold (700) a collection runs every ~60 expansions, and each older-generation
# pass walks every live search tree. Measured at 8+4 replicas: 15% of the actor's CPU in the
# collector. Objects that exist at start-up are frozen out of it, and it runs 1/70 as often.
# Only in the actor's own process (an in-process Scheduler leaves its host's collector alone).
GC_THRESHOLD = (50_000, 20, 100)


def _tune_gc() -> None:
    if ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None:
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLD)


class Scheduler:
    """The actor body (wrapped by `SchedulerActor`); usable in-process too, for tests."""

    def __init__(
        self,
        config: dict[str, Any],
        policy_builder: EngineBuilder | None = None,
        reward_builder: EngineBuilder | None = None,
        owner_name: str | None = None,
    ):
        self.config = PonderConfig.from_dict(config)
        self._builders = (policy_builder, reward_builder)
        # With an owner name the replicas belong to that detached ReplicaOwner, not to this
        # actor: a crashed and restarted scheduler attaches to the same replicas.
        self.owner_name = owner_name
        self.owner: Any = None
        self.policy_pool: ReplicaPool | None = None
        self.reward_pool: ReplicaPool | None = None
        self.runner: Any = None
        self.autoscalers: list[Any] = []
        self._autoscaling: asyncio.Task | None = None
        self._ready: asyncio.Task | None = None
        self._cpu0 = time.process_time()

    async def _start(self) -> None:
        from ponder.scheduler.runner import Runner

        _tune_gc()
        c = self.config
        if self.owner_name:
            from ponder.actors.owner import get_owner

            self.owner = get_owner(self.owner_name)
        self.policy_pool = ReplicaPool("policy", c.policy, c.cluster, builder=self._builders[0], owner=self.owner)
        self.reward_pool = ReplicaPool("reward", c.reward, c.cluster, builder=self._builders[1], owner=self.owner)
        await asyncio.gather(self.policy_pool.start(), self.reward_pool.start())
        self.runner = Runner(self.policy_pool, self.reward_pool, c)
        if c.cluster.autoscales:
            from ponder.scheduler.autoscale import PoolAutoscaler, run_autoscalers

            cl = c.cluster
            self.autoscalers = [
                PoolAutoscaler(role, pool, front.batcher, *cl.replica_range(role), cl.autoscale_target_s,
                               cl.autoscale_idle_s)
                for role, pool, front in (("policy", self.policy_pool, self.runner.policy),
                                          ("reward", self.reward_pool, self.runner.reward))]
            self._autoscaling = asyncio.get_running_loop().create_task(
                run_autoscalers(self.autoscalers, cl.autoscale_interval_s))

    async def ready(self) -> bool:
        if self._ready is None:
            self._ready = asyncio.get_running_loop().create_task(self._start())
        await self._ready
        return True

    async def solve(
        self, problem: dict[str, Any], strategy: str | None = None, budget: str | None = None,
        params: dict[str, Any] | None = None, job: str | None = None, search_id: str | None = None,
    ) -> dict[str, Any]:
        await self.ready()
        result = await self.runner.solve(problem_from_dict(problem), strategy, budget, params, job=job, search_id=search_id)
        return result.to_dict()

    async def stream(
        self, problem: dict[str, Any], strategy: str | None = None, budget: str | None = None,
        params: dict[str, Any] | None = None, search_id: str | None = None, tenant: str = "",
        priority: int = 0, deadline_s: float | None = None, progress: bool = True,
    ) -> AsyncIterator[dict[str, Any]]:
        """An interactive search's events (a Ray streaming generator; see `Runner.stream`)."""
        await self.ready()
        async for event in self.runner.stream(problem_from_dict(problem), strategy, budget, params, search_id=search_id,
                                              tenant=tenant, priority=priority, deadline_s=deadline_s,
                                              progress=progress):
            yield event

    async def set_admission(self, limits: dict[str, Any]) -> None:
        from ponder.scheduler.admission import AdmissionLimits

        await self.ready()
        self.runner.set_admission(AdmissionLimits(**limits))

    async def open_job(self, job_id: str, budget: float | None = None, queries: int = 0,
                       groups: dict[str, int] | None = None) -> None:
        await self.ready()
        await self.runner.open_job(job_id, budget=budget, queries=queries, groups=groups)

    async def close_job(self, job_id: str) -> dict[str, Any]:
        await self.ready()
        return await self.runner.close_job(job_id)

    async def job_stats(self, job_id: str) -> dict[str, Any] | None:
        await self.ready()
        return await self.runner.job_stats(job_id)

    async def cancel(self, search_id: str) -> bool:
        await self.ready()
        return await self.runner.cancel(search_id)

    async def cancel_job(self, job_id: str) -> int:
        await self.ready()
        return await self.runner.cancel_job(job_id)

    async def run_stream(
        self, problems: list[dict[str, Any]], strategy: str | None = None, budget: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Yields (problem id, result) as searches finish (a Ray streaming generator)."""
        await self.ready()
        async for p, result in self.runner.run([problem_from_dict(d) for d in problems], strategy, budget, params):
            yield p.id, result.to_dict()

    async def run_batch(
        self, problems: list[dict[str, Any]], strategy: str | None = None, budget: str | None = None,
        params: dict[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        out = {}
        async for pid, res in self.run_stream(problems, strategy, budget, params):
            out[pid] = res
        return [out[d["id"]] for d in problems]

    async def scale(self, policy: int | None = None, reward: int | None = None) -> dict[str, int]:
        await self.ready()
        jobs = []
        if policy is not None:
            jobs.append(self.policy_pool.scale(policy))
        if reward is not None:
            jobs.append(self.reward_pool.scale(reward))
        await asyncio.gather(*jobs)
        return {"policy": self.policy_pool.size, "reward": self.reward_pool.size}

    async def health(self) -> dict[str, Any]:
        await self.ready()
        p, r = await asyncio.gather(self.policy_pool.health(), self.reward_pool.health())
        return {"policy": p, "reward": r}

    async def replicas(self, role: str) -> list[Any]:
        """The replica actor handles of a pool (for operators and tests)."""
        await self.ready()
        pool = self.policy_pool if role == "policy" else self.reward_pool
        return [m.handle for m in pool.members if not m.draining]

    async def stats(self) -> dict[str, Any]:
        """Busy fraction per pool, expansions, batch sizes, searches, ledger, scheduler CPU."""
        await self.ready()
        p, r = await asyncio.gather(self.policy_pool.stats(), self.reward_pool.stats())
        return {
            **self.runner.stats_now(),
            "autoscale": {a.role: a.stats() for a in self.autoscalers},
            "scheduler_cpu_s": time.process_time() - self._cpu0,
            "policy_pool": p,
            "reward_pool": r,
        }

    async def shutdown(self) -> None:
        """An explicit shutdown: kill the replicas (through the owner, if any) and the owner."""
        if self._autoscaling is not None:
            self._autoscaling.cancel()
        for pool in (self.policy_pool, self.reward_pool):
            if pool is not None:
                await pool.close()
        if self.owner is not None:
            await self.owner.close.remote()  # strays, e.g. a spawn retried across an owner restart
            ray.kill(self.owner)
            self.owner = None


# Async actor: every method is a coroutine, so thousands of searches share its event loop.
# Restarts after a crash; with an owner name it finds its replicas again (see ReplicaOwner).
SchedulerActor = ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=10_000)(Scheduler)


class RemoteRunner(SchedulerAPI):
    """The client side: the in-process `Runner`'s `solve`/`run` over a `SchedulerActor`."""

    def __init__(self, actor: Any, config: PonderConfig):
        self.actor = actor
        self.config = config

    @classmethod
    def start(
        cls,
        config: PonderConfig,
        policy_builder: EngineBuilder | None = None,
        reward_builder: EngineBuilder | None = None,
        name: str | None = None,
        owner_name: str | None = None,
    ) -> RemoteRunner:
        from ponder.scheduler.cluster import ensure_ray

        ensure_ray(config.cluster)
        opts: dict[str, Any] = {}
        if name:
            opts = {"name": name, "get_if_exists": True}
        actor = SchedulerActor.options(**opts).remote(config.to_dict(), policy_builder, reward_builder, owner_name)
        ray.get(actor.ready.remote())
        return cls(actor, config)

    @classmethod
    async def connect(cls, config: PonderConfig, name: str, owner_name: str | None = None) -> RemoteRunner:
        """Attach to (or create) a named, detached scheduler on the connected cluster: it
        outlives the process that created it, and Ray restarts it after a crash (it then
        re-attaches to its replicas through `owner_name`). For the job worker and services."""
        # In the config's namespace, not the caller's: a Serve replica runs in Serve's namespace,
        # and the job worker and the service must find the same scheduler.
        actor = SchedulerActor.options(name=name, namespace=config.cluster.namespace, get_if_exists=True,
                                       lifetime="detached").remote(config.to_dict(), None, None, owner_name)
        await actor.ready.remote()
        return cls(actor, config)

    async def solve(
        self, problem: Problem, strategy: str | None = None, budget: str | Budget | None = None,
        params: dict[str, Any] | None = None, *, job: str | None = None, search_id: str | None = None,
    ) -> SearchResult:
        d = await self.actor.solve.remote(problem_to_dict(problem), strategy, _budget_arg(budget), params, job, search_id)
        return SearchResult.from_dict(d)

    async def stream(
        self, problem: Problem, strategy: str | None = None, budget: str | Budget | None = None,
        params: dict[str, Any] | None = None, *, search_id: str | None = None, tenant: str = "",
        priority: int = 0, deadline_s: float | None = None, progress: bool = True,
    ) -> AsyncIterator[dict[str, Any]]:
        gen = self.actor.stream.remote(problem_to_dict(problem), strategy, _budget_arg(budget), params, search_id,
                                       tenant, priority, deadline_s, progress)
        async for ref in gen:
            yield await ref

    async def set_admission(self, limits: dict[str, Any]) -> None:
        await self.actor.set_admission.remote(limits)

    async def open_job(self, job_id: str, *, budget: float | None = None, queries: int = 0,
                       groups: dict[str, int] | None = None) -> None:
        await self.actor.open_job.remote(job_id, budget, queries, groups)

    async def close_job(self, job_id: str) -> dict[str, Any]:
        return await self.actor.close_job.remote(job_id)

    async def job_stats(self, job_id: str) -> dict[str, Any] | None:
        return await self.actor.job_stats.remote(job_id)

    async def cancel(self, search_id: str) -> bool:
        return await self.actor.cancel.remote(search_id)

    async def cancel_job(self, job_id: str) -> int:
        return await self.actor.cancel_job.remote(job_id)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.shutdown)

    async def run(
        self, problems: Iterable[Problem], strategy: str | None = None, budget: str | Budget | None = None,
        params: dict[str, Any] | None = None,
    ) -> AsyncIterator[tuple[Problem, SearchResult]]:
        problems = list(problems)
        by_id = {p.id: p for p in problems}
        if len(by_id) != len(problems):
            raise ValueError("problem ids must be unique within one run")
        gen = self.actor.run_stream.remote([problem_to_dict(p) for p in problems], strategy, _budget_arg(budget), params)
        async for ref in gen:
            pid, d = await ref
            yield by_id[pid], SearchResult.from_dict(d)

    async def stats(self) -> dict[str, Any]:
        return await self.actor.stats.remote()

    async def scale(self, policy: int | None = None, reward: int | None = None) -> dict[str, int]:
        return await self.actor.scale.remote(policy, reward)

    async def health(self) -> dict[str, Any]:
        return await self.actor.health.remote()

    def shutdown(self) -> None:
        try:
            ray.get(self.actor.shutdown.remote())
        finally:
            ray.kill(self.actor)

"""Replica actors: one engine each, hosted in an async Ray actor.

A replica takes many requests in flight (its engine batches internally) up to a cap, and keeps
the numbers a pool and a benchmark need: busy time, requests served, tokens. Replicas restart
on failure (`max_restarts=-1`); the pool, not Ray, retries a failed call, on another replica,
so tasks are not retried by Ray (`max_task_retries=0`) and a crash surfaces at once.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import ray

from ponder.actors import wire
from ponder.actors.engine import GeneratedStep, ScoreRequest, ScoreResult, StepRequest
from ponder.config import ClusterConfig, EngineConfig

# Builds the engine inside the actor; the default is the engine factory. Tests pass their own
# (a picklable callable) to host fakes.
EngineBuilder = Callable[[EngineConfig], Any]


@dataclass
class ReplicaStats:
    calls: int = 0
    requests: int = 0
    tokens: int = 0
    errors: int = 0
    busy_s: float = 0.0  # wall time with at least one call in flight
    inflight: int = 0
    max_inflight_seen: int = 0


class _Replica:
    """What both replica kinds share: the engine, the in-flight cap and the books."""

    role = ""

    def __init__(self, engine_cfg: EngineConfig, max_inflight: int = 4, builder: EngineBuilder | None = None):
        self.engine_cfg = engine_cfg
        self.engine = (builder or self._default_builder())(engine_cfg)
        self._sem = asyncio.Semaphore(max(1, max_inflight))
        self._stats = ReplicaStats()
        self._busy_since: float | None = None
        self._started = time.perf_counter()
        # Work (samples) in flight or queued here, per caller (a pool's token) and in total: a
        # packed reply tells its caller what the others have here (see `_packed`).
        self._load: dict[str, int] = {}
        self._load_total = 0

    @staticmethod
    def _default_builder() -> EngineBuilder:
        raise NotImplementedError

    async def _call(self, fn: Callable, requests: list, count_tokens: Callable[[Any], int]) -> list:
        async with self._sem:
            st = self._stats
            if st.inflight == 0:
                self._busy_since = time.perf_counter()
            st.inflight += 1
            st.max_inflight_seen = max(st.max_inflight_seen, st.inflight)
            try:
                results = await fn(requests)
            except Exception:
                st.errors += 1
                raise
            finally:
                st.inflight -= 1
                if st.inflight == 0 and self._busy_since is not None:
                    st.busy_s += time.perf_counter() - self._busy_since
                    self._busy_since = None
            st.calls += 1
            st.requests += len(requests)
            st.tokens += sum(count_tokens(r) for r in results)
            return results

    async def _packed(self, call: Callable, data: bytes) -> bytes:
        """A packed call (`ponder.actors.wire`): unpack, run, and answer with the results and the
        work the replica's other callers (other scheduler shards' pools) have here now."""
        requests, caller = wire.unpack_call(self.role, data)
        work = sum(max(1, getattr(r, "n", 1)) for r in requests)
        load = self._load
        load[caller] = load.get(caller, 0) + work
        self._load_total += work
        try:
            results = await call(requests)
        finally:
            self._load_total -= work
            left = load[caller] - work
            if left:
                load[caller] = left
            else:
                del load[caller]
        return wire.pack_reply(self.role, results, self._load_total - load.get(caller, 0))

    async def health(self) -> dict[str, Any]:
        info = self.engine.info()
        return {
            "role": self.role,
            "ok": True,
            "pid": os.getpid(),
            "node_id": ray.get_runtime_context().get_node_id(),
            "engine": info.kind,
            "model": info.model,
        }

    async def stats(self) -> dict[str, Any]:
        d = asdict(self._stats)
        if self._busy_since is not None:
            d["busy_s"] += time.perf_counter() - self._busy_since
        d["uptime_s"] = time.perf_counter() - self._started
        d["load"] = self._load_total
        cache = self.engine.info().extra.get("prefix_cache")  # the engine's own counters (vllm, hf)
        if cache is not None:
            d["prefix_cache"] = cache
        return d


def _policy_tokens(samples: list[list[GeneratedStep]]) -> int:
    return sum(step.tokens for steps in samples for step in steps)


class PolicyReplicaImpl(_Replica):
    role = "policy"

    @staticmethod
    def _default_builder() -> EngineBuilder:
        from ponder.actors.factory import build_policy

        return build_policy

    async def generate(self, requests: list[StepRequest]) -> list[list[list[GeneratedStep]]]:
        return await self._call(self.engine.generate, requests, _policy_tokens)

    async def generate_packed(self, data: bytes) -> bytes:
        """`generate` over the wire format (`ponder.actors.wire`): what pools call."""
        return await self._packed(self.generate, data)


class RewardReplicaImpl(_Replica):
    role = "reward"

    @staticmethod
    def _default_builder() -> EngineBuilder:
        from ponder.actors.factory import build_reward

        return build_reward

    async def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        return await self._call(self.engine.score, requests, lambda r: r.tokens)

    async def score_packed(self, data: bytes) -> bytes:
        """`score` over the wire format (`ponder.actors.wire`): what pools call."""
        return await self._packed(self.score, data)


# The Ray actor classes. Resources are set per pool with `.options(...)` (see `actor_options`).
PolicyReplica = ray.remote(max_restarts=-1, max_task_retries=0)(PolicyReplicaImpl)
RewardReplica = ray.remote(max_restarts=-1, max_task_retries=0)(RewardReplicaImpl)


def cluster_has_gpus() -> bool:
    return ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0


def actor_options(role: str, cluster: ClusterConfig) -> dict[str, Any]:
    """Ray options for one replica of `role` ("policy" or "reward"): a GPU share when the
    cluster has GPUs, else CPUs; custom resources pin each pool to its nodes."""
    if role not in ("policy", "reward"):
        raise ValueError(f"replica role must be 'policy' or 'reward', got {role!r}")
    resources = dict(cluster.policy_resources if role == "policy" else cluster.reward_resources)
    opts: dict[str, Any] = {
        # Calls beyond the in-flight cap wait inside the actor; a few extra slots keep
        # health() and stats() answering while the engine is saturated.
        "max_concurrency": max(1, cluster.max_inflight_per_replica) * 4 + 4,
        "num_cpus": cluster.cpus_per_replica,
    }
    if cluster.gpus_per_replica > 0 and cluster_has_gpus():
        opts["num_gpus"] = cluster.gpus_per_replica
    if resources:
        opts["resources"] = resources
    return opts


def make_replica(
    role: str,
    engine_cfg: EngineConfig,
    cluster: ClusterConfig,
    builder: EngineBuilder | None = None,
    name: str | None = None,
    detached: bool = False,
) -> Any:
    cls = PolicyReplica if role == "policy" else RewardReplica
    opts = actor_options(role, cluster)
    if name:
        opts["name"] = name
    if detached:  # outlives the worker that creates it (see ponder/actors/owner.py)
        opts["lifetime"] = "detached"
    return cls.options(**opts).remote(engine_cfg, cluster.max_inflight_per_replica, builder)

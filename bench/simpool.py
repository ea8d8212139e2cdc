"""Simulated replica pools in one process: `ReplicaPool`'s routing over in-process replicas.

Each member is the body of the Ray replica actor (`PolicyReplicaImpl` / `RewardReplicaImpl`)
hosting one sim engine, called directly instead of through Ray. Routing, affinity, in-flight
caps and retries are `ReplicaPool`'s own code; only actor creation is replaced. Thirteen Ray
actors on this machine's two shared cores would make the timings measure CPU contention rather
than the scheduling, so the benchmark runs the pools in-process on a virtual clock
(`bench.clock`); the Ray path is the same runner and pool code with `.remote` calls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

from ponder.actors.pool import ReplicaPool
from ponder.actors.replica import PolicyReplicaImpl, RewardReplicaImpl
from ponder.actors.sim import SimPolicy, SimReward
from ponder.config import ClusterConfig, EngineConfig


class _Method:
    """`handle.method.remote(args)` for an in-process object: the coroutine itself."""

    def __init__(self, fn: Any):
        self._fn = fn

    def remote(self, *args: Any) -> Any:
        return self._fn(*args)


class LocalHandle:
    """What a pool calls on a replica actor, for a replica body in this process."""

    def __init__(self, impl: Any):
        for name in ("generate", "generate_packed", "score", "score_packed", "health", "stats"):
            if hasattr(impl, name):
                setattr(self, name, _Method(getattr(impl, name)))


class LocalPool(ReplicaPool):
    """A `ReplicaPool` whose replicas are in-process engines (given up front, one per replica)."""

    packed = False  # nothing crosses a process: no wire format

    def __init__(self, role: str, engines: list[Any], max_inflight_per_replica: int = 4, **pool_opts: Any):
        cluster = ClusterConfig(address=None, max_inflight_per_replica=max_inflight_per_replica)
        super().__init__(role, EngineConfig(kind="sim"), cluster, **pool_opts)
        self.engines = list(engines)
        self._next: Iterator[Any] = iter(self.engines)

    async def start(self, n: int | None = None) -> LocalPool:
        await super().start(len(self.engines) if n is None else n)
        return self

    async def _spawn(self) -> Any:  # replaces actor creation; the rest of ReplicaPool is unchanged
        engine = next(self._next)
        cls = PolicyReplicaImpl if self.role == "policy" else RewardReplicaImpl
        return LocalHandle(cls(self.engine_cfg, self.cap, builder=lambda _cfg, e=engine: e))

    def device_busy_s(self) -> float:
        """Busy seconds so far, summed over the replicas' simulated devices."""
        now = asyncio.get_running_loop().time()
        return sum(e.device.busy_seconds(now) for e in self.engines)

    def device_batches(self) -> tuple[int, int]:
        return sum(e.device.batches for e in self.engines), sum(e.device.requests for e in self.engines)

    def device_seqs(self) -> int:
        """Sequences summed over batches (static) or steps (continuous)."""
        return sum(e.device.seqs for e in self.engines)

    def device_prefill(self) -> int:
        return sum(e.device.prefill_tokens for e in self.engines)


async def sim_pools(policy_opts: dict[str, Any], reward_opts: dict[str, Any], policy_replicas: int = 8,
                    reward_replicas: int = 4, max_inflight_per_replica: int = 4,
                    wrap: Callable[[Any], Any] = lambda engine: engine, pool_opts: dict[str, Any] | None = None
                    ) -> tuple[LocalPool, LocalPool]:
    """Started policy and reward pools of fresh sim engines with the given options (each engine
    passed through `wrap`, e.g. to time it; `pool_opts` go to `ReplicaPool`, e.g. affinity)."""
    policy = LocalPool("policy", [wrap(SimPolicy(**policy_opts)) for _ in range(policy_replicas)],
                       max_inflight_per_replica, **(pool_opts or {}))
    reward = LocalPool("reward", [wrap(SimReward(**reward_opts)) for _ in range(reward_replicas)],
                       max_inflight_per_replica, **(pool_opts or {}))
    await policy.start()
    await reward.start()
    return policy, reward

"""Autoscaling of the replica pools on search backlog.

Each pool has its own autoscaler (policy and PRM load differ by strategy: with the shipped PRM,
PRM tokens are 3x the policy's for best-of-16 and 11x for beam search at N=16). Every interval it
reads the pool's backlog from the scheduler's batcher — requests waiting for the pool plus those
in flight — and the rate the pool served requests at recently, and:
- grows the pool (up to its max) while the backlog would take longer than `autoscale_target_s`
  to serve, in proportion to the excess;
- shrinks it by one replica (down to its min) after `autoscale_idle_s` in which the backlog
  stayed under a quarter of the target.
A replica the cluster has no room for stays pending: that pending actor is the demand the Ray
autoscaler (KubeRay's in-tree autoscaler, the cluster launcher's monitor) adds a node for; a
retired replica leaves its node idle, and the Ray autoscaler removes idle nodes. Serve's own
autoscaling scales the ingress; this scales the pools behind it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class PoolAutoscaler:
    role: str
    pool: Any  # ReplicaPool: .size, async .scale(n)
    batcher: Any  # Batcher: .queued, .inflight_requests, .stats.requests
    lo: int
    hi: int
    target_s: float
    idle_s: float
    rate: float = 0.0  # requests/s served, smoothed
    backlog_s: float = 0.0
    scalings: list[dict[str, Any]] = field(default_factory=list)
    _last: tuple[float, int] | None = None
    _calm_since: float | None = None
    _task: asyncio.Task | None = None

    def observe(self, now: float) -> int:
        """Update the served rate and backlog; returns the requests waiting or in flight."""
        done = self.batcher.stats.requests
        if self._last is not None and now > self._last[0]:
            fresh = (done - self._last[1]) / (now - self._last[0])
            self.rate = fresh if self.rate == 0 else 0.5 * self.rate + 0.5 * fresh
        self._last = (now, done)
        waiting = self.batcher.queued + self.batcher.inflight_requests
        self.backlog_s = waiting / self.rate if self.rate > 0 else (math.inf if waiting else 0.0)
        return waiting

    def decide(self, now: float, size: int) -> int:
        """The size the pool should have now (pure given the observed backlog)."""
        if self.backlog_s > self.target_s:
            self._calm_since = None
            want = size + 1 if math.isinf(self.backlog_s) else math.ceil(size * self.backlog_s / self.target_s)
            return min(self.hi, max(size + 1, want))
        if self.backlog_s < self.target_s / 4:
            if self._calm_since is None:
                self._calm_since = now
            elif now - self._calm_since >= self.idle_s and size > self.lo:
                self._calm_since = now  # one replica per idle period
                return size - 1
        else:
            self._calm_since = None
        return max(self.lo, min(self.hi, size))

    async def step(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.observe(now)
        if self._task is not None and not self._task.done():
            return  # a scaling is under way (a new replica may wait minutes for its node)
        size = self.pool.size
        want = self.decide(now, size)
        if want != size:
            self.scalings.append({"at": time.time(), "from": size, "to": want, "backlog_s": self.backlog_s,
                                  "rate": self.rate})
            log.info("%s pool: %d -> %d replicas (backlog %.1fs at %.1f req/s)", self.role, size, want,
                     self.backlog_s, self.rate)
            self._task = asyncio.get_running_loop().create_task(self._scale(want))

    async def _scale(self, n: int) -> None:
        try:
            await self.pool.scale(n)
        except Exception as e:  # e.g. no node came for the new replica: try again at the next step
            log.warning("%s pool: scaling to %d failed: %s", self.role, n, e)
            self.scalings.append({"at": time.time(), "failed": str(e)[:200]})

    def stats(self) -> dict[str, Any]:
        return {"size": self.pool.size, "min": self.lo, "max": self.hi, "backlog_s": self.backlog_s,
                "rate": self.rate, "scaling": self._task is not None and not self._task.done(),
                "scalings": list(self.scalings[-20:])}


async def run_autoscalers(scalers: list[PoolAutoscaler], interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        for s in scalers:
            try:
                await s.step()
            except Exception as e:  # never let a bad reading stop the loop
                log.warning("%s autoscaler: %s", s.role, e)

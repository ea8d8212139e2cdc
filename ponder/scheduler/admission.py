"""Admission of interactive searches: how many run at once and how many may wait, in total and
per tenant. Beyond the waiting room a request is refused at once (`Overloaded`, an HTTP 429 with
`Retry-After`), never queued without bound. Waiters are admitted by priority (lower first), then
arrival, skipping a tenant already at its running limit, so one tenant cannot fill every slot.

Job work does not pass through here: the job worker bounds its own concurrency, and its engine
requests queue behind interactive ones in the batchers (`ponder.scheduler.batcher`).
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

from ponder.config import ConfigError


class Overloaded(Exception):
    """No room for the request; `retry_after_s` is when a slot is likely to be free."""

    def __init__(self, reason: str, retry_after_s: float):
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


@dataclass
class AdmissionLimits:
    max_running: int = 64
    max_queued: int = 256
    tenant_max_running: int = 64
    tenant_max_queued: int = 256

    def validate(self) -> None:
        for name in ("max_running", "tenant_max_running"):
            if getattr(self, name) < 1:
                raise ConfigError(f"api.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_queued", "tenant_max_queued"):
            if getattr(self, name) < 0:
                raise ConfigError(f"api.{name} must be at least 0, got {getattr(self, name)}")


@dataclass(order=True)
class _Waiter:
    priority: int
    seq: int
    tenant: str = field(compare=False)
    admitted: asyncio.Future = field(compare=False)


class Admission:
    def __init__(self, limits: AdmissionLimits | None = None):
        self.limits = limits or AdmissionLimits()
        self.running: Counter[str] = Counter()
        self.queued: Counter[str] = Counter()
        self._waiters: list[_Waiter] = []
        self._seq = itertools.count()
        self._durations: deque[float] = deque(maxlen=64)  # recent search durations, for Retry-After
        self.rejected = 0
        self.admitted = 0

    @property
    def total_running(self) -> int:
        return sum(self.running.values())

    @property
    def total_queued(self) -> int:
        return sum(self.queued.values())

    def configure(self, limits: AdmissionLimits) -> None:
        self.limits = limits
        self._wake()

    def retry_after(self) -> float:
        """Seconds until a slot is likely free: a search's recent mean duration x the queue
        ahead, per running slot; at least 1 s."""
        mean = sum(self._durations) / len(self._durations) if self._durations else 1.0
        ahead = self.total_queued + 1
        return max(1.0, math.ceil(mean * ahead / max(1, self.limits.max_running)))

    def _may_run(self, tenant: str) -> bool:
        return (self.total_running < self.limits.max_running
                and self.running[tenant] < self.limits.tenant_max_running)

    async def acquire(self, tenant: str, priority: int = 0) -> None:
        """Wait for a running slot; `Overloaded` at once when the waiting room is full."""
        w = self.enter(tenant, priority)
        if w is not None:
            await self.wait(w)

    def enter(self, tenant: str, priority: int = 0) -> _Waiter | None:
        """The part of `acquire` that does not wait: a running slot now (None), a place in line
        (a waiter to pass to `wait`, or to `leave`), or `Overloaded`."""
        if not self._waiters and self._may_run(tenant):
            self._start(tenant)
            return None
        lim = self.limits
        if self.total_queued >= lim.max_queued:
            self._reject()
            raise Overloaded(f"server busy: {self.total_running} searches running and {self.total_queued} "
                             "waiting", self.retry_after())
        if self.queued[tenant] >= lim.tenant_max_queued:
            self._reject()
            raise Overloaded(f"too many requests for tenant {tenant!r}: {self.running[tenant]} running and "
                             f"{self.queued[tenant]} waiting", self.retry_after())
        w = _Waiter(priority, next(self._seq), tenant, asyncio.get_running_loop().create_future())
        self._waiters.append(w)
        self._waiters.sort()
        self.queued[tenant] += 1
        self._wake()  # those ahead may be waiting only for their tenant's limit
        return w

    async def wait(self, w: _Waiter) -> None:
        try:
            await w.admitted
        except BaseException:
            self.leave(w)
            raise

    def leave(self, w: _Waiter) -> None:
        """A waiter goes away: out of the line, or, admitted just as it went, out of its slot."""
        if w in self._waiters:
            self._waiters.remove(w)
            self.queued[w.tenant] -= 1
            w.admitted.cancel()
        elif w.admitted.done() and not w.admitted.cancelled():
            self.release(w.tenant)

    def release(self, tenant: str, duration_s: float | None = None) -> None:
        self.running[tenant] -= 1
        if duration_s is not None:
            self._durations.append(duration_s)
        self._wake()

    def _start(self, tenant: str) -> None:
        self.running[tenant] += 1
        self.admitted += 1

    def _reject(self) -> None:
        self.rejected += 1

    def _wake(self) -> None:
        i = 0
        while i < len(self._waiters) and self.total_running < self.limits.max_running:
            w = self._waiters[i]
            if w.admitted.done():  # its caller was cancelled and has not left the line yet
                self._waiters.pop(i)
                self.queued[w.tenant] -= 1
                continue
            if self.running[w.tenant] >= self.limits.tenant_max_running:
                i += 1  # this tenant is full; the next one in line may run
                continue
            self._waiters.pop(i)
            self.queued[w.tenant] -= 1
            self._start(w.tenant)
            w.admitted.set_result(None)

    def stats(self) -> dict[str, Any]:
        return {"running": self.total_running, "queued": self.total_queued, "admitted": self.admitted,
                "rejected": self.rejected,
                "tenants": {t: {"running": self.running[t], "queued": self.queued[t]}
                            for t in set(self.running) | set(self.queued) if self.running[t] or self.queued[t]}}

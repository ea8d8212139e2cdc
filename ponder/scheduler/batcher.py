"""Micro-batching of requests from all live search trees into engine (or pool) calls.

Searches submit small lists of requests; the batcher gathers what arrives within a short
window (or until `max_batch`) and makes one call. Several batches may be in flight at once, so
a slow PRM batch never holds up generation for other trees. Busy time (wall time with at least
one call in flight) is recorded per batcher, which is how pool utilisation is reported.

A failing call fails alone: when an engine call raises, the batch is split in halves and each
half is tried again, so only the request that breaks the engine (a problem the model cannot
read, a prompt too long for it) gets the error and its batch-mates get their results
(log2(batch) extra calls per bad request). `EngineUnavailable` (no replica at all) is handed to
the whole batch at once: splitting cannot help.

Waiting requests are ordered by priority: with `max_inflight` calls in flight (what the replicas
take; a callable follows the pool's size) the rest wait here, and the next batch takes the most
urgent first. Interactive searches (priority class 0) go ahead of job work (class 1), so a large
eval job on the same pools does not starve serving. Among job work the order is the rank (a
search that told the door the value of its compute, `ctx.regrant(..., value=v)`, ranks -v: the
searches where compute changes answers go first), then `job_order(request)` when set (e.g. the
searches with the most work left first), then arrival. A request whose search is cancelled while
it waits is never sent: its search gets `SearchCancelled`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from ponder.actors.engine import EngineUnavailable, GeneratedStep, ScoreRequest, ScoreResult, StepRequest

Req = TypeVar("Req")
Res = TypeVar("Res")

Priority = tuple[int, float]  # (class, rank): lower goes first
JOB_WORK: Priority = (1, 0.0)


class SearchCancelled(Exception):
    """The search that sent this request was cancelled before the request left the queue."""


@dataclass
class BatchStats:
    calls: int = 0
    requests: int = 0
    busy_s: float = 0.0
    max_batch_seen: int = 0
    splits: int = 0  # failed calls split in two to isolate a bad request


class Batcher(Generic[Req, Res]):
    def __init__(
        self,
        fn: Callable[[list[Req]], Awaitable[list[Res]]],
        max_batch: int = 64,
        window_s: float = 0.002,
        max_inflight: int | Callable[[], int] | None = None,
    ):
        self._fn = fn
        self.max_batch = max_batch
        self.window_s = window_s
        # heap of (priority, arrival, request, future, alive)
        self._pending: list[tuple[Priority, int, Req, asyncio.Future, Callable[[], bool] | None]] = []
        self._arrival = itertools.count()
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._inflight = 0  # calls in flight, split halves included (for busy time)
        self._launched = 0  # top-level batches in flight (for the capacity)
        self.inflight_requests = 0  # requests of those batches (the autoscaler's backlog counts them)
        self._capacity = max_inflight
        self._busy_since: float | None = None
        self._tasks: set[asyncio.Task] = set()
        self.stats = BatchStats()
        # Order among job work (class >= 1; interactive work always goes first): None is
        # arrival order; a function of the request gives a sort key, lower first (e.g. the
        # searches with the most work left first, so a finite job's tail is short).
        self.job_order: Callable[[Req], Any] | None = None

    def capacity(self) -> float:
        cap = self._capacity() if callable(self._capacity) else self._capacity
        return float("inf") if not cap else max(1, cap)

    @property
    def queued(self) -> int:
        return len(self._pending)

    async def submit(self, requests: list[Req], priority: Priority = JOB_WORK,
                     alive: Callable[[], bool] | None = None) -> list[Res]:
        if not requests:
            return []
        loop = asyncio.get_running_loop()
        futs = []
        order = self.job_order if priority[0] >= 1 else None
        for r in requests:
            f = loop.create_future()
            key = priority if order is None else (*priority, order(r))
            heapq.heappush(self._pending, (key, next(self._arrival), r, f, alive))
            futs.append(f)
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif self._timer is None:
            if self.window_s > 0:
                self._timer = loop.call_later(self.window_s, self._flush)
            else:
                self._timer = loop.call_soon(self._flush)
        return list(await asyncio.gather(*futs))

    def _take(self) -> list[tuple[Req, asyncio.Future]]:
        batch = []
        while self._pending and len(batch) < self.max_batch:
            _, _, r, f, alive = heapq.heappop(self._pending)
            if f.done():  # its search was cancelled while it waited
                continue
            if alive is not None and not alive():
                f.set_exception(SearchCancelled())
                continue
            batch.append((r, f))
        return batch

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._pending and self._launched < self.capacity():
            batch = self._take()
            if not batch:
                continue
            self._launched += 1
            task = asyncio.get_running_loop().create_task(self._run_top(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run_top(self, batch: list[tuple[Req, asyncio.Future]]) -> None:
        self.inflight_requests += len(batch)
        try:
            await self._run(batch)
        finally:
            self.inflight_requests -= len(batch)
            self._launched -= 1
            if self._pending:  # what waited for this slot has waited long enough: no window
                self._flush()

    async def _run(self, batch: list[tuple[Req, asyncio.Future]]) -> None:
        self._enter()
        split = False
        try:
            results = await self._fn([r for r, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"engine returned {len(results)} results for {len(batch)} requests")
            for (_, f), res in zip(batch, results):
                if not f.done():
                    f.set_result(res)
        except Exception as e:
            if len(batch) > 1 and not isinstance(e, EngineUnavailable):
                split = True  # find the request that broke the call; the others must not fail with it
                self.stats.splits += 1
            else:
                for _, f in batch:
                    if not f.done():
                        f.set_exception(e)
        except BaseException as e:  # cancelled: hand it to every waiting search
            for _, f in batch:
                if not f.done():
                    f.set_exception(e)
        finally:
            self._exit(len(batch))
        if split:
            half = len(batch) // 2
            await asyncio.gather(self._run(batch[:half]), self._run(batch[half:]))

    def _enter(self) -> None:
        if self._inflight == 0:
            self._busy_since = time.perf_counter()
        self._inflight += 1

    def _exit(self, n: int) -> None:
        self._inflight -= 1
        self.stats.calls += 1
        self.stats.requests += n
        self.stats.max_batch_seen = max(self.stats.max_batch_seen, n)
        if self._inflight == 0 and self._busy_since is not None:
            self.stats.busy_s += time.perf_counter() - self._busy_since
            self._busy_since = None

    def busy_seconds(self) -> float:
        extra = time.perf_counter() - self._busy_since if self._busy_since is not None else 0.0
        return self.stats.busy_s + extra


class BatchedPolicy:
    """A `PolicyEngine` front that batches across searches before calling the real engine."""

    def __init__(self, engine: Any, max_batch: int = 64, window_s: float = 0.002,
                 max_inflight: int | Callable[[], int] | None = None):
        self.engine = engine
        self.batcher: Batcher[StepRequest, list[list[GeneratedStep]]] = Batcher(
            engine.generate, max_batch, window_s, max_inflight
        )

    async def generate(self, requests: list[StepRequest], priority: Priority = JOB_WORK,
                       alive: Callable[[], bool] | None = None) -> list[list[list[GeneratedStep]]]:
        return await self.batcher.submit(requests, priority, alive)

    def info(self):
        return self.engine.info()


class BatchedReward:
    def __init__(self, engine: Any, max_batch: int = 64, window_s: float = 0.002,
                 max_inflight: int | Callable[[], int] | None = None):
        self.engine = engine
        self.batcher: Batcher[ScoreRequest, ScoreResult] = Batcher(engine.score, max_batch, window_s, max_inflight)

    async def score(self, requests: list[ScoreRequest], priority: Priority = JOB_WORK,
                    alive: Callable[[], bool] | None = None) -> list[ScoreResult]:
        return await self.batcher.submit(requests, priority, alive)

    def info(self):
        return self.engine.info()

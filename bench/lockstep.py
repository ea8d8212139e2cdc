"""The lockstep baselines: batches of problems move through the search in phases.

A lockstep loop: for a batch of problems, generate the next step for every beam of every
problem, wait for all of it, score every new step, wait, select, repeat until the batch's last
problem finishes; then the next batch. Here the same search code (`ponder.search`) runs each
problem, and a barrier stands in for the loop: requests are held until every unfinished search
of the batch is waiting, then sent as one call per pool (the pool splits it over its replicas),
so a phase ends when its slowest replica finishes.

This is *not* how search-and-learn (huggingface/search-and-learn) runs beam search: its beam
search takes one problem at a time (`search_batch_size` must be 1) and puts the policy (vLLM)
and the PRM on the same GPU, the PRM without a prefix cache. `run_search_and_learn` models
that: one lockstep loop of batch 1 per GPU, each GPU running both roles' work one batch at a
time, the problems split over the GPUs in contiguous shards (as its `dataset_start` /
`dataset_end` sharding does). `run_kloops` is the stronger simple baseline: k ordinary
lockstep loops side by side over the same pools.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ponder.actors.engine import ScoreRequest, StepRequest
from ponder.search.types import Problem, SearchResult


class Barrier:
    """Holds requests until all `live` searches wait, then runs each pool's share as one call."""

    def __init__(self, policy_pool: Any, reward_pool: Any):
        self.pools = {"policy": policy_pool, "reward": reward_pool}
        self.live = 0
        self.phases = 0
        self._pending: dict[str, list[tuple[list[Any], asyncio.Future]]] = {"policy": [], "reward": []}
        self._tasks: set[asyncio.Task] = set()

    async def call(self, role: str, requests: list[Any]) -> list[Any]:
        done = asyncio.get_running_loop().create_future()
        self._pending[role].append((requests, done))
        self._check()
        return await done

    def leave(self) -> None:
        self.live -= 1
        self._check()

    def _check(self) -> None:
        waiting = sum(len(v) for v in self._pending.values())
        if waiting and waiting == self.live:
            pending, self._pending = self._pending, {"policy": [], "reward": []}
            self.phases += 1
            task = asyncio.get_running_loop().create_task(self._release(pending))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _release(self, pending: dict[str, list[tuple[list[Any], asyncio.Future]]]) -> None:
        async def one(role: str, items: list[tuple[list[Any], asyncio.Future]]) -> None:
            flat = [r for reqs, _ in items for r in reqs]
            pool = self.pools[role]
            try:
                out = await (pool.generate(flat) if role == "policy" else pool.score(flat))
            except BaseException as e:
                for _, done in items:
                    done.set_exception(e)
                return
            at = 0
            for reqs, done in items:
                done.set_result(out[at : at + len(reqs)])
                at += len(reqs)

        await asyncio.gather(*(one(role, items) for role, items in pending.items() if items))


class _Front:
    def __init__(self, barrier: Barrier, role: str):
        self.barrier, self.role = barrier, role

    async def generate(self, requests: list[StepRequest]) -> list[Any]:
        return await self.barrier.call("policy", requests)

    async def score(self, requests: list[ScoreRequest]) -> list[Any]:
        return await self.barrier.call("reward", requests)


async def run_lockstep(runner: Any, problems: list[Problem], batch_size: int, strategy: str, budget: str
                       ) -> tuple[list[SearchResult], int]:
    """Solve `problems` in lockstep batches with `runner`'s search setup; returns the results
    (in order) and the number of phases. The runner's batching fronts are replaced by the barrier
    so each phase is exactly one call per pool."""
    barrier = Barrier(runner.policy.engine, runner.reward.engine)
    runner.policy, runner.reward = _Front(barrier, "policy"), _Front(barrier, "reward")
    results: list[SearchResult] = []
    for start in range(0, len(problems), batch_size):
        batch = problems[start : start + batch_size]
        barrier.live = len(batch)

        async def solve(p: Problem) -> SearchResult:
            try:
                return await runner.solve(p, strategy, budget)
            finally:
                barrier.leave()

        results += await asyncio.gather(*(solve(p) for p in batch))
    return results, barrier.phases


async def run_kloops(make_runner: Any, problems: list[Problem], k: int, batch_size: int, strategy: str,
                     budget: str) -> tuple[list[SearchResult], int]:
    """`k` lockstep loops side by side (one `asyncio.gather`), each over a contiguous share of
    `problems` in batches of `batch_size`, each with its own runner from `make_runner()` (over
    the same pools): k * batch_size searches in flight. Returns the results in order and the
    phases of all loops."""
    share = -(-len(problems) // k)
    parts = [problems[i * share : (i + 1) * share] for i in range(k)]
    outs = await asyncio.gather(*(run_lockstep(make_runner(), part, batch_size, strategy, budget)
                                  for part in parts if part))
    return [r for res, _ in outs for r in res], sum(ph for _, ph in outs)


async def run_search_and_learn(runners: list[Any], problems: list[Problem], strategy: str, budget: str
                               ) -> tuple[list[SearchResult], int]:
    """search-and-learn's beam search: one problem at a time on each GPU (`runners[i]` over the
    policy and PRM engines co-located on GPU i), the problems in contiguous shards."""
    return await run_kloops(iter(runners).__next__, problems, len(runners), 1, strategy, budget)

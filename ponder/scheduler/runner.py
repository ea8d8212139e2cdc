"""`Runner`: many searches as asyncio tasks over one policy and one reward engine.

This is the in-process scheduler. The Ray `Scheduler` actor hosts the same runner with replica
pools as its engines, so local and distributed runs share one code path.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import AsyncIterator, Iterable
from typing import Any

from ponder.config import Budget, PonderConfig
from ponder.scheduler.batcher import BatchedPolicy, BatchedReward
from ponder.scheduler.context import EngineContext
from ponder.search import registry
from ponder.search.types import Problem, SearchResult
from ponder.tasks.grading import grade


class Runner:
    def __init__(self, policy_engine: Any, reward_engine: Any, config: PonderConfig | None = None):
        self.config = config or PonderConfig()
        sc = self.config.scheduler
        window = sc.batch_window_ms / 1000.0
        self.policy = BatchedPolicy(policy_engine, sc.max_batch, window)
        self.reward = BatchedReward(reward_engine, sc.max_batch, window)
        self.started = time.perf_counter()

    def make_context(self, problem: Problem, tokens: float, **kw: Any) -> EngineContext:
        s = self.config.search
        return EngineContext(
            problem,
            self.policy,
            self.reward,
            limit=tokens,
            prm_cost_ratio=self.config.scheduler.prm_cost_ratio,
            temperature=s.temperature,
            max_step_tokens=s.max_step_tokens,
            max_steps=s.max_steps,
            seed=s.seed,
            **kw,
        )

    async def solve(
        self,
        problem: Problem,
        strategy: str | None = None,
        budget: str | Budget | None = None,
        params: dict[str, Any] | None = None,
    ) -> SearchResult:
        s = self.config.search
        name = strategy or s.strategy
        b = budget if isinstance(budget, Budget) else Budget.parse(budget or s.budget)
        strat = registry.get(name)
        cfg = strat.make_config({**s.params, **(params or {})} if strategy in (None, s.strategy) else (params or {}), n=b.n)
        ctx = self.make_context(problem, b.tokens)
        t0 = time.perf_counter()
        try:
            result = await strat.fn(problem, ctx, cfg)
        except Exception as e:  # one broken search must not take down a whole job
            result = ctx.result(name, None, [], stop_reason="error")
            result.meta["error"] = f"{type(e).__name__}: {e}"
            result.meta["traceback"] = traceback.format_exc(limit=5)
        result.wall_time = time.perf_counter() - t0
        result.compute = ctx.spent
        result.meta.setdefault("budget", b.label())
        if problem.answer is not None:
            result.correct = result.answer is not None and grade(result.answer, problem.answer)
        return result

    async def run(
        self,
        problems: Iterable[Problem],
        strategy: str | None = None,
        budget: str | Budget | None = None,
        params: dict[str, Any] | None = None,
    ) -> AsyncIterator[tuple[Problem, SearchResult]]:
        """Solve `problems` concurrently (up to `max_concurrent_searches`), yielding as they finish."""
        limit = self.config.scheduler.max_concurrent_searches
        queue = iter(problems)
        live: dict[asyncio.Task, Problem] = {}

        def top_up() -> None:
            while len(live) < limit:
                p = next(queue, None)
                if p is None:
                    return
                live[asyncio.ensure_future(self.solve(p, strategy, budget, params))] = p

        top_up()
        while live:
            done, _ = await asyncio.wait(live, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                yield live.pop(task), task.result()
            top_up()

    def utilisation(self) -> dict[str, float]:
        wall = time.perf_counter() - self.started
        return {
            "wall_s": wall,
            "policy_busy": self.policy.batcher.busy_seconds() / wall if wall else 0.0,
            "reward_busy": self.reward.batcher.busy_seconds() / wall if wall else 0.0,
        }

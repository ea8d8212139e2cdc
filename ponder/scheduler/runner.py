"""`Runner`: many searches as asyncio tasks over one policy and one reward engine.

This is the in-process scheduler. The Ray `Scheduler` actor hosts the same runner with replica
pools as its engines, so local and distributed runs share one code path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
import traceback
from collections.abc import AsyncIterator, Iterable
from typing import Any

from ponder.config import Budget, PonderConfig
from ponder.scheduler import auto as _auto  # noqa: F401  (registers strategy "auto")
from ponder.scheduler.allocation import AllocationTable
from ponder.scheduler.batcher import BatchedPolicy, BatchedReward
from ponder.scheduler.context import EngineContext
from ponder.scheduler.ledger import Account, TokenLedger
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
        self._table: AllocationTable | None = None
        self.ledger: TokenLedger | None = None  # the job ledger of the latest run(), for stats
        self.searches = {"started": 0, "finished": 0, "errors": 0}

    @property
    def allocation(self) -> AllocationTable:
        if self._table is None:
            self._table = AllocationTable.load(self.config.scheduler.allocation_table)
        return self._table

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
        *,
        account: Account | None = None,
    ) -> SearchResult:
        """Run one search. With a ledger `account` the search spends against its grant (and
        `auto` weights the grant by difficulty) instead of the per-query token budget."""
        s = self.config.search
        name = strategy or s.strategy
        b = budget if isinstance(budget, Budget) else Budget.parse(budget or s.budget)
        strat = registry.get(name)
        cfg = strat.make_config({**s.params, **(params or {})} if strategy in (None, s.strategy) else (params or {}), n=b.n)
        if strat.name == "auto":
            given = params or {}
            extra: dict[str, Any] = {"account": account}
            if "table" not in given:
                extra["allocation"] = self.allocation
            if "probe_samples" not in given:
                extra["probe_samples"] = self.config.scheduler.probe_samples
            cfg = dataclasses.replace(cfg, **extra)
        ctx = self.make_context(problem, b.tokens)
        if account is not None:
            account.attach(ctx)
        self.searches["started"] += 1
        t0 = time.perf_counter()
        try:
            result = await strat.fn(problem, ctx, cfg)
        except Exception as e:  # one broken search must not take down a whole job
            self.searches["errors"] += 1
            result = ctx.result(name, None, [], stop_reason="error")
            result.meta["error"] = f"{type(e).__name__}: {e}"
            result.meta["traceback"] = traceback.format_exc(limit=5)
        finally:
            if account is not None:
                refund = account.ledger.close(account)
        self.searches["finished"] += 1
        result.wall_time = time.perf_counter() - t0
        result.compute = ctx.spent
        result.meta.setdefault("budget", b.label())
        if account is not None:
            result.meta["grant"] = account.granted
            result.meta["refund"] = refund
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
        """Solve `problems` concurrently (up to `max_concurrent_searches`), yielding as they finish.

        With `scheduler.job_budget` set, or strategy `auto` under a token budget, the problems
        share one job budget through a `TokenLedger` (the per-query token budget x the number
        of problems, unless `job_budget` says otherwise)."""
        limit = self.config.scheduler.max_concurrent_searches
        problems = list(problems)
        self.ledger = ledger = self.job_ledger(problems, strategy, budget)
        queue = iter(problems)
        live: dict[asyncio.Task, Problem] = {}

        def top_up() -> None:
            while len(live) < limit:
                p = next(queue, None)
                if p is None:
                    return
                acct = ledger.open(p.id) if ledger is not None else None
                live[asyncio.ensure_future(self.solve(p, strategy, budget, params, account=acct))] = p

        top_up()
        while live:
            done, _ = await asyncio.wait(live, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                yield live.pop(task), task.result()
            top_up()

    def job_ledger(self, problems: list[Problem], strategy: str | None, budget: str | Budget | None) -> TokenLedger | None:
        sc, s = self.config.scheduler, self.config.search
        if sc.job_budget is not None:
            return TokenLedger(float(Budget.parse(sc.job_budget).tokens), len(problems))
        b = budget if isinstance(budget, Budget) else Budget.parse(budget or s.budget)
        if (strategy or s.strategy) == "auto" and not math.isinf(b.tokens) and problems:
            return TokenLedger(b.tokens * len(problems), len(problems))
        return None

    def stats(self) -> dict[str, Any]:
        """What a benchmark reads: busy fractions, batch sizes, expansions, searches, ledger."""
        wall = time.perf_counter() - self.started
        out: dict[str, Any] = {
            **self.utilisation(),
            "expansion_requests": self.policy.batcher.stats.requests,
            "score_requests": self.reward.batcher.stats.requests,
            "searches": dict(self.searches),
        }
        for role, fr in (("policy", self.policy), ("reward", self.reward)):
            st = fr.batcher.stats
            out[f"{role}_batches"] = st.calls
            out[f"{role}_mean_batch"] = st.requests / st.calls if st.calls else 0.0
            out[f"{role}_max_batch"] = st.max_batch_seen
        out["wall_s"] = wall
        if self.ledger is not None:
            out["ledger"] = self.ledger.report()
        return out

    def utilisation(self) -> dict[str, float]:
        wall = time.perf_counter() - self.started
        return {
            "wall_s": wall,
            "policy_busy": self.policy.batcher.busy_seconds() / wall if wall else 0.0,
            "reward_busy": self.reward.batcher.busy_seconds() / wall if wall else 0.0,
        }

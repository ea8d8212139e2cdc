"""`Runner`: many searches as asyncio tasks over one policy and one reward engine.

This is the in-process scheduler (`SchedulerAPI`). The Ray `Scheduler` actor hosts the same
runner with replica pools as its engines, so local and distributed runs share one code path.
Per-job state (`JobState`: its ledgers, its live searches) is keyed by job id, so concurrent
jobs never share books.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import re
import time
import traceback
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from ponder.config import Budget, PonderConfig
from ponder.scheduler import auto as _auto  # noqa: F401  (registers strategy "auto")
from ponder.scheduler.admission import Admission, AdmissionLimits, Overloaded
from ponder.scheduler.batcher import JOB_WORK, BatchedPolicy, BatchedReward
from ponder.scheduler.context import EngineContext
from ponder.scheduler.interface import SchedulerAPI, group_label
from ponder.scheduler.ledger import Account, OrderedLedger, TokenLedger
from ponder.search import registry
from ponder.search.types import Problem, SearchResult
from ponder.tasks.grading import DEFAULT_TIMEOUT_S, verdict


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def error_line(e: BaseException) -> str:
    """One line for the user and the record: the remote exception of a Ray task error (not its
    traceback with colour codes, pids and paths), its first line, bounded."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, BaseException):
        e = cause
    text = _ANSI.sub("", str(e)).strip()
    first = " ".join(text.splitlines()[0].split()) if text else ""
    line = f"{type(e).__name__}: {first}" if first else type(e).__name__
    return line if len(line) <= 300 else line[:299] + "…"


def make_ledger(total: float, queries: int | None, window: int) -> TokenLedger:
    """A job's ledger: ordered (grants independent of timing) when the number of queries is
    known, else the plain one (fair share = all that is free)."""
    return OrderedLedger(total, queries, window=window) if queries else TokenLedger(total, None)


@dataclass(eq=False)
class JobState:
    id: str
    ledger: TokenLedger | None = None  # the job budget, across all its keys
    group_sizes: dict[str, int] = field(default_factory=dict)
    groups: dict[str, TokenLedger] = field(default_factory=dict)  # auto's per-(strategy, budget) ledgers
    window: int = 32  # searches in flight: the ordered ledgers' window
    live: set[str] = field(default_factory=set)  # search ids running now
    cancelled: bool = False
    searches: dict[str, int] = field(default_factory=lambda: {"started": 0, "finished": 0, "errors": 0, "cancelled": 0})
    spent: float = 0.0

    def ledger_for(self, strategy: str, budget: Budget) -> TokenLedger | None:
        if self.ledger is not None:
            return self.ledger
        if strategy != "auto" or math.isinf(budget.tokens):
            return None
        label = group_label(strategy, budget.label())
        if label not in self.groups:
            n = self.group_sizes.get(label) or None
            self.groups[label] = make_ledger(budget.tokens * (n or 1), n, self.window)
        return self.groups[label]

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {"job": self.id, "searches": dict(self.searches), "spent": self.spent,
                               "live": len(self.live), "cancelled": self.cancelled}
        if self.ledger is not None:
            out["ledger"] = self.ledger.report()
        if self.groups:
            out["groups"] = {k: v.report() for k, v in self.groups.items()}
        return out


class Runner(SchedulerAPI):
    def __init__(self, policy_engine: Any, reward_engine: Any, config: PonderConfig | None = None):
        self.config = config or PonderConfig()
        sc = self.config.scheduler
        window = sc.batch_window_ms / 1000.0
        self.policy = BatchedPolicy(policy_engine, sc.policy_max_batch or sc.max_batch, window,
                                    self._capacity(policy_engine))
        self.reward = BatchedReward(reward_engine, sc.max_batch, window, self._capacity(reward_engine))
        self.admission = Admission(AdmissionLimits(**self.config.api.admission()))
        self.started = time.perf_counter()
        self.ledger: TokenLedger | None = None  # the ledger of the latest run(), for stats
        self.searches = {"started": 0, "finished": 0, "errors": 0, "cancelled": 0}
        self.last_error: str | None = None  # the latest failed search's one-line error (stats)
        self.tokens = {"policy": 0, "prm": 0, "cost": 0.0}  # spent by every finished search
        self.jobs: dict[str, JobState] = {}
        self._live: dict[str, EngineContext] = {}  # search id -> its context

    def _capacity(self, engine: Any) -> Any:
        """Engine calls in flight for a pool: what its replicas take now (it follows scaling)."""
        fixed = self.config.scheduler.max_inflight_calls
        if fixed is not None:
            return fixed
        if not hasattr(engine, "size"):
            return None  # an in-process engine: no replicas to queue in front of
        per = self.config.cluster.max_inflight_per_replica
        return lambda: max(1, engine.size) * per

    def make_context(self, problem: Problem, tokens: float, **kw: Any) -> EngineContext:
        s = self.config.search
        return EngineContext(
            problem,
            self.policy,
            self.reward,
            limit=tokens,
            prm_cost_ratio=self.config.scheduler.prm_cost_ratio,
            cache_discount=self.config.scheduler.cache_discount,
            temperature=s.temperature,
            top_p=s.top_p,
            max_step_tokens=s.max_step_tokens,
            max_steps=s.max_steps,
            seed=s.seed,
            **kw,
        )

    # ----- jobs

    async def open_job(self, job_id: str, *, budget: float | None = None, queries: int = 0,
                       groups: dict[str, int] | None = None) -> None:
        if job_id in self.jobs:
            return
        sc = self.config.scheduler
        # The window: 4x the searches in flight, so that a query waits only for a straggler.
        state = JobState(job_id, group_sizes=dict(groups or {}), window=sc.ledger_window or 4 * sc.max_concurrent_searches)
        if budget is not None:
            state.ledger = make_ledger(float(budget), queries or None, state.window)
        self.jobs[job_id] = state

    async def close_job(self, job_id: str) -> dict[str, Any]:
        state = self.jobs.pop(job_id, None)
        return state.report() if state is not None else {}

    async def job_stats(self, job_id: str) -> dict[str, Any] | None:
        state = self.jobs.get(job_id)
        return state.report() if state is not None else None

    async def cancel(self, search_id: str) -> bool:
        ctx = self._live.get(search_id)
        if ctx is None:
            return False
        ctx.cancelled = True  # the context refuses every further expand/score
        return True

    async def cancel_job(self, job_id: str) -> int:
        state = self.jobs.get(job_id)
        if state is None:
            return 0
        state.cancelled = True
        return sum([await self.cancel(sid) for sid in list(state.live)])

    # ----- searches

    async def solve(
        self,
        problem: Problem,
        strategy: str | None = None,
        budget: str | Budget | None = None,
        params: dict[str, Any] | None = None,
        *,
        job: str | None = None,
        search_id: str | None = None,
        account: Account | None = None,
        priority: int | None = None,
        deadline_s: float | None = None,
        on_progress: Any = None,
    ) -> SearchResult:
        """Run one search. Under a job with a ledger (a job budget, or `auto` under a token
        budget) the search spends against its grant (and `auto` weights the grant by
        difficulty) instead of the per-query token budget.

        `priority` makes it interactive: its engine requests go ahead of job work, lower values
        first. At `deadline_s` it stops expanding and returns its best (stop reason
        `deadline`). `on_progress(snapshot)` is called after every expansion and scoring."""
        s = self.config.search
        name = strategy or s.strategy
        b = budget if isinstance(budget, Budget) else Budget.parse(budget or s.budget)
        strat = registry.get(name)
        cfg = strat.make_config({**s.params, **(params or {})} if strategy in (None, s.strategy) else (params or {}), n=b.n)
        state = self.jobs.get(job) if job is not None else None
        if job is not None and state is None:
            raise KeyError(f"job {job!r} is not open")
        sid = search_id or uuid.uuid4().hex
        if account is None and state is not None:
            ledger = state.ledger_for(strat.name, b)
            # auto's account is provisional until its probe tells the ledger what it needs
            account = await ledger.admit(sid, provisional=strat.name == "auto") if ledger is not None else None
        if strat.name == "auto":  # the deployment's table and probe width, unless the request says
            given = params or {}
            extra: dict[str, Any] = {}
            if "table" not in given:
                extra["table"] = self.config.scheduler.allocation_table
            if "probe_samples" not in given:
                extra["probe_samples"] = self.config.scheduler.probe_samples
            cfg = dataclasses.replace(cfg, **extra)
        ctx = self.make_context(problem, b.tokens, priority=JOB_WORK if priority is None else (0, int(priority)))
        ctx.progress.listener = on_progress
        if account is not None:
            account.attach(ctx)
        ctx.cancelled = state is not None and state.cancelled
        self._live[sid] = ctx
        if state is not None:
            state.live.add(sid)
            state.searches["started"] += 1
        self.searches["started"] += 1
        t0 = time.perf_counter()
        refund = 0.0
        try:
            result = await self._search(strat, problem, ctx, cfg, deadline_s)
        except Exception as e:  # one broken search must not take down a whole job
            self.searches["errors"] += 1
            self.last_error = f"{sid}: {error_line(e)}"
            if state is not None:
                state.searches["errors"] += 1
            result = ctx.result(name, None, [], stop_reason="error")
            result.meta["error"] = error_line(e)
            result.meta["traceback"] = traceback.format_exc(limit=5)
        finally:
            self._live.pop(sid, None)
            if account is not None:
                refund = account.ledger.close(account)
            if state is not None:
                state.live.discard(sid)
        if ctx.stopped is not None and not ctx.cancelled and result.stop_reason != "error":
            result.stop_reason = ctx.stopped
        if ctx.cancelled and result.stop_reason != "error":
            result.stop_reason = "cancelled"
            self.searches["cancelled"] += 1
            if state is not None:
                state.searches["cancelled"] += 1
        self.searches["finished"] += 1
        self.tokens["policy"] += ctx.spent.policy_tokens
        self.tokens["prm"] += ctx.spent.prm_tokens
        self.tokens["cost"] += ctx.spent.cost
        result.wall_time = time.perf_counter() - t0
        result.compute = ctx.spent
        if state is not None:
            state.searches["finished"] += 1
            state.spent += ctx.spent.cost
        result.meta.setdefault("budget", b.label())
        result.meta["search_id"] = sid
        if account is not None:
            result.meta["grant"] = account.granted
            result.meta["refund"] = refund
        if problem.answer is not None and result.stop_reason != "cancelled":
            v = await asyncio.to_thread(verdict, result.answer, problem.answer) if result.answer is not None else False
            result.correct = v
            if v is None:  # a runaway comparison was cut off: ungraded, not wrong
                result.meta["grading"] = f"not graded: the comparison ran over {DEFAULT_TIMEOUT_S:g} s"
        return result

    async def _search(self, strat: registry.Strategy, problem: Problem, ctx: EngineContext, cfg: Any,
                      deadline_s: float | None) -> SearchResult:
        """The algorithm itself; with a deadline it is told to stop then (it returns its best
        at its next expansion), and if it has not returned `deadline_grace_s` later it is
        cancelled and the best finished trajectory seen so far is the result."""
        if deadline_s is None:
            return await strat.fn(problem, ctx, cfg)
        loop = asyncio.get_running_loop()
        timer = loop.call_later(max(0.0, deadline_s), ctx.stop, "deadline")
        task = loop.create_task(strat.fn(problem, ctx, cfg))
        try:
            done, _ = await asyncio.wait({task}, timeout=max(0.0, deadline_s) + self.config.api.deadline_grace_s)
            if task in done:
                return task.result()
            ctx.stop("deadline")
            ctx.cancelled = True  # no further engine requests; the algorithm's own answer is lost
            task.cancel()
            best = ctx.progress.best_candidate()
            result = ctx.result(strat.name, best, [best] if best else [], stop_reason="deadline")
            ctx.cancelled = False  # it was stopped by its deadline, not by a client
            return result
        finally:
            timer.cancel()
            if not task.done():
                task.cancel()

    async def stream(
        self,
        problem: Problem,
        strategy: str | None = None,
        budget: str | Budget | None = None,
        params: dict[str, Any] | None = None,
        *,
        search_id: str | None = None,
        tenant: str = "",
        priority: int = 0,
        deadline_s: float | None = None,
        progress: bool = True,
    ) -> AsyncIterator[dict[str, Any]]:
        """One interactive search, admitted against the limits (`api.max_running`...), as events:
        `queued` (when it has to wait), `started`, `progress` (after every expansion and
        scoring, in order), then `result`; or only `rejected` (with `retry_after_s`) when there
        is no room. Closing the iterator early cancels the search."""
        sid = search_id or uuid.uuid4().hex
        t_arrive = time.perf_counter()
        try:  # refused or in line before the first event, so `rejected` is the only one
            waiter = self.admission.enter(tenant, priority)
        except Overloaded as e:
            yield {"event": "rejected", "search_id": sid, "reason": str(e), "retry_after_s": e.retry_after_s}
            return
        if waiter is not None:
            try:
                if not waiter.admitted.done():
                    yield {"event": "queued", "search_id": sid, "queued": self.admission.total_queued - 1}
            except BaseException:  # closed while it waited
                self.admission.leave(waiter)
                raise
            await self.admission.wait(waiter)
        t0 = time.perf_counter()
        if deadline_s is not None:
            deadline_s -= t0 - t_arrive  # time spent waiting for admission counts
        events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        task = asyncio.get_running_loop().create_task(self.solve(
            problem, strategy, budget, params, search_id=sid, priority=priority, deadline_s=deadline_s,
            on_progress=events.put_nowait if progress else None))
        try:
            yield {"event": "started", "search_id": sid, "queued_s": t0 - t_arrive}
            while True:
                get = asyncio.ensure_future(events.get())
                done, _ = await asyncio.wait({task, get}, return_when=asyncio.FIRST_COMPLETED)
                if get in done:
                    yield {"event": "progress", **get.result()}
                    continue
                get.cancel()
                while not events.empty():
                    yield {"event": "progress", **events.get_nowait()}
                result = task.result()
                result.meta["tenant"] = tenant
                result.meta["queued_s"] = t0 - t_arrive
                yield {"event": "result", "result": result.to_dict()}
                return
        finally:
            if not task.done():  # the consumer went away: no further engine requests for it
                if not await self.cancel(sid):
                    task.cancel()  # it has not started yet (solve registers it before its first await)
                await asyncio.gather(task, return_exceptions=True)
            self.admission.release(tenant, time.perf_counter() - t0)

    def set_admission(self, limits: AdmissionLimits) -> None:
        limits.validate()
        self.admission.configure(limits)

    async def run(
        self,
        problems: Iterable[Problem],
        strategy: str | None = None,
        budget: str | Budget | None = None,
        params: dict[str, Any] | None = None,
    ) -> AsyncIterator[tuple[Problem, SearchResult]]:
        """Solve `problems` concurrently (up to `max_concurrent_searches`), yielding as they finish.

        The problems are one ad-hoc job: with `scheduler.job_budget` set, or strategy `auto`
        under a token budget, they share one budget through a `TokenLedger` (the per-query token
        budget x the number of problems, unless `job_budget` says otherwise)."""
        limit = self.config.scheduler.max_concurrent_searches
        problems = list(problems)
        if len({p.id for p in problems}) != len(problems):  # callers key results by id
            raise ValueError("problem ids must be unique within one run")
        job = f"run-{uuid.uuid4().hex}"
        sc = self.config.scheduler
        b = budget if isinstance(budget, Budget) else Budget.parse(budget or self.config.search.budget)
        name = strategy or self.config.search.strategy
        total = None if sc.job_budget is None else float(Budget.parse(sc.job_budget).tokens)
        await self.open_job(job, budget=total, queries=len(problems), groups={group_label(name, b.label()): len(problems)})
        self.ledger = self.jobs[job].ledger_for(name, b) if problems else None
        queue = iter(problems)
        live: dict[asyncio.Task, Problem] = {}

        def top_up() -> None:
            while len(live) < limit:
                p = next(queue, None)
                if p is None:
                    return
                live[asyncio.ensure_future(self.solve(p, strategy, budget, params, job=job))] = p

        try:
            top_up()
            while live:
                done, _ = await asyncio.wait(live, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    yield live.pop(task), task.result()
                top_up()
        finally:
            for task in live:
                task.cancel()
            await self.close_job(job)

    async def close(self) -> None:
        for job in list(self.jobs):
            await self.cancel_job(job)

    async def stats(self) -> dict[str, Any]:
        return self.stats_now()

    def stats_now(self) -> dict[str, Any]:
        """What a benchmark reads: busy fractions, batch sizes, expansions, searches, ledger."""
        wall = time.perf_counter() - self.started
        out: dict[str, Any] = {
            **self.utilisation(),
            "expansion_requests": self.policy.batcher.stats.requests,
            "score_requests": self.reward.batcher.stats.requests,
            "searches": dict(self.searches),
            "last_error": self.last_error,
        }
        for role, fr in (("policy", self.policy), ("reward", self.reward)):
            st = fr.batcher.stats
            out[f"{role}_batches"] = st.calls
            out[f"{role}_mean_batch"] = st.requests / st.calls if st.calls else 0.0
            out[f"{role}_max_batch"] = st.max_batch_seen
        out["wall_s"] = wall
        out["jobs"] = len(self.jobs)
        out["live_searches"] = len(self._live)
        out["policy_queued"] = self.policy.batcher.queued
        out["reward_queued"] = self.reward.batcher.queued
        out["admission"] = self.admission.stats()
        out["tokens"] = dict(self.tokens)
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

"""The one scheduler interface: what the CLI, the job core and the HTTP service call.

Two implementations: `Runner` (in-process engines, `ponder.scheduler.runner`) and
`RemoteRunner` (a client of the Ray `Scheduler` actor, `ponder.scheduler.scheduler`). Callers do
not care where searches run.

Interactive searches (the HTTP service) go through `stream`: admission, priority over job work,
deadlines and progress events. Lifecycle of a job: `open_job` gives it its own state (its ledger when it has a budget), every
`solve(..., job=id)` spends against it, `cancel_job` stops its searches (no further engine
requests; unspent grants go back to the ledger), `close_job` drops the state and returns the
ledger's books. `solve` without a job spends the per-query budget only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable
from typing import Any

from ponder.config import Budget
from ponder.search.types import Problem, SearchResult


class SchedulerAPI(ABC):
    @abstractmethod
    async def solve(
        self,
        problem: Problem,
        strategy: str | None = None,
        budget: str | Budget | None = None,
        params: dict[str, Any] | None = None,
        *,
        job: str | None = None,
        search_id: str | None = None,
    ) -> SearchResult:
        """Run one search. `search_id` names it for `cancel`; `job` spends against that job."""

    @abstractmethod
    def stream(
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
        """One interactive search, admitted against the serving limits, as events: `queued`,
        `started`, `progress`... (unless `progress=False`), `result` (its `SearchResult` as a
        dict); or `rejected` with `retry_after_s`. Its engine requests go ahead of job work (`priority`: lower first); at
        `deadline_s` it returns its best with stop reason `deadline`."""

    @abstractmethod
    async def open_job(self, job_id: str, *, budget: float | None = None, queries: int = 0,
                       groups: dict[str, int] | None = None) -> None:
        """Per-job state. `budget`: the job's total cost for `queries` searches (one ledger across
        all its keys). `groups`: searches per (strategy, budget) label, for `auto` under a token
        budget without a job budget (a ledger per group, the per-query budget x its size).
        Opening an open job again is a no-op (a restarted client re-attaches)."""

    @abstractmethod
    async def close_job(self, job_id: str) -> dict[str, Any]:
        """Drop the job's state; returns its books (searches, spend, ledger report)."""

    @abstractmethod
    async def cancel(self, search_id: str) -> bool:
        """Stop one running search; False if no such search is running."""

    @abstractmethod
    async def cancel_job(self, job_id: str) -> int:
        """Stop every running search of the job and refuse new ones; returns how many stopped."""

    @abstractmethod
    async def job_stats(self, job_id: str) -> dict[str, Any] | None:
        ...

    @abstractmethod
    async def stats(self) -> dict[str, Any]:
        ...

    @abstractmethod
    async def close(self) -> None:
        ...

    @abstractmethod
    def run(self, problems: Iterable[Problem], strategy: str | None = None, budget: str | Budget | None = None,
            params: dict[str, Any] | None = None) -> AsyncIterator[tuple[Problem, SearchResult]]:
        """Solve `problems` as one ad-hoc job under one strategy and budget, yielding as they finish."""


def group_label(strategy: str, budget: str) -> str:
    return f"{strategy}|{budget}"

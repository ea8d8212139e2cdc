"""The job loop: claim items from a `WorkQueue`, run each as a search on a `SchedulerAPI`,
record its result, until every key of the job has a record.

One loop serves every entry point: `ponder eval` runs it over a local queue and a results
file, the cluster's job worker over a Redis queue. Failure handling is split by who failed:
- the search failed (`stop_reason == "error"`): an attempt is counted; after
  `spec.max_attempts` the key ends as its error record;
- the runtime failed (the scheduler call raised: an actor restart, a lost connection): the
  item goes back with no attempt counted, and the job's state is opened again on the
  (restarted) scheduler before more work is sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from ponder.jobs.queue import Claim, Counters, WorkQueue
from ponder.jobs.records import make_record, one_line
from ponder.jobs.spec import JobSpec
from ponder.scheduler.interface import SchedulerAPI, group_label
from ponder.search.types import problem_from_dict

log = logging.getLogger(__name__)


@dataclass
class Progress:
    total: int
    done: int
    errors: int
    accuracy: float | None  # over graded records so far
    cost: float  # tokens spent so far (compute.cost)
    eta_s: float | None  # at this run's rate

    @classmethod
    def of(cls, c: Counters, *, started: float | None = None, done_at_start: int = 0) -> Progress:
        eta = None
        if started is not None:
            ran, elapsed = c.done - done_at_start, time.time() - started
            if ran > 0 and elapsed > 0:
                eta = (c.total - c.done) * elapsed / ran
        acc = c.correct / c.graded if c.graded else None
        return cls(c.total, c.done, c.errors, acc, c.cost, eta)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


OnRecord = Callable[[dict[str, Any], bool], None]  # (record, newly written)


async def open_job_state(scheduler: SchedulerAPI, spec: JobSpec, counters: Counters, pending: list[Claim] | None = None) -> None:
    """Open (or re-open, after a scheduler restart) the job's state: what is left of its budget
    for the keys still to do."""
    left = counters.total - counters.done
    budget = None if spec.job_budget is None else max(1.0, spec.job_budget - counters.cost)
    groups = {group_label(s, b): counters.total // max(1, len(spec.strategies) * len(spec.budgets))
              for s in spec.strategies for b in spec.budgets}
    await scheduler.open_job(spec.id, budget=budget, queries=left, groups=groups)


async def run_job(
    scheduler: SchedulerAPI,
    spec: JobSpec,
    queue: WorkQueue,
    *,
    concurrency: int = 32,
    on_record: OnRecord | None = None,
    cancelled: Callable[[], Awaitable[bool]] | None = None,
    poll_s: float = 0.5,
    renew_s: float = 10.0,
    retry_pause_s: float = 1.0,
    max_runtime_failures: int | None = None,
) -> str:
    """Run the job until every key has a record ("completed") or `cancelled()` turns true
    ("cancelled"). Safe to run in several workers at once over one shared queue.

    `max_runtime_failures`: after this many rounds in a row in which the runtime failed and no
    search finished, raise the last failure (a local eval gives up; a cluster worker, with
    None, waits for the scheduler to come back)."""
    live: dict[asyncio.Task, Claim] = {}
    need_open = True
    last_renew = last_check = time.monotonic()
    outcome = "completed"
    failed_rounds = 0
    try:
        while True:
            now = time.monotonic()
            if cancelled is not None and now - last_check >= poll_s:
                last_check = now
                if await cancelled():
                    outcome = "cancelled"
                    break
            if need_open:
                try:
                    await open_job_state(scheduler, spec, await queue.counters())
                    need_open = False
                except Exception as e:  # the scheduler is restarting: try again shortly
                    log.warning("job %s: cannot open job state (%s); retrying", spec.id, one_line(str(e), 200))
                    await asyncio.sleep(retry_pause_s)
                    continue
            free = concurrency - len(live)
            if free > 0:
                for claim in await queue.claim(free):
                    live[asyncio.ensure_future(_solve(scheduler, spec, claim))] = claim
            if not live:
                if await queue.finished():
                    break
                await asyncio.sleep(poll_s)  # the rest is held by other workers, or queued for retry
                continue
            done, _ = await asyncio.wait(live, timeout=poll_s, return_when=asyncio.FIRST_COMPLETED)
            failure: BaseException | None = None
            ok = 0
            for task in done:
                claim = live.pop(task)
                failed = await _record(spec, queue, claim, task, on_record)
                if failed is None:
                    ok += 1
                else:
                    failure = failed
            if failure is not None:
                need_open = True  # the runtime failed: re-open the job's state before more work
                failed_rounds = 0 if ok else failed_rounds + 1
                if max_runtime_failures is not None and failed_rounds >= max_runtime_failures:
                    raise failure
                await asyncio.sleep(retry_pause_s)
            elif ok:
                failed_rounds = 0
            if time.monotonic() - last_renew >= renew_s and live:
                last_renew = time.monotonic()
                await queue.renew(list(live.values()))
    finally:
        if live:  # cancelled, or the loop itself was stopped: stop the searches, hand the items back
            try:
                await scheduler.cancel_job(spec.id)
            except Exception:
                pass
            await asyncio.gather(*live, return_exceptions=True)
            for claim in live.values():
                await queue.release(claim)
        try:
            await scheduler.close_job(spec.id)
        except Exception:
            pass
    return outcome


async def _solve(scheduler: SchedulerAPI, spec: JobSpec, claim: Claim) -> Any:
    item = claim.item
    return await scheduler.solve(problem_from_dict(item.problem), item.strategy, item.budget,
                                 spec.params.get(item.strategy) or {}, job=spec.id)


async def _record(spec: JobSpec, queue: WorkQueue, claim: Claim, task: asyncio.Task,
                  on_record: OnRecord | None) -> BaseException | None:
    """Store what one finished search gave; the runtime's exception when it (not the search) failed."""
    item = claim.item
    exc = task.exception() if not task.cancelled() else asyncio.CancelledError()
    if exc is not None:
        log.warning("job %s: %s on %s/%s failed in the runtime (%s); requeued", spec.id, item.problem_id,
                    item.strategy, item.budget, one_line(f"{type(exc).__name__}: {exc}", 200))
        await queue.release(claim)
        return exc
    result = task.result()
    if result.stop_reason == "cancelled":
        await queue.release(claim)
        return None
    record = make_record(problem_from_dict(item.problem), result, item.strategy, item.budget, item.fingerprint,
                         dataset=spec.dataset, attempts=claim.attempt + 1)
    if result.stop_reason == "error":
        written = await queue.fail(claim, record["error"] or "search failed", record)
    else:
        written = await queue.complete(claim, record)
    if on_record is not None:
        on_record(record, written)
    return None

"""What a client does with jobs on a store: submit, list, status, results, cancel, wait.
The CLI and the HTTP service call these; none of them needs Ray (the worker does the work)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from ponder.jobs.core import Progress
from ponder.jobs.queue import Counters
from ponder.jobs.redis_store import FINISHED, RedisJobStore
from ponder.jobs.spec import JobSpec
from ponder.search.types import Problem

T = TypeVar("T")


def call(url: str, fn: Callable[[JobClient], Awaitable[T]]) -> T:
    """Run `fn(client)` on a fresh client and close it: for callers outside an event loop."""

    async def go() -> T:
        client = JobClient(url)
        try:
            return await fn(client)
        finally:
            await client.close()

    return asyncio.run(go())


def status_of(meta: dict[str, Any]) -> dict[str, Any]:
    """What `status` shows, from a job's stored metadata (`RedisJobStore.get`/`list`)."""
    c = Counters(**meta["counters"])
    started = meta.get("started_at")
    prog = Progress.of(c, started=started if meta["status"] == "running" else None)
    spec = meta.get("spec") or {}
    return {
        "id": meta["id"],
        "status": meta["status"],
        "owner": meta.get("owner"),
        "dataset": spec.get("dataset"),
        "strategies": spec.get("strategies"),
        "budgets": spec.get("budgets"),
        "created_at": meta.get("created_at"),
        "started_at": started,
        "finished_at": meta.get("finished_at"),
        "error": meta.get("error"),
        **prog.to_dict(),
    }


class JobClient:
    def __init__(self, redis_url: str):
        self.store = RedisJobStore(redis_url)

    async def submit(self, spec: JobSpec, problems: list[Problem]) -> str:
        items = spec.plan(problems)
        await self.store.create(spec.id, spec.to_dict(), items, spec.owner)
        return spec.id

    async def status(self, job_id: str) -> dict[str, Any] | None:
        meta = await self.store.get(job_id)
        return status_of(meta) if meta is not None else None

    async def list(self, owner: str | None = None) -> list[dict[str, Any]]:
        return [status_of(meta) for meta in await self.store.list(owner)]
    async def results(self, job_id: str) -> list[dict[str, Any]]:
        return await self.store.results(job_id)

    async def cancel(self, job_id: str) -> bool:
        return await self.store.cancel(job_id)

    async def wait(self, job_id: str, on_progress: Callable[[dict[str, Any]], None] | None = None,
                   poll_s: float = 0.5, timeout_s: float | None = None) -> dict[str, Any]:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            st = await self.status(job_id)
            if st is None:
                raise KeyError(job_id)
            if on_progress is not None:
                on_progress(st)
            if st["status"] in FINISHED:
                return st
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {st['status']} after {timeout_s:.0f}s")
            await asyncio.sleep(poll_s)

    async def close(self) -> None:
        await self.store.close()

"""`LocalQueue`: the job queue of one local process over a results store (a JSONL file or
memory): `ponder eval --out FILE`.

Planning skips keys the file holds a finished record for, so running the same command again
resumes; error records are retried on the next run. Leases never expire (one worker)."""

from __future__ import annotations

from collections import deque
from typing import Any

from ponder.jobs.queue import Claim, Counters, Item, WorkQueue
from ponder.jobs.store import ResultStore, record_key


class LocalQueue(WorkQueue):
    def __init__(self, items: list[Item], store: ResultStore, max_attempts: int = 3):
        self.store = store
        self.max_attempts = max_attempts
        done = store.done_keys()
        self.keys = {it.key for it in items}
        self.pending = deque(it for it in items if it.key not in done)
        self.already = len(self.keys) - len(self.pending)
        self._attempts: dict[Any, int] = {}
        self._written: set[Any] = set(done)
        self._running = 0
        self._counters = Counters(total=len(self.keys))
        for r in store.records():
            if record_key(r) in self.keys and record_key(r) in done:
                self._count(r)

    def _count(self, record: dict[str, Any]) -> None:
        c = self._counters
        c.done += 1
        c.errors += record.get("stop_reason") == "error"
        if record.get("correct") is not None:
            c.graded += 1
            c.correct += bool(record["correct"])
        c.cost += float((record.get("compute") or {}).get("cost", 0.0))

    async def claim(self, n: int) -> list[Claim]:
        out = []
        while self.pending and len(out) < n:
            item = self.pending.popleft()
            out.append(Claim(item, self._attempts.get(item.key, 0)))
        self._running += len(out)
        return out

    def _write(self, claim: Claim, record: dict[str, Any]) -> bool:
        self._running -= 1
        key = claim.item.key
        if key in self._written:
            return False
        self._written.add(key)
        self.store.append(record)
        self._count(record)
        return True

    async def complete(self, claim: Claim, record: dict[str, Any]) -> bool:
        return self._write(claim, record)

    async def fail(self, claim: Claim, error: str, record: dict[str, Any]) -> bool:
        key = claim.item.key
        self._attempts[key] = self._attempts.get(key, 0) + 1
        if self._attempts[key] >= self.max_attempts:
            return self._write(claim, record)
        self._running -= 1
        self.pending.append(claim.item)
        return False

    async def release(self, claim: Claim) -> None:
        self._running -= 1
        self.pending.appendleft(claim.item)

    async def finished(self) -> bool:
        return not self.pending and self._running == 0

    async def counters(self) -> Counters:
        return self._counters

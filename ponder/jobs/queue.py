"""The work queue of a job: planned items in, one record per key out.

`WorkQueue` is what the job loop (`ponder.jobs.core.run_job`) needs from a store. Two
implementations share its semantics:

- `LocalQueue` (`ponder.jobs.local`): an in-memory list of pending items over a results file
  (`ponder eval --out FILE`): the local JSONL semantics, resumed by re-planning.
- `RedisQueue` (`ponder.jobs.redis_store`): a Redis Stream per job with a consumer group; any
  number of workers on any machines claim items; a crashed worker's items are reclaimed after
  their lease.

Semantics every implementation keeps:
- an item's key is (problem id, strategy, budget label, config fingerprint) (`Item.key`);
- `complete` writes the key's record at most once, ever: a second `complete` of the same key
  (an item run twice after a lease ran out) returns False and writes nothing;
- `fail` counts an attempt; after `max_attempts` failed attempts the key ends as the error
  record handed in (written once too) and the job can complete;
- `release` gives an item back without counting an attempt (the worker, not the search,
  failed: a scheduler restart, a shutdown);
- claimed items not completed, failed or released within the lease are claimable again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

Key = tuple[str, str, str, str]


@dataclass(frozen=True)
class Item:
    """One unit of work: one problem under one (strategy, budget, config)."""

    index: int  # position in the job's plan: results are listed in this order
    problem: dict[str, Any]  # `problem_to_dict` of the Problem
    strategy: str
    budget: str  # Budget.label()
    fingerprint: str

    @property
    def problem_id(self) -> str:
        return str(self.problem["id"])

    @property
    def key(self) -> Key:
        return (self.problem_id, self.strategy, self.budget, self.fingerprint)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "problem": self.problem, "strategy": self.strategy,
                "budget": self.budget, "fingerprint": self.fingerprint}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Item:
        return cls(int(d["index"]), dict(d["problem"]), str(d["strategy"]), str(d["budget"]), str(d["fingerprint"]))


@dataclass
class Claim:
    """An item handed to one worker. `token` is the store's handle (a stream entry id)."""

    item: Item
    attempt: int  # failed attempts so far (0 on the first run)
    token: Any = None


@dataclass
class Counters:
    """A job's progress, as kept by the store (all records written so far)."""

    total: int = 0
    done: int = 0  # keys with a record (errors included)
    errors: int = 0  # keys that ended as error records
    graded: int = 0
    correct: int = 0
    cost: float = 0.0  # compute.cost summed over records
    extra: dict[str, Any] = field(default_factory=dict)


class WorkQueue(ABC):
    max_attempts: int

    @abstractmethod
    async def claim(self, n: int) -> list[Claim]:
        """Up to `n` items for this worker (pending ones first, then reclaimed ones whose lease
        ran out, then new ones); [] when none can be had right now. Never blocks for long."""

    @abstractmethod
    async def complete(self, claim: Claim, record: dict[str, Any]) -> bool:
        """Write the key's record once and retire the item, atomically. False: the key had a
        record already (nothing written)."""

    @abstractmethod
    async def fail(self, claim: Claim, error: str, record: dict[str, Any]) -> bool:
        """Count a failed attempt. Below `max_attempts` the item goes back to the queue (False);
        at `max_attempts` `record` (an error record) is written once and the item retired (True)."""

    @abstractmethod
    async def release(self, claim: Claim) -> None:
        """Give the item back at once, with no attempt counted."""

    async def renew(self, claims: list[Claim]) -> None:
        """Extend the lease of items still running (a heartbeat); a no-op where leases do not expire."""

    @abstractmethod
    async def finished(self) -> bool:
        """True once every key of the job has a record."""

    @abstractmethod
    async def counters(self) -> Counters:
        ...

    async def close(self) -> None:
        pass

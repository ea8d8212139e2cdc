"""Jobs and their work queues in Redis: `RedisJobStore` (job metadata) and `RedisQueue` (the
`WorkQueue` of one job for one worker), over `redis.asyncio`.

Key layout (`P` = prefix, `J` = job id):
- `P:jobs`            sorted set: job ids, score = created_at (newest first in `list`)
- `P:active`          set: ids of jobs not finished (queued / running)
- `P:job:J`           hash: spec (msgpack), status, owner, created_at, started_at, finished_at,
                      cancel (0/1), error (why it failed), total, done, errors, graded, correct,
                      cost. The spec is msgpack; the scalar fields are plain Redis strings so that
                      Lua can HINCRBY them.
- `P:job:J:items`     stream of work items (field `i` = msgpack(Item.to_dict())), consumer
                      group `workers`; a retried or released item is XADDed again (new entry id)
- `P:job:J:results`   hash: result key -> msgpack([item index, record, nonce]), written once (HSETNX)
- `P:job:J:attempts`  hash: result key -> failed attempts

A result key is msgpack of the 4-tuple (problem id, strategy, budget, fingerprint) as a list:
unambiguous whatever characters the parts hold, so no separator is needed.

Every write that must be atomic (a record with its counters and the XACK; a retry's XACK+XADD)
is one Lua script. Every Redis call goes through `_retry`, which rides out a Redis restart
(connection refused, LOADING) for up to `retry_s`. A call re-sent after its reply was lost is
safe: records carry a per-call nonce, so a re-sent `complete` sees its own bytes and reports
success without counting twice; XACK/XDEL are idempotent. (A re-sent `fail` below the limit
may count one attempt too many: harmless.)
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, Self, TypeVar

import msgpack
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ponder.jobs.queue import Claim, Counters, Item, Key, WorkQueue

log = logging.getLogger(__name__)

T = TypeVar("T")
GROUP = "workers"
STATUSES = ("queued", "running", "completed", "cancelled", "failed")
FINISHED = ("completed", "cancelled", "failed")
# BusyLoadingError (Redis loading its AOF) is a ConnectionError in redis-py.
_TRANSIENT = (RedisConnectionError, RedisTimeoutError, builtins.ConnectionError, builtins.TimeoutError)
_CHUNK = 1000


class JobStoreError(ValueError):
    """A job-store request that cannot be served; the message is one line for the user."""


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


def result_key(key: Key) -> bytes:
    return _pack(list(key))


def _str(v: bytes | None) -> str | None:
    return None if v is None else v.decode()


def _float(v: bytes | None) -> float | None:
    return None if v is None or v == b"" else float(v)


# -- Lua -------------------------------------------------------------------------------------
# Shared by complete and fail. KEYS: 1 job hash, 2 results, 3 stream, 4 active set, 5 attempts.
# ARGV: 1 result key, 2 packed value, 3 entry id, 4 errors+, 5 graded+, 6 correct+, 7 cost+,
#       8 now, 9 job id, 10 consumer, 11 max attempts, 12 packed item.
_PRELUDE = """
local function write()
  if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then
    -- our own bytes (the nonce is inside): this is a re-send of a call whose reply was lost
    if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then return 1 end
    return 0
  end
  local done = redis.call('HINCRBY', KEYS[1], 'done', 1)
  if ARGV[4] ~= '0' then redis.call('HINCRBY', KEYS[1], 'errors', 1) end
  if ARGV[5] ~= '0' then redis.call('HINCRBY', KEYS[1], 'graded', 1) end
  if ARGV[6] ~= '0' then redis.call('HINCRBY', KEYS[1], 'correct', 1) end
  if ARGV[7] ~= '0' then redis.call('HINCRBYFLOAT', KEYS[1], 'cost', ARGV[7]) end
  local total = tonumber(redis.call('HGET', KEYS[1], 'total'))
  if done >= total and redis.call('HGET', KEYS[1], 'status') ~= 'cancelled' then
    redis.call('HSET', KEYS[1], 'status', 'completed', 'finished_at', ARGV[8])
    redis.call('SREM', KEYS[4], ARGV[9])
  end
  return 1
end
local function retire()
  redis.call('XACK', KEYS[3], 'workers', ARGV[3])
  redis.call('XDEL', KEYS[3], ARGV[3])  -- acked entries are never read again: free them
end
local function owned()
  -- a worker whose lease ran out must not re-queue an entry another worker now holds
  return #redis.call('XPENDING', KEYS[3], 'workers', ARGV[3], ARGV[3], 1, ARGV[10]) > 0
end
"""

_COMPLETE = _PRELUDE + """
local w = write()
retire()
return w
"""

_FAIL = _PRELUDE + """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  local w = write()  -- 1 only for a re-send of our own final write
  retire()
  return w
end
local a = redis.call('HINCRBY', KEYS[5], ARGV[1], 1)
if a >= tonumber(ARGV[11]) then
  local w = write()
  retire()
  return w
end
if owned() then
  retire()
  redis.call('XADD', KEYS[3], '*', 'i', ARGV[12])
end
return 0
"""

_RELEASE = _PRELUDE + """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then retire() return 0 end
if owned() then
  retire()
  redis.call('XADD', KEYS[3], '*', 'i', ARGV[12])
  return 1
end
return 0
"""

# KEYS: 1 stream. ARGV: 1 consumer, 2.. entry ids. Only entries this consumer still holds are
# renewed: XCLAIM with min-idle 0 would otherwise take an entry back from its new holder.
_RENEW = """
local n = 0
for i = 2, #ARGV do
  if #redis.call('XPENDING', KEYS[1], 'workers', ARGV[i], ARGV[i], 1, ARGV[1]) > 0 then
    redis.call('XCLAIM', KEYS[1], 'workers', ARGV[1], 0, ARGV[i], 'JUSTID')
    n = n + 1
  end
end
return n
"""

# KEYS: 1 job hash, 2 stream. ARGV: spec, owner, now, total.
_CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'spec', ARGV[1], 'status', 'queued', 'owner', ARGV[2],
  'created_at', ARGV[3], 'total', ARGV[4], 'done', 0, 'errors', 0, 'graded', 0, 'correct', 0,
  'cost', 0, 'cancel', 0)
redis.call('XGROUP', 'CREATE', KEYS[2], 'workers', '0', 'MKSTREAM')
return 1
"""

# KEYS: 1 stream. ARGV: packed items. One call per chunk: far cheaper than one XADD command each.
_ADD = """
for i = 1, #ARGV do redis.call('XADD', KEYS[1], '*', 'i', ARGV[i]) end
return #ARGV
"""

# KEYS: 1 job hash, 2 active set. ARGV: status, now, job id, error ('' for none).
_SET_STATUS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local s = ARGV[1]
redis.call('HSET', KEYS[1], 'status', s)
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'error', ARGV[4]) end
if s == 'queued' or s == 'running' then
  if s == 'running' then redis.call('HSETNX', KEYS[1], 'started_at', ARGV[2]) end
  redis.call('HDEL', KEYS[1], 'finished_at')
  redis.call('SADD', KEYS[2], ARGV[3])
else
  redis.call('HSET', KEYS[1], 'finished_at', ARGV[2])
  if s == 'cancelled' then redis.call('HSET', KEYS[1], 'cancel', 1) end
  redis.call('SREM', KEYS[2], ARGV[3])
end
return 1
"""

# KEYS: 1 job hash, 2 active set. ARGV: now, job id.
_CANCEL = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local s = redis.call('HGET', KEYS[1], 'status')
if s == 'completed' or s == 'cancelled' or s == 'failed' then return 0 end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'cancel', 1, 'finished_at', ARGV[1])
redis.call('SREM', KEYS[2], ARGV[2])
return 1
"""


class RedisJobStore:
    """Job metadata in Redis, and the per-job queues workers claim items from."""

    def __init__(self, url: str, prefix: str = "ponder", *, retry_s: float = 60.0):
        self.url = url
        self.prefix = prefix
        self.retry_s = retry_s
        # No client-side retries: `_retry` is the one policy, with a deadline instead of a count.
        self.client = aioredis.Redis.from_url(url, decode_responses=False, retry=Retry(NoBackoff(), 0),
                                              socket_connect_timeout=5, socket_timeout=30)
        reg = self.client.register_script
        self._complete, self._fail, self._release = reg(_COMPLETE), reg(_FAIL), reg(_RELEASE)
        self._renew, self._create, self._add, self._set_status, self._cancel = (
            reg(_RENEW), reg(_CREATE), reg(_ADD), reg(_SET_STATUS), reg(_CANCEL))

    # -- keys --
    def _job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    @property
    def _active(self) -> str:
        return f"{self.prefix}:active"

    @property
    def _jobs(self) -> str:
        return f"{self.prefix}:jobs"

    async def _retry(self, make: Callable[[], Awaitable[T]]) -> T:
        """Run `make()` (a fresh coroutine each try), retrying while Redis is unreachable or
        loading, with backoff, for up to `retry_s`."""
        deadline = time.monotonic() + self.retry_s
        delay = 0.05
        while True:
            try:
                return await make()
            except _TRANSIENT as e:
                if time.monotonic() + delay > deadline:
                    raise
                log.debug("redis %s unavailable (%s); retrying in %.2fs", self.url, e, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    # -- jobs --
    async def create(self, job_id: str, spec: dict[str, Any], items: list[Item], owner: str) -> None:
        if not job_id or any(c.isspace() for c in job_id):
            raise JobStoreError(f"invalid job id {job_id!r}")
        keys = [it.key for it in items]
        if len(set(keys)) != len(keys):
            raise JobStoreError(f"job {job_id}: the plan holds duplicate keys")
        job, stream = self._job(job_id), self._job(job_id) + ":items"
        now = time.time()
        # The hash and the group first (atomically, this also reserves the id), then the items,
        # then the listing: workers find jobs via the active set, so they never see a half-filled one.
        made = await self._retry(lambda: self._create(keys=[job, stream], args=[_pack(spec), owner, repr(now), len(items)]))
        if not made:
            raise JobStoreError(f"job {job_id} exists already")
        try:
            for lo in range(0, len(items), _CHUNK):
                chunk = [_pack(it.to_dict()) for it in items[lo:lo + _CHUNK]]
                await self._retry(lambda chunk=chunk: self._add(keys=[stream], args=chunk))

            async def listed() -> None:
                pipe = self.client.pipeline(transaction=True)
                pipe.sadd(self._active, job_id)
                pipe.zadd(self._jobs, {job_id: now})
                await pipe.execute()

            await self._retry(listed)
            if not items:  # nothing to run: no `complete` will ever finish it
                await self.set_status(job_id, "completed")
        except BaseException:
            try:  # leave no half-made job behind; the original error is the one to report
                await self.client.delete(job, stream)
            except Exception as e:  # noqa: BLE001
                log.warning("job %s: cannot clean up a failed create: %s", job_id, e)
            raise

    def _decode_job(self, job_id: str, h: dict[bytes, bytes]) -> dict[str, Any]:
        g = h.get
        return {
            "id": job_id,
            "spec": _unpack(h[b"spec"]) if b"spec" in h else None,
            "status": _str(g(b"status")),
            "owner": _str(g(b"owner")),
            "created_at": _float(g(b"created_at")),
            "started_at": _float(g(b"started_at")),
            "finished_at": _float(g(b"finished_at")),
            "cancel": g(b"cancel") == b"1",
            "error": _str(g(b"error")),
            "counters": {
                "total": int(g(b"total") or 0), "done": int(g(b"done") or 0),
                "errors": int(g(b"errors") or 0), "graded": int(g(b"graded") or 0),
                "correct": int(g(b"correct") or 0), "cost": float(g(b"cost") or 0.0),
            },
        }

    async def get(self, job_id: str) -> dict[str, Any] | None:
        h = await self._retry(lambda: self.client.hgetall(self._job(job_id)))
        return self._decode_job(job_id, h) if h else None

    async def list(self, owner: str | None = None) -> list[dict[str, Any]]:
        ids = [i.decode() for i in await self._retry(lambda: self.client.zrevrange(self._jobs, 0, -1))]

        async def fetch() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for i in ids:
                pipe.hgetall(self._job(i))
            return await pipe.execute()

        hashes = await self._retry(fetch) if ids else []
        jobs = [self._decode_job(i, h) for i, h in zip(ids, hashes) if h]
        return [j for j in jobs if owner is None or j["owner"] == owner]

    async def set_status(self, job_id: str, status: str, *, error: str | None = None) -> None:
        """Set the status (started_at on the first "running", finished_at on a final one);
        `error` (kept as one line) says why, for "failed"."""
        if status not in STATUSES:
            raise JobStoreError(f"unknown job status {status!r} (one of {', '.join(STATUSES)})")
        err = " ".join((error or "").split())
        r = await self._retry(lambda: self._set_status(keys=[self._job(job_id), self._active],
                                                       args=[status, repr(time.time()), job_id, err]))
        if r == -1:
            raise JobStoreError(f"no job {job_id}")

    async def cancel(self, job_id: str) -> bool:
        """Mark the job cancelled (workers poll `get(...)["cancel"]` and stop); False when it
        had finished already."""
        r = await self._retry(lambda: self._cancel(keys=[self._job(job_id), self._active],
                                                   args=[repr(time.time()), job_id]))
        if r == -1:
            raise JobStoreError(f"no job {job_id}")
        return r == 1

    async def active(self) -> list[str]:
        return sorted(m.decode() for m in await self._retry(lambda: self.client.smembers(self._active)))

    async def results(self, job_id: str) -> list[dict[str, Any]]:
        h = await self._retry(lambda: self.client.hgetall(self._job(job_id) + ":results"))
        rows = [_unpack(v) for v in h.values()]
        rows.sort(key=lambda r: r[0])
        return [r[1] for r in rows]

    async def counters(self, job_id: str) -> Counters:
        fields = ("total", "done", "errors", "graded", "correct", "cost")
        v = await self._retry(lambda: self.client.hmget(self._job(job_id), fields))
        if v[0] is None:
            raise JobStoreError(f"no job {job_id}")
        return Counters(total=int(v[0]), done=int(v[1] or 0), errors=int(v[2] or 0), graded=int(v[3] or 0),
                        correct=int(v[4] or 0), cost=float(v[5] or 0.0))

    def queue(self, job_id: str, consumer: str, *, max_attempts: int = 3, lease_s: float = 60.0) -> RedisQueue:
        return RedisQueue(self, job_id, consumer, max_attempts=max_attempts, lease_s=lease_s)

    async def close(self) -> None:
        await self.client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class RedisQueue(WorkQueue):
    """One worker's view of a job's stream. Several (in any processes) share one job; a worker
    restarted under the same `consumer` name resumes its own pending entries at once, others'
    entries are reclaimed once idle longer than `lease_s` (`renew` is the heartbeat)."""

    def __init__(self, store: RedisJobStore, job_id: str, consumer: str, *, max_attempts: int = 3,
                 lease_s: float = 60.0):
        if max_attempts < 1:
            raise JobStoreError("max_attempts must be >= 1")
        self.store = store
        self.job_id = job_id
        self.consumer = consumer
        self.max_attempts = max_attempts
        self.lease_s = lease_s
        self._job = store._job(job_id)
        self._stream = self._job + ":items"
        self._results = self._job + ":results"
        self._attempts = self._job + ":attempts"
        self._keys = [self._job, self._results, self._stream, store._active, self._attempts]
        self._held: set[bytes] = set()  # entry ids handed out by this object and not yet settled
        self._own_cursor: bytes | None = b"0"  # paging through our own pending entries; None: done
        self._auto_cursor: bytes = b"0-0"

    @property
    def _c(self) -> aioredis.Redis:
        return self.store.client

    # -- claim --
    async def claim(self, n: int) -> list[Claim]:
        if n <= 0:
            return []
        try:
            return await self._claim(n)
        except ResponseError as e:
            if "NOGROUP" in str(e):
                raise JobStoreError(f"no job {self.job_id}") from e
            raise

    async def _claim(self, n: int) -> list[Claim]:
        entries: list[tuple[bytes, dict[bytes, bytes] | None]] = []
        if self._own_cursor is not None:  # a restarted worker: what it held before, at once
            got = await self._read(self._own_cursor, n)
            self._own_cursor = got[-1][0] if len(got) >= n else None
            entries += got
        if len(entries) < n:
            entries += await self._autoclaim(n - len(entries))
        if len(entries) < n:
            entries += await self._read(b">", n - len(entries))
        return await self._admit(entries)

    async def _read(self, start: bytes, n: int) -> list[tuple[bytes, dict[bytes, bytes] | None]]:
        reply = await self.store._retry(lambda: self._c.xreadgroup(GROUP, self.consumer, {self._stream: start}, count=n))
        return [e for _stream, es in (reply or []) for e in es]

    async def _autoclaim(self, n: int) -> list[tuple[bytes, dict[bytes, bytes] | None]]:
        out: list[tuple[bytes, dict[bytes, bytes] | None]] = []
        idle_ms = max(0, int(self.lease_s * 1000))
        for _ in range(4):  # a few pages of the pending list per call; the cursor carries on
            start, want = self._auto_cursor, n - len(out)
            reply = await self.store._retry(lambda start=start, want=want: self._c.xautoclaim(
                self._stream, GROUP, self.consumer, idle_ms, start_id=start, count=want))
            self._auto_cursor = reply[0]
            out += reply[1]
            if reply[0] in (b"0-0", "0-0") or len(out) >= n:
                break
        return out

    async def _admit(self, entries: list[tuple[bytes, dict[bytes, bytes] | None]]) -> list[Claim]:
        fresh: list[tuple[bytes, Item]] = []
        gone: list[bytes] = []
        seen: set[bytes] = set()
        for eid, fields in entries:
            if eid in self._held or eid in seen:
                continue  # already running here (an XAUTOCLAIM of our own idle entry): not twice
            seen.add(eid)
            if not fields or b"i" not in fields:
                gone.append(eid)
                continue
            fresh.append((eid, Item.from_dict(_unpack(fields[b"i"]))))
        if fresh:
            async def look() -> list[Any]:
                pipe = self._c.pipeline(transaction=False)
                for _eid, item in fresh:
                    rk = result_key(item.key)
                    pipe.hexists(self._results, rk)
                    pipe.hget(self._attempts, rk)
                return await pipe.execute()

            flags = await self.store._retry(look)
        else:
            flags = []
        out = []
        for j, (eid, item) in enumerate(fresh):
            if flags[2 * j]:
                gone.append(eid)  # the key has its record (another worker finished it)
                continue
            self._held.add(eid)
            out.append(Claim(item, int(flags[2 * j + 1] or 0), eid))
        if gone:
            async def drop() -> None:
                pipe = self._c.pipeline(transaction=False)
                pipe.xack(self._stream, GROUP, *gone)
                pipe.xdel(self._stream, *gone)
                await pipe.execute()

            await self.store._retry(drop)
        return out

    # -- settle --
    def _args(self, claim: Claim, record: dict[str, Any] | None) -> list[Any]:
        item = claim.item
        rk = result_key(item.key)
        if record is None:
            return [rk, b"", claim.token, 0, 0, 0, 0, repr(time.time()), self.job_id, self.consumer,
                    self.max_attempts, _pack(item.to_dict())]
        correct = record.get("correct")
        cost = float((record.get("compute") or {}).get("cost", 0.0) or 0.0)
        if not math.isfinite(cost):
            cost = 0.0
        value = _pack([item.index, record, os.urandom(8)])  # the nonce makes a re-sent call recognisable
        return [rk, value, claim.token, int(record.get("stop_reason") == "error"), int(correct is not None),
                int(bool(correct)), repr(cost) if cost else 0, repr(time.time()), self.job_id, self.consumer,
                self.max_attempts, _pack(item.to_dict())]

    async def complete(self, claim: Claim, record: dict[str, Any]) -> bool:
        args = self._args(claim, record)
        r = await self.store._retry(lambda: self.store._complete(keys=self._keys, args=args))
        self._held.discard(claim.token)
        return r == 1

    async def fail(self, claim: Claim, error: str, record: dict[str, Any]) -> bool:
        args = self._args(claim, record)
        r = await self.store._retry(lambda: self.store._fail(keys=self._keys, args=args))
        self._held.discard(claim.token)
        if r != 1:
            log.debug("job %s: %s failed (%s); queued again", self.job_id, claim.item.key, error)
        return r == 1

    async def release(self, claim: Claim) -> None:
        args = self._args(claim, None)
        await self.store._retry(lambda: self.store._release(keys=self._keys, args=args))
        self._held.discard(claim.token)

    async def renew(self, claims: list[Claim]) -> None:
        ids = [c.token for c in claims if c.token is not None]
        if ids:
            await self.store._retry(lambda: self.store._renew(keys=[self._stream], args=[self.consumer, *ids]))

    async def finished(self) -> bool:
        c = await self.counters()
        return c.done >= c.total

    async def counters(self) -> Counters:
        return await self.store.counters(self.job_id)

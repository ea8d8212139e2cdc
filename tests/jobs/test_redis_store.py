"""RedisJobStore / RedisQueue against a real redis-server, and the embedded server."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import redis

from ponder.jobs.embedded import EmbeddedRedis
from ponder.jobs.queue import Item
from ponder.jobs.redis_store import JobStoreError, RedisJobStore, RedisQueue

pytestmark = pytest.mark.redis


def items(n: int, strategy: str = "beam") -> list[Item]:
    return [Item(i, {"id": f"p{i}", "question": f"q{i}"}, strategy, "n=4", "fp1") for i in range(n)]


def record(item: Item, stop: str = "done", correct: bool | None = True, cost: float = 1.5) -> dict[str, Any]:
    return {"id": item.problem_id, "strategy": item.strategy, "budget": item.budget,
            "fingerprint": item.fingerprint, "stop_reason": stop, "correct": correct,
            "compute": {"cost": cost, "tokens": 10}}


@pytest.fixture
async def store(redis_server):
    s = RedisJobStore(redis_server.url, prefix="t", retry_s=20)
    yield s
    await s.close()


async def test_create_list_get_counters(store: RedisJobStore):
    await store.create("j1", {"dataset": "math", "n": 1}, items(3), owner="ann")
    await asyncio.sleep(0.01)
    await store.create("j2", {"dataset": "gsm"}, items(5), owner="bob")
    with pytest.raises(JobStoreError, match="exists"):
        await store.create("j1", {}, items(1), owner="ann")
    with pytest.raises(JobStoreError, match="duplicate"):
        await store.create("j3", {}, items(2) + items(1), owner="ann")

    assert [j["id"] for j in await store.list()] == ["j2", "j1"]
    assert [j["id"] for j in await store.list(owner="ann")] == ["j1"]
    assert await store.active() == ["j1", "j2"]
    j = await store.get("j1")
    assert j["spec"] == {"dataset": "math", "n": 1} and j["status"] == "queued" and j["owner"] == "ann"
    assert j["created_at"] > 0 and j["started_at"] is None and j["finished_at"] is None and not j["cancel"]
    assert j["counters"]["total"] == 3 and j["counters"]["done"] == 0
    assert await store.get("nope") is None
    with pytest.raises(JobStoreError, match="no job nope"):
        await store.queue("nope", "w").claim(1)
    c = await store.counters("j2")
    assert (c.total, c.done, c.errors, c.cost) == (5, 0, 0, 0.0)

    await store.set_status("j1", "running")
    assert (await store.get("j1"))["started_at"] is not None
    with pytest.raises(JobStoreError):
        await store.set_status("j1", "bogus")
    await store.set_status("j2", "failed", error="no engine\n here")
    j2 = await store.get("j2")
    assert j2["status"] == "failed" and j2["error"] == "no engine here" and j2["finished_at"] is not None
    assert await store.active() == ["j1"]

    # Results come back in plan order whatever order they were completed in.
    q = store.queue("j1", "w1")
    claims = await q.claim(10)
    assert len(claims) == 3 and {c.attempt for c in claims} == {0}
    for c in reversed(claims):
        assert await q.complete(c, record(c.item, correct=c.item.index != 1))
    assert [r["id"] for r in await store.results("j1")] == ["p0", "p1", "p2"]
    c = await store.counters("j1")
    assert (c.done, c.graded, c.correct, c.errors) == (3, 3, 2, 0) and c.cost == pytest.approx(4.5)
    j = await store.get("j1")
    assert j["status"] == "completed" and j["finished_at"] is not None
    assert await q.finished() and await store.active() == []


async def test_complete_writes_once_after_lease(store: RedisJobStore):
    await store.create("j", {}, items(1), owner="o")
    q1 = store.queue("j", "w1", lease_s=0.2)
    q2 = store.queue("j", "w2", lease_s=0.2)
    (c1,) = await q1.claim(5)
    assert await q2.claim(5) == []  # held by w1, lease not run out
    await asyncio.sleep(0.3)
    (c2,) = await q2.claim(5)  # XAUTOCLAIM: w1's lease ran out
    assert c2.item == c1.item and c2.token == c1.token
    assert await q2.complete(c2, record(c2.item))
    assert not await q1.complete(c1, record(c1.item, cost=9.0))  # the late run writes nothing
    assert not await q2.complete(c2, record(c2.item))
    assert len(await store.results("j")) == 1
    c = await store.counters("j")
    assert c.done == 1 and c.cost == pytest.approx(1.5)
    assert (await store.get("j"))["status"] == "completed"


async def test_fail_below_and_at_max_attempts(store: RedisJobStore):
    await store.create("j", {}, items(2), owner="o")
    q = store.queue("j", "w", max_attempts=2)
    a, b = await q.claim(2)
    err = record(a.item, stop="error", correct=None, cost=0.25)
    assert not await q.fail(a, "boom", err)  # attempt 1 of 2: queued again
    assert len(await store.results("j")) == 0
    (a2,) = await q.claim(5)
    assert a2.item == a.item and a2.attempt == 1 and a2.token != a.token
    assert await q.fail(a2, "boom", err)  # attempt 2 of 2: the error record is the result
    assert await q.claim(5) == []
    assert not await q.finished()
    assert await q.complete(b, record(b.item))
    res = await store.results("j")
    assert [r["stop_reason"] for r in res] == ["error", "done"]
    c = await store.counters("j")
    assert (c.done, c.errors, c.graded, c.correct) == (2, 1, 1, 1) and c.cost == pytest.approx(1.75)
    assert await q.finished() and (await store.get("j"))["status"] == "completed"


async def test_release_requeues_without_attempt(store: RedisJobStore):
    await store.create("j", {}, items(1), owner="o")
    q = store.queue("j", "w")
    (c,) = await q.claim(1)
    await q.release(c)
    (c2,) = await q.claim(1)
    assert c2.item == c.item and c2.attempt == 0 and c2.token != c.token
    assert await q.complete(c2, record(c2.item))


async def test_entry_of_a_finished_key_is_skipped(store: RedisJobStore):
    await store.create("j", {}, items(1), owner="o")
    q1, q2 = store.queue("j", "w1", lease_s=0.2), store.queue("j", "w2", lease_s=0.2)
    (c1,) = await q1.claim(1)
    await asyncio.sleep(0.3)
    (c2,) = await q2.claim(1)
    await q2.release(c2)  # w2 gives it back: a new entry
    assert await q1.complete(c1, record(c1.item))  # meanwhile the late w1 finishes it
    assert await store.queue("j", "w3").claim(5) == []  # the re-added entry is acked, not handed out
    assert len(await store.results("j")) == 1


async def test_own_pending_resume_after_crash(store: RedisJobStore):
    await store.create("j", {}, items(5), owner="o")
    old = store.queue("j", "w1", lease_s=60)
    held = await old.claim(3)
    del old  # "crash": never completed
    new = store.queue("j", "w1", lease_s=60)
    first = await new.claim(2)  # its own pending entries at once, no lease wait
    assert [c.token for c in first] == [c.token for c in held[:2]]
    rest = await new.claim(10)
    assert [c.token for c in rest][:1] == [held[2].token]
    assert not {c.token for c in rest} & {c.token for c in first}
    assert await new.claim(10) == []  # nothing handed out twice
    for c in first + rest:
        assert await new.complete(c, record(c.item))
    assert await new.finished()


async def test_autoclaim_by_another_consumer_and_renew(store: RedisJobStore):
    await store.create("j", {}, items(3), owner="o")
    q1, q2 = store.queue("j", "w1", lease_s=0.3), store.queue("j", "w2", lease_s=0.3)
    c1 = await q1.claim(2)
    (only,) = await q2.claim(5)
    assert only.item.index == 2
    for _ in range(4):  # the heartbeat keeps w1's lease
        await asyncio.sleep(0.1)
        await q1.renew(c1)
    assert await q2.claim(5) == []
    await asyncio.sleep(0.4)
    # w2's own held entry went idle too, but it is not handed to w2 a second time.
    taken = await q2.claim(5)
    assert sorted(c.item.index for c in taken) == [0, 1]
    await q1.renew(c1)  # w1 no longer holds them: renew must not take them back
    assert await q1.claim(5) == []
    for c in taken + [only]:
        assert await q2.complete(c, record(c.item))
    assert await q2.finished()


async def test_cancel(store: RedisJobStore):
    await store.create("j", {}, items(2), owner="o")
    assert await store.cancel("j")
    j = await store.get("j")
    assert j["status"] == "cancelled" and j["cancel"] and j["finished_at"] is not None
    assert await store.active() == []
    assert not await store.cancel("j")
    with pytest.raises(JobStoreError):
        await store.cancel("nope")
    # Completing the rest of a cancelled job does not flip it to completed.
    q = store.queue("j", "w")
    for c in await q.claim(5):
        await q.complete(c, record(c.item))
    assert (await store.get("j"))["status"] == "cancelled"

    await store.create("k", {}, items(1), owner="o")
    q = store.queue("k", "w")
    (c,) = await q.claim(1)
    await q.complete(c, record(c.item))
    assert not await store.cancel("k")


async def test_job_rides_out_a_redis_restart(store: RedisJobStore, redis_server):
    n = 200
    await store.create("j", {}, items(n), owner="o")
    await store.set_status("j", "running")

    async def worker(name: str) -> None:
        q: RedisQueue = store.queue("j", name, max_attempts=3, lease_s=0.5)
        while not await q.finished():
            claims = await q.claim(8)
            if not claims:
                await asyncio.sleep(0.05)
                continue
            for c in claims:
                await asyncio.sleep(0.002)
                if c.item.index % 10 == 0 and c.attempt == 0:  # some fail once, then succeed
                    await q.fail(c, "flaky", record(c.item, stop="error", correct=None))
                else:
                    await q.complete(c, record(c.item, correct=c.item.index % 2 == 0))

    tasks = [asyncio.create_task(worker(w)) for w in ("w1", "w2")]
    while (done := (await store.counters("j")).done) < 60:
        await asyncio.sleep(0.01)
    assert done < n  # the kill lands mid-job
    redis_server.kill()
    await asyncio.sleep(0.3)  # the workers now see connection errors and back off
    await asyncio.to_thread(redis_server.start)  # same port and dir: replays the AOF
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=20)

    res = await store.results("j")
    assert len(res) == n and len({r["id"] for r in res}) == n
    assert [r["id"] for r in res] == [f"p{i}" for i in range(n)]
    assert all(r["stop_reason"] == "done" for r in res)
    c = await store.counters("j")
    assert (c.done, c.errors, c.graded, c.correct) == (n, 0, n, n // 2)
    assert c.cost == pytest.approx(1.5 * n)
    assert (await store.get("j"))["status"] == "completed"
    assert await store.active() == []


def test_embedded_ensure_is_idempotent_and_persistent(tmp_path, redis_binary):
    emb = EmbeddedRedis(tmp_path / "state")
    try:
        url = emb.ensure()
        info = emb._read_info()
        assert url.startswith("redis://127.0.0.1:") and url.endswith("/0")
        assert emb.ensure() == url and emb._read_info()["pid"] == info["pid"]
        r = redis.Redis.from_url(url)
        r.set("k", "v")
        r.close()
        emb.stop()
        url2 = EmbeddedRedis(tmp_path / "state").ensure()
        assert emb._read_info()["pid"] != info["pid"]
        r = redis.Redis.from_url(url2)
        assert r.get("k") == b"v"  # the AOF survived the restart
        assert r.config_get("appendfsync") == {"appendfsync": "always"}
        r.close()
    finally:
        emb.stop()


def test_embedded_concurrent_ensure_gives_one_server(tmp_path, redis_binary):
    state = tmp_path / "state"
    urls: list[str] = []
    barrier = threading.Barrier(2)

    def go() -> None:
        barrier.wait()
        urls.append(EmbeddedRedis(state).ensure())

    threads = [threading.Thread(target=go) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    emb = EmbeddedRedis(state)
    try:
        assert len(urls) == 2 and urls[0] == urls[1]
        pid = emb._read_info()["pid"]
        r = redis.Redis.from_url(urls[0])
        assert int(r.info("server")["process_id"]) == pid
        r.close()
    finally:
        emb.stop()

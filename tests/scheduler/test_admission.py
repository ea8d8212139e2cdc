"""Admission of interactive searches: running and waiting limits, in total and per tenant;
waiters by priority then arrival; refusals with a retry hint; cancelled waiters leave the line."""

import asyncio

import pytest

from ponder.config import ConfigError
from ponder.scheduler.admission import Admission, AdmissionLimits, Overloaded


async def settle(rounds: int = 5) -> None:
    """Let every ready task run up to its next real wait."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def waiting(adm: Admission, tenant: str, priority: int = 0) -> asyncio.Task:
    return asyncio.ensure_future(adm.acquire(tenant, priority))


async def drain(*tasks: asyncio.Task) -> None:
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_admits_up_to_max_running_then_the_next_waits():
    adm = Admission(AdmissionLimits(max_running=2, max_queued=4))
    await asyncio.wait_for(adm.acquire("a"), 1)
    await asyncio.wait_for(adm.acquire("b"), 1)
    assert adm.total_running == 2 and adm.total_queued == 0
    third = waiting(adm, "c")
    await settle()
    assert not third.done()
    assert adm.total_queued == 1 and adm.queued["c"] == 1 and adm.total_running == 2
    adm.release("a", 0.5)  # a slot frees: the waiter gets it
    await asyncio.wait_for(third, 1)
    assert adm.total_running == 2 and adm.running["c"] == 1 and adm.total_queued == 0


async def test_beyond_the_waiting_room_is_refused_with_a_retry_hint():
    adm = Admission(AdmissionLimits(max_running=1, max_queued=1))
    await adm.acquire("a")
    w = waiting(adm, "b")
    await settle()
    with pytest.raises(Overloaded) as e:
        await adm.acquire("c")
    assert e.value.retry_after_s >= 1 and "busy" in e.value.reason
    assert adm.rejected == 1 and adm.total_queued == 1  # the refused one did not take a place
    await drain(w)


async def test_tenant_waiting_room_is_per_tenant():
    adm = Admission(AdmissionLimits(max_running=1, max_queued=10, tenant_max_queued=1))
    await adm.acquire("a")
    wa = waiting(adm, "a")
    await settle()
    with pytest.raises(Overloaded) as e:
        await adm.acquire("a")
    assert "'a'" in e.value.reason and e.value.retry_after_s >= 1
    wb = waiting(adm, "b")  # another tenant still has room to wait
    await settle()
    assert not wb.done() and adm.queued == {"a": 1, "b": 1}
    await drain(wa, wb)


async def test_retry_after_grows_with_recent_durations_and_the_queue():
    adm = Admission(AdmissionLimits(max_running=1, max_queued=5))
    await adm.acquire("a")
    adm.release("a", 10.0)  # searches have been taking 10 s
    await adm.acquire("a")
    waiters = [waiting(adm, "a") for _ in range(2)]
    await settle()
    assert adm.retry_after() == 30  # 10 s x (2 waiting + this one) / 1 slot
    await drain(*waiters)


async def test_a_tenant_at_its_running_limit_lets_another_tenant_go_first():
    adm = Admission(AdmissionLimits(max_running=2, max_queued=4, tenant_max_running=1))
    await adm.acquire("a")
    a2 = waiting(adm, "a")  # a slot is free, but tenant a is at its limit
    await settle()
    assert not a2.done() and adm.queued["a"] == 1
    b1 = waiting(adm, "b")  # arrives later, but b is below its limit and a slot is free
    await asyncio.wait_for(b1, 1)
    assert adm.running["a"] == adm.running["b"] == 1 and not a2.done()
    adm.release("b")  # the free slot still may not go to tenant a
    await settle()
    assert not a2.done() and adm.total_running == 1
    adm.release("a")
    await asyncio.wait_for(a2, 1)
    assert adm.running["a"] == 1 and adm.total_queued == 0


async def test_waiters_are_admitted_by_priority_then_arrival():
    adm = Admission(AdmissionLimits(max_running=1, max_queued=10))
    await adm.acquire("x")
    order: list[str] = []

    async def one(name: str, priority: int) -> None:
        await adm.acquire(name, priority)
        order.append(name)

    tasks = []
    for name, prio in [("p5", 5), ("p1a", 1), ("p9", 9), ("p1b", 1), ("p0", 0)]:
        tasks.append(asyncio.ensure_future(one(name, prio)))
        await settle()
    assert adm.total_queued == 5 and order == []
    holder = "x"
    for _ in range(5):
        adm.release(holder)
        await settle()
        assert len(order) == 6 - adm.total_queued - 1  # one admitted per release
        holder = order[-1]
    assert order == ["p0", "p1a", "p1b", "p5", "p9"]
    await asyncio.gather(*tasks)


async def test_a_cancelled_waiter_frees_its_place():
    adm = Admission(AdmissionLimits(max_running=1, max_queued=1))
    await adm.acquire("a")
    w = waiting(adm, "b")
    await settle()
    with pytest.raises(Overloaded):
        await adm.acquire("c")
    await drain(w)
    assert adm.total_queued == 0 and adm.queued["b"] == 0 and adm.total_running == 1
    later = waiting(adm, "c")  # the place is free again
    await settle()
    assert not later.done() and adm.total_queued == 1
    adm.release("a")
    await asyncio.wait_for(later, 1)
    assert adm.running["c"] == 1 and adm.total_running == 1


async def test_a_waiter_cancelled_in_the_same_tick_as_a_release_gets_no_slot():
    """The release comes before the cancelled waiter has run: it must not be admitted (nor
    make release raise), and the slot goes to the next in line."""
    adm = Admission(AdmissionLimits(max_running=1, max_queued=4))
    await adm.acquire("a")
    gone, nxt = waiting(adm, "b"), waiting(adm, "c")
    await settle()
    gone.cancel()
    adm.release("a")
    await asyncio.wait_for(nxt, 1)
    assert (await asyncio.gather(gone, return_exceptions=True))[0].__class__ is asyncio.CancelledError
    assert adm.running["c"] == 1 and adm.total_running == 1 and adm.total_queued == 0


async def test_release_wakes_the_next_and_stats_count():
    adm = Admission(AdmissionLimits(max_running=1, max_queued=1, tenant_max_running=1, tenant_max_queued=1))
    await adm.acquire("a")
    w = waiting(adm, "b")
    await settle()
    with pytest.raises(Overloaded):
        await adm.acquire("b")
    st = adm.stats()
    assert st == {"running": 1, "queued": 1, "admitted": 1, "rejected": 1,
                  "tenants": {"a": {"running": 1, "queued": 0}, "b": {"running": 0, "queued": 1}}}
    adm.release("a", 2.0)
    await asyncio.wait_for(w, 1)
    st = adm.stats()
    assert st == {"running": 1, "queued": 0, "admitted": 2, "rejected": 1,
                  "tenants": {"b": {"running": 1, "queued": 0}}}
    adm.release("b", 4.0)
    assert adm.stats()["tenants"] == {} and adm.retry_after() == 3  # mean 3 s x 1 / 1 slot


async def test_configure_raising_the_limit_wakes_waiters_and_limits_validate():
    adm = Admission(AdmissionLimits(max_running=1, max_queued=4))
    await adm.acquire("a")
    w = waiting(adm, "b")
    await settle()
    adm.configure(AdmissionLimits(max_running=2, max_queued=4))
    await asyncio.wait_for(w, 1)
    assert adm.total_running == 2
    with pytest.raises(ConfigError):
        AdmissionLimits(max_running=0).validate()
    with pytest.raises(ConfigError):
        AdmissionLimits(max_queued=-1).validate()
    AdmissionLimits(max_queued=0, tenant_max_queued=0).validate()

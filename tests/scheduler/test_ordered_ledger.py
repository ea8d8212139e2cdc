"""The ordered job ledger: every query's grant is the same whatever order the queries finish in,
and whatever the latency and concurrency (issue 13: results independent of timing)."""

import asyncio
import random

import pytest

from ponder.scheduler.ledger import LedgerError, OrderedLedger, TokenLedger
from ponder.tasks.datasets import load_problems
from tests.scheduler.test_reproducible import run

N, W, TOTAL = 40, 4, 40 * 500.0


def demand(q: int) -> tuple[bool, float, float, float, float]:
    """Query q's script: provisional (auto-like), probe spend, weight, cap, what it would spend."""
    r = random.Random(q)
    return q % 2 == 1, r.uniform(20, 80), r.choice([0.5, 1.0, 3.0]), r.choice([1.0, 2.0, 4.0]), r.uniform(100, 1500)


async def job(ledger: TokenLedger, seed: int, slots: int) -> dict[str, tuple]:
    rng = random.Random(seed)
    sem = asyncio.Semaphore(slots)

    async def query(q: int) -> None:
        provisional, probe, weight, cap, want = demand(q)
        try:
            acct = await ledger.admit(f"q{q}", provisional=provisional)
            await asyncio.sleep(rng.uniform(0, 0.003))
            if provisional:
                acct.spend(probe)
                await asyncio.sleep(rng.uniform(0, 0.003))
                await acct.request(weight, cap)
            acct.spend(max(0.0, min(acct.left, want)))
            await asyncio.sleep(rng.uniform(0, 0.005))
            ledger.close(acct)
        finally:
            sem.release()

    tasks = []
    for q in range(N):  # opened in order, as Runner.run and the job core do
        await sem.acquire()
        tasks.append(asyncio.ensure_future(query(q)))
        await asyncio.sleep(0)
    await asyncio.gather(*tasks)
    return {a.qid: (round(a.granted, 6), round(a.spent, 6)) for a in ledger.accounts.values()}


async def test_grants_are_the_same_in_any_order_of_completion():
    runs = [await job(OrderedLedger(TOTAL, N, window=W), seed, slots) for seed, slots in ((0, 4), (1, 4), (2, 2), (3, 1))]
    assert all(r == runs[0] for r in runs[1:])
    spent = sum(s for _, s in runs[0].values())
    assert spent <= TOTAL + W * 80  # past its total by at most the probes in flight
    assert spent > 0.9 * TOTAL  # and what early queries leave goes to later ones
    # The plain ledger grants from whatever is free at the moment: completion order changes it.
    plain = [await job(TokenLedger(TOTAL, N), seed, 4) for seed in (0, 1)]
    assert plain[0] != plain[1]


async def test_a_query_cancelled_while_it_waits_does_not_hold_up_the_ones_after_it():
    led = OrderedLedger(1000, 3, window=1)
    first = await led.admit("a")  # decided at once: nothing before it
    waiting = asyncio.ensure_future(led.admit("b"))  # waits for "a" to close
    await asyncio.sleep(0.01)
    assert not waiting.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    first.spend(200)
    led.close(first)
    third = await asyncio.wait_for(led.admit("c"), 1)  # "b" is closed: "c" is not stuck behind it
    assert third.granted == pytest.approx(800)  # what "a" left, all to the last query
    with pytest.raises(LedgerError):
        await led.request(first, 1.0)  # closed: no second grant


async def test_auto_under_a_job_budget_gives_the_same_results_at_any_latency_and_concurrency():
    extra, ps = ["scheduler.ledger_window=3"], load_problems("arith:12:seed=21:levels=2,5")
    base = await run("auto", "700", jitter=False, window_ms=0, max_batch=64, searches=8, extra=extra, problems=ps)
    other = await run("auto", "700", jitter=True, window_ms=3, max_batch=3, searches=2, extra=extra, problems=ps)
    assert base == other
    assert len({r[3].cost for r in base.values()}) > 1

"""Per-job state in the runner: each job's own ledger, cancel that really stops work, and the
ledger's running totals (in-process; the Ray and Redis versions are in tests/jobs)."""

import asyncio
import dataclasses
import random

from ponder.config import PonderConfig
from ponder.scheduler.ledger import TokenLedger
from ponder.scheduler.runner import Runner
from tests.search.fakes import FakePolicy, FakePRM, problems

ONE_BATCH = 8 * 40 * 2  # the most one batch of 8 level-2 samples costs (see test_runner_budget)


def named(prefix: str, n: int, seed: int):
    return [dataclasses.replace(p, id=f"{prefix}-{p.id}") for p in problems(n, level=2, seed=seed)]


def runner(delay=(0.001, 0.004)) -> tuple[Runner, FakePolicy]:
    pol = FakePolicy(p_correct=0.6, delay=delay)
    cfg = PonderConfig.from_dict({"scheduler": {"max_concurrent_searches": 64}})
    return Runner(pol, FakePRM(delay=delay), cfg), pol


async def run_job(r: Runner, job: str, ps, budget="n=8", strategy="best_of_n"):
    return await asyncio.gather(*(r.solve(p, strategy, budget, job=job) for p in ps))


async def test_two_concurrent_jobs_keep_their_own_budgets():
    r, _ = runner()
    a, b = named("a", 8, 1), named("b", 8, 2)
    await r.open_job("A", budget=1500, queries=len(a))
    await r.open_job("B", budget=6000, queries=len(b))
    ra, rb = await asyncio.gather(run_job(r, "A", a, "n=32"), run_job(r, "B", b, "n=32"))
    sa, sb = await r.job_stats("A"), await r.job_stats("B")
    spent_a, spent_b = sum(x.compute.cost for x in ra), sum(x.compute.cost for x in rb)
    assert sa["ledger"]["spent"] == spent_a and sb["ledger"]["spent"] == spent_b
    # Each within its own total (plus the last batch of each search in flight), and the small
    # budget really bound job A while B, with four times as much, spent more.
    assert spent_a <= 1500 + len(a) * ONE_BATCH and spent_b <= 6000 + len(b) * ONE_BATCH
    assert spent_b > spent_a
    assert all(x.meta["grant"] <= 1500 for x in ra)
    assert (await r.close_job("A"))["job"] == "A" and await r.job_stats("A") is None


async def test_cancelling_a_job_stops_its_engine_requests_and_leaves_the_other_alone():
    r, pol = runner(delay=(0.01, 0.02))
    a, b = named("a", 6, 3), named("b", 6, 4)
    await r.open_job("A")
    await r.open_job("B", budget=10**6, queries=len(b))
    ta = asyncio.ensure_future(run_job(r, "A", a, "n=4", "beam_search"))
    tb = asyncio.ensure_future(run_job(r, "B", b, "n=4", "beam_search"))
    await asyncio.sleep(0.05)
    stopped = await r.cancel_job("B")
    assert stopped == len(b)
    seen_b = sum(1 for q in pol.requests if q.affinity.startswith("b-"))
    rb = await tb
    ra = await ta
    await asyncio.sleep(0.05)
    # No request of B's was issued after the cancel returned (one already batched may finish).
    late = sum(1 for q in pol.requests if q.affinity.startswith("b-")) - seen_b
    assert late <= len(b)
    assert all(x.stop_reason == "cancelled" and x.correct is None for x in rb)
    assert all(x.stop_reason != "cancelled" for x in ra) and sum(bool(x.correct) for x in ra) >= 3
    # Their unspent grants went back to B's ledger.
    st = await r.job_stats("B")
    assert st["ledger"]["open"] == 0 and st["ledger"]["refunded"] > 0
    # A cancelled job refuses new searches: they return at once, without engine calls.
    before = len(pol.requests)
    res = await r.solve(b[0], "beam_search", "n=4", job="B")
    assert res.stop_reason == "cancelled" and len(pol.requests) == before


async def test_cancel_one_search_by_id():
    r, pol = runner(delay=(0.01, 0.02))
    p = named("c", 1, 5)[0]
    t = asyncio.ensure_future(r.solve(p, "beam_search", "n=8", search_id="s1"))
    await asyncio.sleep(0.03)
    assert await r.cancel("s1")
    res = await t
    assert res.stop_reason == "cancelled" and res.meta["search_id"] == "s1"
    assert not await r.cancel("s1")  # finished: nothing to cancel


def test_ledger_running_totals_match_the_sums():
    rng = random.Random(0)
    led = TokenLedger(10_000, 200)
    accts = []
    for step in range(2000):
        op = rng.random()
        if op < 0.3 or not accts:
            accts.append(led.open(f"q{step}", weight=rng.choice([0.5, 1, 2])))
        else:
            a = rng.choice(accts)
            if a.closed:
                continue
            if op < 0.7:
                a.spend(rng.uniform(0, 80))
            elif op < 0.85:
                a.regrant_weighted(rng.uniform(0.2, 3))
            else:
                led.close(a)
        brute = sum(x.committed for x in led.accounts.values())
        assert abs(led.committed - brute) < 1e-6 * max(1.0, brute)
        assert led.report()["open"] == sum(1 for x in led.accounts.values() if not x.closed)


async def test_duplicate_problem_ids_are_refused_by_every_run():
    import pytest

    r, _ = runner()
    p = named("d", 1, 6)[0]
    twin = dataclasses.replace(p, problem="Compute (1 + 2) * 3.", answer="9")
    with pytest.raises(ValueError, match="unique"):
        [x async for x in r.run([p, twin], "greedy", "n=1")]

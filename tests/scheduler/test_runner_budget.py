"""The job ledger in the runner: grants, overspend bounds, early-stop refunds (in-process)."""

import math

from ponder.config import PonderConfig
from ponder.scheduler.runner import Runner
from tests.search.fakes import FakePolicy, FakePRM, problems

# The most one batch can cost here: 8 full solutions of a level-2 problem (3 steps of at most
# ~10 words each), policy + PRM tokens at cost ratio 1.
ONE_BATCH = 8 * 40 * 2


def runner(p_correct: float, concurrency: int, **sched) -> Runner:
    cfg = PonderConfig.from_dict({"scheduler": {"max_concurrent_searches": concurrency, **sched}})
    return Runner(FakePolicy(p_correct=p_correct), FakePRM(lo=0.02), cfg)


async def collect(r: Runner, ps, strategy, budget, params=None):
    return {p.id: res async for p, res in r.run(ps, strategy, budget, params)}


async def test_job_budget_is_never_overspent_beyond_one_batch():
    ps = problems(8, level=2)
    r = runner(0.5, concurrency=1)
    out = await collect(r, ps, "auto", "300")
    ledger = r.ledger
    assert ledger is not None and ledger.total == 300 * 8
    spent = sum(res.compute.cost for res in out.values())
    assert spent == ledger.spent
    assert spent <= ledger.total + ONE_BATCH
    assert spent >= 0.5 * ledger.total  # the budget really bound the job
    for res in out.values():
        assert res.compute.cost <= res.meta["grant"] + ONE_BATCH


async def test_concurrent_searches_each_stay_within_grant_plus_one_batch():
    ps = problems(8, level=2)
    r = runner(0.5, concurrency=4, job_budget=1600)
    out = await collect(r, ps, "best_of_n", "n=64")
    assert r.ledger.total == 1600
    assert sum(res.meta["grant"] for res in out.values()) <= 1600 + 4 * ONE_BATCH
    for res in out.values():
        assert res.compute.cost <= res.meta["grant"] + ONE_BATCH
    assert r.ledger.spent <= 1600 + 4 * ONE_BATCH


async def test_early_stop_returns_budget_to_later_queries():
    ps = problems(6, level=2)
    r = runner(1.0, concurrency=1)  # every probe agrees: easy, stops on the probe's window
    out = await collect(r, ps, "auto", "1000")
    res = [out[p.id] for p in ps]
    assert all(x.meta["difficulty"] == "easy" and x.stop_reason == "early_stop" for x in res)
    assert all(x.meta["refund"] > 0 for x in res)
    assert r.ledger.refunded == sum(x.meta["refund"] for x in res)
    assert r.ledger.spent < r.ledger.total / 2
    grants = [x.meta["grant"] for x in res]
    assert grants == sorted(grants) and grants[-1] > grants[0]  # refunds raised later shares
    assert all(x.correct for x in res)


async def test_no_ledger_without_a_job_budget():
    r = runner(0.7, concurrency=4)
    out = await collect(r, problems(3), "best_of_n", "n=4")
    assert r.ledger is None and all("grant" not in x.meta for x in out.values())
    assert (await r.stats())["expansion_requests"] == 3
    assert math.isinf(r.make_context(problems(1)[0], math.inf).budget)


async def test_search_top_p_reaches_the_engine():
    from ponder.actors.factory import build_policy, build_reward
    from ponder.config import PonderConfig
    from ponder.scheduler.runner import Runner
    from ponder.search.types import Problem

    seen = []
    cfg = PonderConfig.load("configs/sim.yaml", ["search.top_p=0.5"])
    policy = build_policy(cfg.policy)
    real = policy.generate

    async def spy(requests):
        seen.extend(r.top_p for r in requests)
        return await real(requests)

    policy.generate = spy
    r = Runner(policy, build_reward(cfg.reward), cfg)
    await r.solve(Problem("p", "Compute (3 + 4) * 2.", "14"), "best_of_n", "n=2")
    assert seen and set(seen) == {0.5}

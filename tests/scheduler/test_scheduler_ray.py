"""The Scheduler actor over replica pools on a real local Ray cluster."""

import asyncio

import pytest

from ponder.config import PonderConfig
from ponder.scheduler import make_runner
from ponder.scheduler.runner import Runner
from ponder.scheduler.scheduler import RemoteRunner
from tests.scheduler.engines import build_policy, build_reward, engine_configs
from tests.scheduler.ray_fixtures import ray, ray_local, ray_session  # noqa: F401
from tests.search.fakes import FakePolicy, FakePRM, problems

pytestmark = pytest.mark.ray


def config(**cluster) -> PonderConfig:
    pol, rew = engine_configs(delay=(0.005, 0.02))
    cfg = PonderConfig(policy=pol, reward=rew)
    cfg.cluster.address = "local"
    cfg.cluster.cpus_per_replica = 0
    cfg.cluster.policy_replicas = 2
    cfg.cluster.reward_replicas = 1
    for k, v in cluster.items():
        setattr(cfg.cluster, k, v)
    cfg.scheduler.max_concurrent_searches = 64
    return cfg


def in_process(cfg: PonderConfig) -> Runner:
    return Runner(FakePolicy(**cfg.policy.options), FakePRM(**cfg.reward.options), cfg)


def same(a, b) -> bool:
    return (a.answer, a.trajectory, a.stop_reason, a.compute, [c.score for c in a.candidates]) == (
        b.answer, b.trajectory, b.stop_reason, b.compute, [c.score for c in b.candidates])


@pytest.fixture(scope="module")
def remote(ray_local):  # noqa: F811
    cfg = config()
    r = RemoteRunner.start(cfg, build_policy, build_reward)
    yield r, cfg
    r.shutdown()


async def collect(runner, ps, strategy, budget):
    return {p.id: res async for p, res in runner.run(ps, strategy, budget)}


async def test_many_concurrent_searches_match_the_in_process_runner(remote):
    r, cfg = remote
    ps = problems(24, level=3, seed=11)
    got = await collect(r, ps, "beam_search", "n=8")
    want = await collect(in_process(cfg), ps, "beam_search", "n=8")
    assert set(got) == {p.id for p in ps}
    assert all(same(got[k], want[k]) for k in want)
    assert all(g.stop_reason != "error" for g in got.values())
    assert sum(g.correct for g in got.values()) >= 12  # search finds most answers (p_correct=0.7)
    one = await r.solve(ps[0], "best_of_n", "n=4")
    assert same(one, await in_process(cfg).solve(ps[0], "best_of_n", "n=4"))
    stats = await r.stats()
    assert stats["searches"]["finished"] == 25 and stats["searches"]["errors"] == 0
    assert stats["policy_pool"]["replicas"] == 2 and 0 < stats["policy_pool"]["busy_fraction"] <= 1
    assert stats["reward_pool"]["tokens"] > 0 and stats["policy_mean_batch"] > 1
    assert stats["expansion_requests"] > 0 and stats["scheduler_cpu_s"] > 0


async def test_every_strategy_matches_the_in_process_runner(remote):
    """Two policy replicas, Ray's timing and batching: seeds come from the tree, so each
    strategy's results equal the in-process run's (issue 13)."""
    from ponder.search import registry

    r, cfg = remote
    ps = problems(3, level=3, seed=5)
    for strategy in (s for s in registry.names() if s != "probe"):
        got = await collect(r, ps, strategy, "n=8")
        want = await collect(in_process(cfg), ps, strategy, "n=8")
        assert set(got) == set(want) and all(same(got[k], want[k]) for k in want), strategy


async def test_a_killed_replica_fails_no_search(remote):
    r, cfg = remote
    ps = problems(24, level=5, seed=5)
    run = asyncio.ensure_future(collect(r, ps, "beam_search", "n=8"))
    [victim, _] = await r.actor.replicas.remote("policy")
    await asyncio.sleep(0.15)
    assert not run.done()
    ray.kill(victim, no_restart=False)
    got = await run
    want = await collect(in_process(cfg), ps, "beam_search", "n=8")
    assert all(g.stop_reason != "error" for g in got.values())
    assert all(same(got[k], want[k]) for k in want)
    stats = await r.stats()
    assert stats["policy_pool"]["restarts_seen"] >= 1


async def test_scaling_mid_run_and_health(remote):
    r, cfg = remote
    ps = problems(16, level=3, seed=9)
    run = asyncio.ensure_future(collect(r, ps, "dvts", "n=8"))
    await asyncio.sleep(0.2)
    assert await r.scale(policy=3, reward=2) == {"policy": 3, "reward": 2}
    assert await r.scale(policy=1) == {"policy": 1, "reward": 2}
    got = await run
    want = await collect(in_process(cfg), ps, "dvts", "n=8")
    assert all(same(got[k], want[k]) for k in want)
    h = await r.health()
    assert len(h["policy"]) == 1 and len(h["reward"]) == 2 and all(x["ok"] for x in h["policy"] + h["reward"])
    await r.scale(policy=2, reward=1)


async def test_auto_with_a_job_ledger_runs_remotely(remote):
    r, cfg = remote
    ps = problems(8, level=2, seed=3)
    got = await collect(r, ps, "auto", "400")
    want = await collect(in_process(cfg), ps, "auto", "400")
    assert all(same(got[k], want[k]) for k in want)
    assert {g.meta["difficulty"] for g in got.values()} <= {"easy", "medium", "hard"}
    stats = await r.stats()
    assert stats["ledger"]["total"] == 400 * 8
    assert stats["ledger"]["spent"] == pytest.approx(sum(g.compute.cost for g in got.values()))


def test_make_runner_in_process_without_address():
    cfg = PonderConfig()
    cfg.policy.kind = cfg.reward.kind = "nonexistent"
    cfg.cluster.address = "inprocess"
    with pytest.raises(Exception, match="nonexistent"):
        make_runner(cfg)  # in-process: builds engines here and fails on the unknown kind


async def test_budget_and_early_stop_over_the_pools(ray_local):  # noqa: F811
    # The job ledger of test_runner_budget.py, but with the searches in the scheduler actor and
    # their requests batched over replica pools: one batch is the most a search may overspend.
    one_batch = 8 * 40 * 2  # 8 full level-2 solutions, policy + PRM tokens

    def start(p_correct: float, **sched) -> RemoteRunner:
        cfg = config()
        cfg.policy.options["p_correct"] = p_correct
        for k, v in sched.items():
            setattr(cfg.scheduler, k, v)
        return RemoteRunner.start(cfg, build_policy, build_reward)

    bound = start(0.5, max_concurrent_searches=4, job_budget=1600)
    try:
        out = await collect(bound, problems(8, level=2), "best_of_n", "n=64")
        ledger = (await bound.stats())["ledger"]
        assert ledger["total"] == 1600 and ledger["spent"] <= 1600 + 4 * one_batch
        assert all(res.compute.cost <= res.meta["grant"] + one_batch for res in out.values())
    finally:
        bound.shutdown()

    agree = start(1.0, max_concurrent_searches=1)  # every probe agrees: easy, stops at once
    try:
        ps = problems(6, level=2)
        out = await collect(agree, ps, "auto", "1000")
        res = [out[p.id] for p in ps]
        assert all(x.stop_reason == "early_stop" and x.meta["refund"] > 0 and x.correct for x in res)
        ledger = (await agree.stats())["ledger"]
        assert ledger["refunded"] == pytest.approx(sum(x.meta["refund"] for x in res))
        grants = [x.meta["grant"] for x in res]
        assert grants == sorted(grants) and grants[-1] > grants[0]  # refunds raised later shares
    finally:
        agree.shutdown()

"""Scheduler shards over one set of replicas, on a real local Ray cluster (issue 14)."""

import pytest

from ponder.config import ConfigError, PonderConfig
from ponder.scheduler.shards import ShardedRunner, _merge, shard_of
from tests.scheduler.ray_fixtures import ray, ray_local, ray_session  # noqa: F401
from tests.scheduler.test_scheduler_ray import collect, config, in_process, same
from tests.search.fakes import problems

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def sharded(ray_local):  # noqa: F811
    from tests.scheduler.engines import build_policy, build_reward

    cfg = config(scheduler_shards=2)
    r = ShardedRunner.start(cfg, build_policy, build_reward)
    yield r, cfg
    r.shutdown()


async def test_shards_share_the_replicas_and_match_one_scheduler(sharded):
    r, cfg = sharded
    ps = problems(20, level=3, seed=13)
    assert {shard_of(p.id, 2) for p in ps} == {0, 1}  # both shards get work
    got = await collect(r, ps, "beam_search", "n=8")
    want = await collect(in_process(cfg), ps, "beam_search", "n=8")
    assert set(got) == set(want) and all(same(got[k], want[k]) for k in want)
    # the same replica actors behind both shards' pools, and no more than the config asks for
    for role, n in (("policy", cfg.cluster.policy_replicas), ("reward", cfg.cluster.reward_replicas)):
        ids = [sorted(h._actor_id.hex() for h in await s.actor.replicas.remote(role)) for s in r.shards]
        assert ids[0] == ids[1] and len(ids[0]) == n
    stats = await r.stats()
    assert [s["searches"]["finished"] > 0 for s in stats["shards"]] == [True, True]
    assert stats["searches"]["finished"] == 20


async def test_a_job_budget_is_split_and_cancel_reaches_every_shard(sharded):
    r, _ = sharded
    ps = problems(12, level=2, seed=4)
    await r.open_job("j1", budget=400 * 12, queries=12)
    results = [await r.solve(p, "best_of_n", "n=4", job="j1") for p in ps]
    report = await r.job_stats("j1")
    assert report["ledger"]["total"] == pytest.approx(400 * 12)
    assert report["ledger"]["spent"] == pytest.approx(sum(x.compute.cost for x in results))
    assert await r.cancel_job("j1") == 0  # nothing live
    closed = await r.close_job("j1")
    assert closed["searches"]["finished"] == 12


def test_the_config_refuses_autoscaling_with_shards():
    cfg = PonderConfig()
    cfg.cluster.scheduler_shards = 2
    cfg.cluster.policy_max_replicas = 3
    with pytest.raises(ConfigError, match="fixed pool sizes"):
        cfg.cluster.validate()
    cfg.cluster.policy_max_replicas = None
    cfg.cluster.scheduler_shards = 0
    with pytest.raises(ConfigError, match="at least 1"):
        cfg.cluster.validate()


def test_merge_sums_numbers_and_nested_reports():
    assert _merge([{"a": 1, "b": {"c": 2.5}, "s": "x"}, {"a": 2, "b": {"c": 1}, "s": "y"}]) == {
        "a": 3, "b": {"c": 3.5}, "s": "x"}

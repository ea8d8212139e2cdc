"""Replica actors on a real local Ray cluster (fake engines with small latencies)."""

import asyncio

import pytest

from ponder.actors.engine import ScoreRequest, StepRequest
from ponder.actors.replica import actor_options, make_replica
from ponder.config import ClusterConfig
from tests.scheduler.engines import build_policy, build_reward, engine_configs
from tests.scheduler.ray_fixtures import ray, ray_local, ray_session  # noqa: F401
from tests.search.fakes import FakePolicy, FakePRM, problems


def test_actor_options_pin_resources_and_cap_concurrency():
    c = ClusterConfig(cpus_per_replica=0, max_inflight_per_replica=3, gpus_per_replica=1,
                      policy_resources={"policy_node": 1}, reward_resources={"prm_node": 0.5})
    p, r = actor_options("policy", c), actor_options("reward", c)
    assert p["resources"] == {"policy_node": 1} and r["resources"] == {"prm_node": 0.5}
    assert p["num_cpus"] == 0 and p["max_concurrency"] > 3
    assert "num_gpus" not in p  # no Ray cluster with GPUs here
    with pytest.raises(ValueError, match="role"):
        actor_options("critic", c)


@pytest.mark.ray
async def test_replicas_serve_count_and_cap_inflight(ray_local):  # noqa: F811
    pol_cfg, rew_cfg = engine_configs(delay=(0.02, 0.03))
    cluster = ClusterConfig(cpus_per_replica=0, max_inflight_per_replica=2)
    pol = make_replica("policy", pol_cfg, cluster, build_policy)
    rew = make_replica("reward", rew_cfg, cluster, build_reward)
    h = await pol.health.remote()
    assert h["ok"] and h["role"] == "policy" and h["node_id"] == ray.get_runtime_context().get_node_id()
    p = problems(1)[0]
    reqs = [[StepRequest(p.problem, [], n=2, seed=i)] for i in range(8)]
    outs = await asyncio.gather(*(pol.generate.remote(r) for r in reqs))
    local = FakePolicy(**pol_cfg.options)
    for r, out in zip(reqs, outs):
        assert out == await local.generate(r)  # same seed, same steps, wherever it runs
    s = await pol.stats.remote()
    assert s["calls"] == 8 and s["requests"] == 8
    assert s["tokens"] == sum(st.tokens for out in outs for samples in out[0] for st in samples)
    assert s["max_inflight_seen"] == 2  # 8 concurrent calls, capped at 2 in the engine
    assert 0 < s["busy_s"] <= s["uptime_s"]
    steps = outs[0][0][0][0].text
    [res] = await rew.score.remote([ScoreRequest(p.problem, [steps])])
    assert res.rewards == FakePRM(**rew_cfg.options).score_one(ScoreRequest(p.problem, [steps])).rewards
    assert (await rew.stats.remote())["tokens"] == res.tokens
    for a in (pol, rew):
        ray.kill(a, no_restart=True)

"""Replica pools: routing (pure), and on a real local Ray cluster: retry when a replica is
killed mid-run, replacement, and scaling without dropping requests."""

import asyncio

import pytest

from ponder.actors.engine import StepRequest
from ponder.actors.pool import Member, ReplicaPool
from ponder.config import ClusterConfig, EngineConfig
from tests.scheduler.engines import build_policy, engine_configs
from tests.scheduler.ray_fixtures import ray, ray_local, ray_session  # noqa: F401
from tests.search.fakes import FakePolicy, problems


def pool_with(n: int, cap: int = 4, slack: int = 64, load_factor: float = 1.0) -> ReplicaPool:
    pool = ReplicaPool("policy", EngineConfig(kind="fake"), ClusterConfig(max_inflight_per_replica=cap),
                       affinity_slack=slack, affinity_load_factor=load_factor)
    pool.members = [Member(None, i) for i in range(n)]
    return pool


def req(key: str | None, n: int = 1) -> StepRequest:
    return StepRequest("Compute 1 + 2.", [], n=n, affinity=key)


def test_routing_keeps_a_key_on_its_replica_and_balances_the_rest():
    pool = pool_with(3)
    first = pool.route([req("a"), req("b"), req("c")])
    owner = {k: m for m, idx in first.items() for k in "abc" if "abc"[idx[0]] == k}
    assert len(first) == 3  # three keys spread over three idle replicas
    again = pool.route([req("c"), req("a")])
    assert again == {owner["c"]: [0], owner["a"]: [1]}
    assert pool.counts["affinity_hits"] == 2
    # Keyless requests go to the least loaded replica.
    owner["a"].outstanding = 10
    owner["b"].outstanding = 5
    assert pool.route([req(None)]) == {owner["c"]: [0]}


def test_routing_falls_back_when_the_affine_replica_is_overloaded_or_gone():
    pool = pool_with(2, cap=2, slack=8, load_factor=0.0)  # the slack alone decides
    [(m0, _)] = pool.route([req("t")]).items()
    other = next(m for m in pool.members if m is not m0)
    m0.calls = 2  # at its in-flight cap while the other is idle
    assert list(pool.route([req("t")])) == [other]
    assert pool.counts["affinity_misses"] == 1
    other.outstanding = 20  # now the key's replica (other) carries far more than m0
    m0.calls = 0
    assert list(pool.route([req("t")])) == [m0]
    m0.healthy = False
    assert list(pool.route([req("t")])) == [other]
    other.draining = True
    assert pool.route([req("t")]) == {}


def test_bounded_load_keeps_affinity_at_high_load_but_not_past_the_bound():
    pool = pool_with(4, cap=64, slack=8)  # a key may stay while its replica is within 2x the mean load
    [(home, _)] = pool.route([req("t")]).items()
    for m in pool.members:
        m.outstanding = 1000  # a heavily loaded pool: the slack (8) is nothing at this load
    home.outstanding = 1500  # 500 over the least loaded, but under 2x the mean (1125)
    assert list(pool.route([req("t", n=4)])) == [home]
    home.outstanding = 4000  # over 2x the mean (1751): it moves to the least loaded
    assert list(pool.route([req("t", n=4)])) != [home]
    assert pool.counts["affinity_misses"] == 1
    old = pool_with(4, cap=64, slack=8, load_factor=0.0)  # slack alone: 500 over the least moves it
    [(home, _)] = old.route([req("t")]).items()
    for m in old.members:
        m.outstanding = 1000
    home.outstanding = 1500
    assert list(old.route([req("t", n=4)])) != [home]


def test_bad_role():
    with pytest.raises(ValueError, match="role"):
        ReplicaPool("critic", EngineConfig())


def requests(k: int) -> list[list[StepRequest]]:
    ps = problems(6, level=3)
    return [[StepRequest(ps[i % 6].problem, [], n=2, to_end=True, max_steps=8, seed=i, affinity=f"t{i % 40}")]
            for i in range(k)]


async def expected(batches):
    local = FakePolicy(**engine_configs()[0].options)
    return [await local.generate(b) for b in batches]


async def start_pool(n: int, **cluster) -> ReplicaPool:
    pol, _ = engine_configs(delay=(0.01, 0.03))
    cfg = ClusterConfig(cpus_per_replica=0, max_inflight_per_replica=4, **cluster)
    return await ReplicaPool("policy", pol, cfg, builder=build_policy).start(n)


@pytest.mark.ray
async def test_killed_replica_mid_run_loses_no_request(ray_local):  # noqa: F811
    pool = await start_pool(2)
    batches = requests(60)
    want = await expected(batches)

    async def client(i):
        await asyncio.sleep(0.005 * i)
        return await pool.generate(batches[i])

    tasks = [asyncio.ensure_future(client(i)) for i in range(len(batches))]
    await asyncio.sleep(0.1)
    victim = pool.members[0]
    assert victim.calls > 0  # it has work in flight when it dies
    ray.kill(victim.handle, no_restart=False)
    got = await asyncio.gather(*tasks)
    assert got == want  # every request answered, identically (seeded engines)
    assert pool.counts["retries"] >= 1 and pool.counts["restarts_seen"] >= 1
    await pool.wait_healthy(30)  # Ray restarted it and the pool took it back
    assert (await pool.generate(batches[0])) == want[0]
    assert all(h["ok"] for h in await pool.health())
    await pool.close()


@pytest.mark.ray
async def test_dead_replica_is_replaced(ray_local):  # noqa: F811
    pool = await start_pool(1, restart_timeout_s=5.0)
    batches = requests(10)
    want = await expected(batches)
    ray.kill(pool.members[0].handle, no_restart=True)
    got = await asyncio.gather(*(pool.generate(b) for b in batches))
    assert got == want
    assert pool.counts["replaced"] == 1 and pool.size == 1
    await pool.close()


@pytest.mark.ray
async def test_scale_up_and_down_mid_run(ray_local):  # noqa: F811
    pool = await start_pool(1)
    batches = requests(80)
    want = await expected(batches)

    async def client(i):
        await asyncio.sleep(0.005 * (i % 40))
        return await pool.generate(batches[i])

    # Wave 1 runs while the pool grows; wave 2 starts on 3 replicas and runs while it shrinks.
    wave1 = [asyncio.ensure_future(client(i)) for i in range(40)]
    await asyncio.sleep(0.02)
    await pool.scale(3)
    assert pool.size == 3
    wave2 = [asyncio.ensure_future(client(i)) for i in range(40, 80)]
    await asyncio.sleep(0.1)
    served = await pool.stats()
    assert sum(1 for r in served["per_replica"] if r.get("requests", 0) > 0) >= 2  # new replicas took work
    removed = [m.handle for m in pool.members]
    await pool.scale(1)
    assert pool.size == 1 and len(pool.members) == 1
    got = await asyncio.gather(*wave1, *wave2)
    assert got == want
    assert pool.counts["retries"] == 0  # drained, not killed mid-call
    gone = [h for h in removed if h is not pool.members[0].handle]
    await asyncio.sleep(0.5)
    for h in gone:
        with pytest.raises(ray.exceptions.RayActorError):
            await asyncio.wait_for(h.health.remote(), 10)
    with pytest.raises(ValueError, match="at least one"):
        await pool.scale(0)
    await pool.close()


@pytest.mark.ray
async def test_one_turns_sub_batches_share_a_ray_call_and_a_bad_one_fails_alone(ray_local):  # noqa: F811
    from ponder.config import EngineConfig

    pool = await ReplicaPool("policy", EngineConfig(kind="sim"), ClusterConfig(cpus_per_replica=0)).start(1)
    ps = problems(3, level=2)
    good = [[StepRequest(p.problem, [], n=2, seed=i)] for i, p in enumerate(ps)]
    alone = [await pool.generate(b) for b in good]
    calls = pool.counts["ray_calls"]
    assert await asyncio.gather(*(pool.generate(b) for b in good)) == alone
    assert pool.counts["ray_calls"] == calls + 1  # three sub-batches, one call
    bad = [StepRequest("What is the capital of France?", [], n=1, seed=9)]
    got = await asyncio.gather(pool.generate(good[0]), pool.generate(bad), pool.generate(good[2]),
                               return_exceptions=True)
    assert got[0] == alone[0] and got[2] == alone[2]
    assert isinstance(got[1], Exception) and "arithmetic" in str(got[1])
    await pool.close()


class _SizedDelay:
    """A fake policy that holds big requests (n >= 50) for a second and answers others at once."""

    def __init__(self, engine):
        self.engine = engine

    async def generate(self, requests):
        await asyncio.sleep(1.0 if any(r.n >= 50 for r in requests) else 0.01)
        return await self.engine.generate(requests)

    def info(self):
        return self.engine.info()


def build_sized(cfg):
    return _SizedDelay(FakePolicy(**cfg.options))


@pytest.mark.ray
async def test_each_shards_pool_routes_by_the_load_other_shards_put_on_a_replica(ray_local):  # noqa: F811
    # Two pools over the same two replicas, as two scheduler shards have: pool a puts 100 samples
    # of work on replica 0; pool b learns it from its next reply from replica 0 and routes away.
    pol, _ = engine_configs(delay=None)
    cfg = ClusterConfig(cpus_per_replica=0, max_inflight_per_replica=4)
    b = await ReplicaPool("policy", pol, cfg, builder=build_sized).start(2)
    a = ReplicaPool("policy", pol, cfg)
    a.members = [Member(b.members[0].handle, 0)]
    r0, r1 = b.members
    p = problems(1)[0]
    big = asyncio.ensure_future(a.generate([StepRequest(p.problem, [], n=100, seed=1)]))
    await asyncio.sleep(0.3)  # a's call is at replica 0 for a second
    probe = StepRequest(p.problem, [], n=1, seed=2)
    assert list(b.route([probe])) == [r0]  # b knows nothing yet: a tie, the first replica
    await b.generate([probe])
    assert (r0.others, r1.others) == (100, 0)  # replica 0's reply said what a has there
    assert list(b.route([probe])) == [r1]  # without the shared load: r0 again (b has nothing on either)
    await big
    r0.others_at = float("-inf")  # a report older than load_ttl_s no longer counts
    assert list(b.route([probe])) == [r0]
    await b.close()

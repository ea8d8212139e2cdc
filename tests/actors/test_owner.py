"""Replica owners on a real local Ray cluster: replicas outlive a Scheduler actor crash (and an
owner crash); a pool with an owner attaches to the owner's replicas before making any, and
retires and closes through it."""

import asyncio
import time
import uuid

import pytest

from ponder.actors.owner import actor_id, get_owner
from ponder.actors.pool import ReplicaPool
from ponder.config import ClusterConfig, PonderConfig
from ponder.scheduler.scheduler import SchedulerActor
from ponder.search.types import SearchResult, problem_to_dict
from tests.actors.test_pool import requests
from tests.scheduler.engines import build_policy, build_reward, engine_configs
from tests.scheduler.ray_fixtures import ray, ray_local, ray_session  # noqa: F401
from tests.search.fakes import FakePolicy, problems

pytestmark = pytest.mark.ray


@pytest.fixture
def owner_name(ray_local):  # noqa: F811
    """A fresh owner name; afterwards every actor named after it is killed (scheduler first, so a
    restarting one cannot make the owner again), whatever the test left behind."""
    name = f"owner-{uuid.uuid4().hex[:8]}"
    yield name
    ours = [n for n in ray.util.list_named_actors() if n == name or n.startswith((f"{name}:", f"{name}-"))]
    for n in sorted(ours, key=lambda n: (not n.startswith(f"{name}-"), n != name)):
        try:
            ray.kill(ray.get_actor(n))
        except ValueError:  # already gone
            pass


def pool(owner, **kw) -> ReplicaPool:
    pol, _ = engine_configs()
    return ReplicaPool("policy", pol, ClusterConfig(cpus_per_replica=0, max_inflight_per_replica=4),
                       builder=build_policy, owner=owner, **kw)


def ids(handles) -> set[str]:
    # A set: a pool spawns concurrently, so its order need not be the owner's creation order.
    return {actor_id(h) for h in handles}


async def gone(handle, method: str = "health", timeout: float = 20.0) -> bool:
    """True once calls to the actor fail (a kill lands asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            await asyncio.wait_for(getattr(handle, method).remote(), 5)
        except ray.exceptions.RayActorError:
            return True
        await asyncio.sleep(0.1)
    return False


async def until_restarted(sched, timeout: float = 60.0) -> None:
    """Wait for the restarted scheduler to be up: the kill lands asynchronously, so a call right
    after it may still reach the old one, which has finished a search where a fresh one has not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if (await asyncio.wait_for(sched.stats.remote(), 10))["searches"]["finished"] == 0:
                return
        except (ray.exceptions.RayActorError, asyncio.TimeoutError):
            pass
        await asyncio.sleep(0.2)
    raise TimeoutError("the scheduler did not come back")


def outcome(d: dict) -> tuple:
    r = SearchResult.from_dict(d)
    return r.answer, r.trajectory, r.stop_reason, r.compute, [c.score for c in r.candidates]


async def test_replicas_outlive_a_scheduler_crash(owner_name):
    pol, rew = engine_configs()
    cfg = PonderConfig(policy=pol, reward=rew, cluster=ClusterConfig(cpus_per_replica=0, policy_replicas=2, reward_replicas=1))
    sched = SchedulerActor.options(name=f"{owner_name}-scheduler", max_restarts=-1).remote(
        cfg.to_dict(), build_policy, build_reward, owner_name)
    problem = problem_to_dict(problems(1, level=3, seed=4)[0])

    async def replicas() -> dict[str, dict[str, int]]:  # role -> actor id -> pid
        hs = {role: await sched.replicas.remote(role) for role in ("policy", "reward")}
        return {role: {actor_id(h): (await h.health.remote())["pid"] for h in v} for role, v in hs.items()}

    before = await sched.solve.remote(problem, "beam_search", "n=4")
    reps_before = await replicas()
    assert [len(v) for v in reps_before.values()] == [2, 1]

    ray.kill(sched, no_restart=False)  # a crash: Ray restarts the actor
    await until_restarted(sched)
    after = await sched.solve.remote(problem, "beam_search", "n=4")
    assert (await sched.stats.remote())["searches"]["finished"] == 1  # a fresh scheduler served it

    assert await replicas() == reps_before  # the same actors (ids), never restarted (pids)
    assert outcome(after) == outcome(before)
    owner = get_owner(owner_name)
    assert ids(await owner.replicas.remote("policy")) == set(reps_before["policy"])  # nothing new made

    # An explicit shutdown still kills the replicas, and the owner with them.
    handles = await sched.replicas.remote("policy") + await sched.replicas.remote("reward")
    await sched.shutdown.remote()
    assert all([await gone(h) for h in handles]) and await gone(owner, "close")


async def test_a_pool_attaches_to_the_owners_replicas(owner_name):
    owner = get_owner(owner_name)
    first = await pool(owner).start(2)
    made = ids(m.handle for m in first.members)
    assert ids(await owner.replicas.remote("policy")) == made
    first.detach()  # what a scheduler going away leaves: live replicas, no pool

    again = await pool(owner).start(2)
    assert ids(m.handle for m in again.members) == made  # attached, none spawned
    batches = requests(4)
    local = FakePolicy(**engine_configs()[0].options)
    assert [await again.generate(b) for b in batches] == [await local.generate(b) for b in batches]
    assert ids(m.handle for m in (await pool(owner).start(1)).members) == made  # surplus kept, not killed
    bigger = await pool(owner).start(3)  # attaches 2, makes the third
    assert made < ids(m.handle for m in bigger.members) and len(bigger.members) == 3
    assert len(await owner.replicas.remote("policy")) == 3
    assert await owner.replicas.remote("reward") == []


async def test_retire_and_close_kill_through_the_owner(owner_name):
    owner = get_owner(owner_name)
    p = await pool(owner).start(3)
    handles = [m.handle for m in p.members]
    await p.scale(2)  # drains one replica and retires it through the owner
    [victim] = [h for h in handles if actor_id(h) not in ids(m.handle for m in p.members)]
    assert await gone(victim)
    assert ids(await owner.replicas.remote("policy")) == ids(m.handle for m in p.members)
    await p.close()
    assert p.members == [] and await owner.replicas.remote("policy") == []
    assert all([await gone(h) for h in handles])


async def test_a_restarted_owner_finds_its_replicas_by_name(owner_name):
    owner = get_owner(owner_name)
    p = await pool(owner).start(2)
    made = ids(m.handle for m in p.members)
    order = [actor_id(h) for h in await owner.replicas.remote("policy")]  # creation order
    assert set(order) == made
    ray.kill(owner, no_restart=False)  # its in-memory books are lost; the replicas are detached
    assert [actor_id(h) for h in await owner.replicas.remote("policy")] == order  # the call waits out the restart
    extra = await owner.spawn.remote("policy", p.engine_cfg, p.cluster, build_policy)
    await extra.health.remote()
    assert ray.get_actor(f"{owner_name}:policy:2") is not None  # numbering went on, no clash
    assert [actor_id(h) for h in await owner.replicas.remote("policy")] == order + [actor_id(extra)]
    assert await owner.close.remote() == 3
    assert all([await gone(m.handle) for m in p.members]) and await gone(extra)

"""Jobs on a real local Ray cluster and a real redis-server, with the sim engines.

The chaos run kills the real things while a 300-problem job (beam search and best-of-N) runs:
the Scheduler actor (Ray restarts it; it re-attaches to the same replicas), the Redis server
(SIGKILL, then a restart on its AOF), the submitting client (`ponder jobs wait`, SIGKILL) and
the job worker actor (Ray restarts it).
Nobody reruns anything; the job must complete with exactly one record per key, equal to an
undisturbed seeded run (answers and compute).
"""

from __future__ import annotations

import signal

import pytest

from ponder.config import PonderConfig
from ponder.jobs.store import record_key
from ponder.jobs.worker import deployment_name
from tests.jobs.helpers import (  # noqa: F401
    NAMESPACE, SIM, STRATEGIES, COMPARED, baseline, cluster, ponder, ray, ray_local, ray_session, results, status,
    submit, wait_until,
)

pytestmark = [pytest.mark.ray, pytest.mark.redis, pytest.mark.slow]


def test_a_job_survives_a_scheduler_kill_a_redis_restart_and_a_dead_client(cluster, redis_server):  # noqa: F811
    address, cfg_file = cluster
    n = 300
    expected = baseline(n)
    assert len(expected) == n * len(STRATEGIES)

    job_id = submit(address, cfg_file, redis_server.url, f"arith:{n}")
    watcher = ponder("jobs", "wait", job_id, "--redis", redis_server.url, "--quiet")
    name = deployment_name(PonderConfig.from_dict(SIM))

    def done() -> int:
        return status(redis_server.url, job_id)["done"]

    # (a) The scheduler actor dies mid-job; Ray restarts it and it finds its replicas again.
    wait_until(lambda: done() >= 60, 120, "the first records")
    sched = ray.get_actor(f"{name}-scheduler", namespace=NAMESPACE)

    def replica_ids() -> dict[str, list[str]]:
        return {role: sorted(h._actor_id.hex() for h in ray.get(sched.replicas.remote(role)))
                for role in ("policy", "reward")}

    before = replica_ids()
    pids = {role: [ray.get(h.health.remote())["pid"] for h in ray.get(sched.replicas.remote(role))]
            for role in ("policy", "reward")}
    ray.kill(sched, no_restart=False)
    at_kill = done()
    # (c) The client that was watching dies too.
    watcher.send_signal(signal.SIGKILL)
    watcher.wait()

    # (b) Redis dies (SIGKILL) and comes back on its AOF while the job runs on.
    wait_until(lambda: done() >= at_kill + 100, 180, "progress after the scheduler restart")
    at_restart = done()
    redis_server.restart()

    # (d) The job worker itself dies; Ray restarts it and its consumer takes back its own items.
    wait_until(lambda: done() >= at_restart + 100, 180, "progress after the Redis restart")
    at_worker = done()
    ray.kill(ray.get_actor("ponder-jobs", namespace=NAMESPACE), no_restart=False)

    final = wait_until(lambda: (s := status(redis_server.url, job_id))["status"] == "completed" and s, 300,
                       "the job to complete")
    assert max(at_kill, at_restart, at_worker) < n * len(STRATEGIES)  # every kill hit a running job
    assert replica_ids() == before  # the same replica actors before and after the scheduler restart
    assert {role: [ray.get(h.health.remote())["pid"] for h in ray.get(sched.replicas.remote(role))]
            for role in ("policy", "reward")} == pids  # ... in the same processes (no model reload)

    recs = results(redis_server.url, job_id)
    keys = [record_key(r) for r in recs]
    assert len(keys) == len(set(keys)) == len(expected) == final["total"] == final["done"]
    assert final["errors"] == 0
    for r in recs:
        want = expected[record_key(r)]
        assert {k: r[k] for k in COMPARED} == {k: want[k] for k in COMPARED}, r["id"]

"""Autoscaling the pools on search backlog: the decision rule on fakes, and the whole loop with
the real Ray autoscaler and its fake multi-node provider (worker nodes are real raylets on
loopback): nodes of each type are added for the backlog and removed when it is gone, and every
search gets the answer an undisturbed run gives."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ponder.scheduler.autoscale import PoolAutoscaler

REPO = Path(__file__).resolve().parents[2]


@dataclass
class FakeStats:
    requests: int = 0


@dataclass
class FakeBatcher:
    queued: int = 0
    inflight_requests: int = 0
    stats: FakeStats = field(default_factory=FakeStats)


@dataclass
class FakePool:
    size: int = 1
    calls: list[int] = field(default_factory=list)

    async def scale(self, n: int) -> None:
        self.calls.append(n)
        self.size = n


def scaler(lo=1, hi=4, target=1.0, idle=10.0) -> tuple[PoolAutoscaler, FakePool, FakeBatcher]:
    pool, batcher = FakePool(), FakeBatcher()
    return PoolAutoscaler("policy", pool, batcher, lo, hi, target, idle), pool, batcher


def test_grows_in_proportion_to_the_backlog_up_to_max():
    a, pool, b = scaler(hi=4)
    a.observe(0.0)
    b.stats.requests, b.queued = 100, 300  # 100 req/s served, 300 waiting: 3 s of work at 1 replica
    a.observe(1.0)
    assert a.backlog_s == pytest.approx(3.0)
    assert a.decide(1.0, 1) == 3
    b.queued = 10_000
    a.observe(2.0)
    assert a.decide(2.0, 1) == 4  # capped


def test_a_backlog_with_nothing_served_yet_adds_one():
    a, _, b = scaler()
    b.queued = 50
    a.observe(0.0)
    assert math.isinf(a.backlog_s) and a.decide(0.0, 2) == 3


def test_shrinks_one_replica_per_idle_period_down_to_min():
    a, _, b = scaler(lo=1, idle=10.0)
    a.observe(0.0)
    b.stats.requests = 100
    a.observe(1.0)  # served 100/s, nothing waiting: calm
    assert a.decide(1.0, 3) == 3
    assert a.decide(5.0, 3) == 3  # not calm long enough
    assert a.decide(11.0, 3) == 2
    assert a.decide(12.0, 2) == 2  # the next step down needs another idle period
    assert a.decide(21.0, 2) == 1
    assert a.decide(40.0, 1) == 1  # never below min


def test_a_moderate_backlog_holds_the_size():
    a, _, b = scaler(target=1.0, idle=1.0)
    a.observe(0.0)
    b.stats.requests, b.queued = 100, 50  # 0.5 s of work: neither over the target nor calm
    a.observe(1.0)
    for t in (1.0, 3.0, 9.0):
        assert a.decide(t, 2) == 2


async def test_step_scales_in_the_background_and_waits_for_it():
    a, pool, b = scaler()
    b.queued = 10
    await a.step(0.0)
    await asyncio.sleep(0)
    assert pool.calls == [2] and a.scalings[-1]["to"] == 2


def _kill_cluster(gcs: str, tmp: str) -> None:
    import psutil

    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if (gcs in cmd or tmp in cmd) and p.pid != os.getpid():
            try:
                p.kill()
            except psutil.Error:
                pass


@pytest.mark.ray
@pytest.mark.slow
def test_backlog_adds_nodes_of_each_type_and_idle_nodes_go(tmp_path):
    import ray

    if ray.is_initialized():  # the shared test cluster: this test runs its own head
        ray.shutdown()
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "scheduler" / "autoscale_scenario.py")], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    where = None
    try:
        first = proc.stdout.readline()
        where = json.loads(first) if first.strip() else None
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
        if where is not None:
            _kill_cluster(where["gcs"], where["tmp"])
    assert proc.returncode == 0, err[-3000:]
    got = json.loads(out.strip().splitlines()[-1])
    assert got["started"]["nodes"] == {"policy": 1, "prm": 1}  # the first replicas brought their nodes
    assert got["max_sizes"] == {"policy": 2, "reward": 2}
    assert got["max_nodes"] == {"policy": 2, "prm": 2}  # each pool's growth brought a node of its type
    assert got["final"]["sizes"] == {"policy": 1, "reward": 1}
    assert got["final"]["nodes"] == {"policy": 1, "prm": 1}  # idle nodes removed
    assert got["stop_reasons"] == ["done"]

    # No search lost or changed: the same answers as an undisturbed in-process run.
    from ponder.actors.factory import build_policy, build_reward
    from ponder.config import PonderConfig
    from ponder.scheduler.runner import Runner
    from ponder.tasks.datasets import load_problems

    cfg = PonderConfig.load(REPO / "configs" / "sim.yaml", ["scheduler.max_concurrent_searches=200"])
    runner = Runner(build_policy(cfg.policy), build_reward(cfg.reward), cfg)
    problems = load_problems("arith:150:seed=5")

    async def undisturbed():
        return {p.id: r.answer async for p, r in runner.run(problems, "beam_search", "n=8")}

    assert got["answers"] == asyncio.run(undisturbed())

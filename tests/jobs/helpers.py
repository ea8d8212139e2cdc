"""Helpers for the job tests on a real Ray cluster: the CLI as a subprocess, store reads,
and the test cluster with cleanup of the CLI's detached actors."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest
import yaml

from ponder.config import PonderConfig
from ponder.jobs.client import call
from ponder.jobs.core import run_job
from ponder.jobs.local import LocalQueue
from ponder.jobs.spec import JobSpec
from ponder.jobs.store import MemoryStore, record_key
from ponder.scheduler import make_runner
from ponder.tasks.datasets import load_problems
from tests.api.process import REPO
from tests.scheduler.ray_fixtures import ray, ray_local, ray_session  # noqa: F401

NAMESPACE = "ponder"  # the CLI's (cluster.namespace default), where its detached actors live
SIM = {
    "policy": {"kind": "sim", "options": {"call_overhead_s": 0.01}},
    "reward": {"kind": "sim", "options": {"call_overhead_s": 0.01}},
    "cluster": {"cpus_per_replica": 0, "policy_replicas": 1, "reward_replicas": 1},
    "scheduler": {"max_concurrent_searches": 32},
    "jobs": {"lease_s": 30},
}
STRATEGIES, BUDGETS = ["beam_search", "best_of_n"], ["n=4"]
COMPARED = ("answer", "correct", "stop_reason", "compute", "trajectory")


def ponder(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "ponder", *args], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def baseline(n: int, strategies=STRATEGIES, budgets=BUDGETS) -> dict:
    """The undisturbed seeded run: the same job in-process, through the same job core."""
    cfg = PonderConfig.from_dict({**SIM, "cluster": {"address": "inprocess"}})
    spec = JobSpec.build(cfg, strategies, budgets, dataset=f"arith:{n}")
    store = MemoryStore()
    asyncio.run(run_job(make_runner(cfg), spec, LocalQueue(spec.plan(load_problems(f"arith:{n}")), store),
                        concurrency=32, poll_s=0.01))
    return {record_key(r): r for r in store.records()}


def status(url: str, job_id: str) -> dict:
    return call(url, lambda c: c.status(job_id))


def results(url: str, job_id: str) -> list[dict]:
    return call(url, lambda c: c.results(job_id))


def wait_until(pred, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def cluster(ray_local, tmp_path):  # noqa: F811
    """The test's Ray cluster, its GCS address for the CLI, and cleanup of the detached actors."""
    cfg_file = tmp_path / "sim.yaml"
    cfg_file.write_text(yaml.safe_dump(SIM))
    yield ray.get_runtime_context().gcs_address, cfg_file
    for info in ray.util.list_named_actors(all_namespaces=True):
        if info["namespace"] == NAMESPACE:
            try:
                ray.kill(ray.get_actor(info["name"], namespace=NAMESPACE), no_restart=True)
            except ValueError:
                pass


def submit(address: str, cfg_file, url: str, *extra: str, strategies=STRATEGIES, budgets=BUDGETS) -> str:
    args = ["submit", *extra, "--config", str(cfg_file), "--address", address, "--redis", url]
    for s in strategies:
        args += ["--strategy", s]
    for b in budgets:
        args += ["--budget", b]
    proc = ponder(*args)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    job_id = out.strip()
    assert len(job_id) == 32 and int(job_id, 16) >= 0  # 128 random bits, hex
    return job_id



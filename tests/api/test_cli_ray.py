"""`ponder eval` with its default runtime: a local Ray cluster (scheduler actor + replica pools).

Runs the CLI as a real process, then the same eval in-process, and compares the results line by
line: engines are seeded per request, so the runtime must not change what a search returns.
"""

from __future__ import annotations

import json
import pytest

pytestmark = pytest.mark.ray

COMPARED = ("answer", "correct", "stop_reason", "compute", "trajectory", "candidates")


def by_key(path) -> dict:
    return {(r["id"], r["budget"]): {k: r[k] for k in COMPARED} for r in map(json.loads, path.read_text().splitlines())}


def test_eval_over_local_ray_matches_in_process(tmp_path, run_ponder, monkeypatch):
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    sim = ["--set", "policy.kind=sim", "--set", "reward.kind=sim", "--strategy", "beam_search"]
    args = ["eval", "--dataset", "arith:6:seed=4:levels=3", "--budget", "n=4", "--budget", "n=8", *sim, "--quiet"]
    two = ["--set", "cluster.policy_replicas=2", "--set", "cluster.cpus_per_replica=0.5"]  # 3 replicas on 2 CPUs
    over_ray = run_ponder(*args, *two, "--out", str(tmp_path / "ray.jsonl"),
                          timeout=180)
    assert over_ray.returncode == 0, over_ray.stderr
    local = run_ponder(*args, "--address", "inprocess", "--out", str(tmp_path / "local.jsonl"))
    assert local.returncode == 0, local.stderr
    got, want = by_key(tmp_path / "ray.jsonl"), by_key(tmp_path / "local.jsonl")
    assert len(got) == 12 and got == want


def test_an_unreachable_cluster_is_one_line_at_once(tmp_path, run_ponder):
    out = tmp_path / "r.jsonl"
    done = run_ponder("eval", "--dataset", "arith:2", "--address", "127.0.0.1:1", "--out", str(out), timeout=30)
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "127.0.0.1:1" in done.stderr
    assert not out.exists() or out.read_text() == ""

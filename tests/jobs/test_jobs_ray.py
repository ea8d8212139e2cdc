"""Submitted jobs on a real local Ray cluster and a real redis-server (sim engines): a poison
problem, two concurrent jobs with their own budgets, cancelling one of them, and the CLI's
job commands."""

from __future__ import annotations

import json
import time

import pytest

from tests.jobs.helpers import (  # noqa: F401
    baseline, call, cluster, ponder, ray, ray_local, ray_session, results, status, submit, wait_until,
)

pytestmark = [pytest.mark.ray, pytest.mark.redis]


def run_cli(*args: str) -> tuple[int, str, str]:
    proc = ponder(*args)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def test_a_poison_problem_ends_as_an_error_record_and_the_job_completes(cluster, redis_server, tmp_path):  # noqa: F811
    address, cfg = cluster
    data = tmp_path / "mixed.jsonl"
    rows = [{"id": f"ok{i}", "problem": f"Compute ({i + 3} + {2 * i}) * 4.", "answer": str((3 * i + 3) * 4)}
            for i in range(12)]
    rows.insert(5, {"id": "poison", "problem": "Name the capital of France.", "answer": "Paris"})
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    job = submit(address, cfg, redis_server.url, str(data), "--max-attempts", "2",
                 strategies=["best_of_n"], budgets=["n=4"])
    final = wait_until(lambda: (s := status(redis_server.url, job))["status"] == "completed" and s, 120, "completion")
    recs = {r["id"]: r for r in results(redis_server.url, job)}
    assert len(recs) == 13 and final["done"] == 13 and final["errors"] == 1
    bad = recs["poison"]
    assert bad["stop_reason"] == "error" and bad["attempts"] == 2
    assert "\n" not in bad["error"] and "arithmetic" in bad["error"] and len(bad["error"]) <= 500
    # Its batch-mates were not failed with it.
    assert all(r["stop_reason"] != "error" and r["correct"] is not None for k, r in recs.items() if k != "poison")


def test_two_jobs_keep_their_budgets_and_cancelling_one_leaves_the_other(cluster, redis_server):  # noqa: F811
    address, cfg = cluster
    # Unbounded, best_of_n n=16 spends about 2.5k per problem here; A's budget binds, B's is 4x A's.
    a = submit(address, cfg, redis_server.url, "arith:40:seed=1", "--job-budget", "20000",
               strategies=["best_of_n"], budgets=["n=16"])
    b = submit(address, cfg, redis_server.url, "arith:40:seed=2", "--job-budget", "80000",
               strategies=["best_of_n"], budgets=["n=16"])
    done = {j: wait_until(lambda j=j: (s := status(redis_server.url, j))["status"] == "completed" and s, 180, j)
            for j in (a, b)}
    spent = {j: sum(r["compute"]["cost"] for r in results(redis_server.url, j)) for j in (a, b)}
    assert spent[a] == pytest.approx(done[a]["cost"]) and spent[b] == pytest.approx(done[b]["cost"])
    # Each within its own total, up to the error of an estimate: a search does not start a round
    # its grant cannot pay for by its own mean cost per sample so far, and its first round always
    # runs. Measured: 19,946 in-process, 20,218 in one run here (1.1% over); unchecked, 28,026.
    assert spent[a] <= 1.05 * 20000 and spent[b] <= 1.05 * 80000
    assert spent[a] < spent[b]
    assert spent[a] < 0.5 * baseline_cost(40)  # A's budget really bound it

    # Cancel C while D runs beside it: C stops at once, D completes untouched.
    c = submit(address, cfg, redis_server.url, "arith:300:seed=3", strategies=["beam_search"], budgets=["n=8"])
    d = submit(address, cfg, redis_server.url, "arith:60:seed=4", strategies=["beam_search"], budgets=["n=4"])
    wait_until(lambda: status(redis_server.url, c)["done"] >= 10, 120, "C to start")
    rc, _, err = run_cli("jobs", "cancel", c, "--redis", redis_server.url)
    assert rc == 0 and "cancelled" in err
    time.sleep(3)  # the worker sees the flag within a poll and cancels C's searches in the scheduler
    frozen = status(redis_server.url, c)
    time.sleep(3)
    later = status(redis_server.url, c)
    assert later["status"] == "cancelled" and later["done"] == frozen["done"] < later["total"]
    final_d = wait_until(lambda: (s := status(redis_server.url, d))["status"] == "completed" and s, 180, "D")
    recs_d = results(redis_server.url, d)
    assert final_d["done"] == len(recs_d) == 60 and all(r["stop_reason"] not in ("error", "cancelled") for r in recs_d)
    rc, _, err = run_cli("jobs", "cancel", d, "--redis", redis_server.url)
    assert rc == 1 and "already completed" in err


def baseline_cost(n: int) -> float:
    recs = baseline(n, ["best_of_n"], ["n=16"])
    return sum(r["compute"]["cost"] for r in recs.values())


def test_job_commands(cluster, redis_server, tmp_path):  # noqa: F811
    address, cfg = cluster
    job = submit(address, cfg, redis_server.url, "arith:20", "--name", "small",
                 strategies=["greedy", "best_of_n"], budgets=["n=2"])
    rc, out, _ = run_cli("jobs", "wait", job, "--redis", redis_server.url, "--quiet", "--timeout", "120")
    assert rc == 0 and job in out and "completed" in out and "40/40" in out
    rc, out, _ = run_cli("jobs", "list", "--redis", redis_server.url)
    assert rc == 0 and job in out
    rc, out, _ = run_cli("jobs", "status", job, "--json", "--redis", redis_server.url)
    st = json.loads(out)
    assert rc == 0 and st["status"] == "completed" and st["done"] == st["total"] == 40 and st["dataset"] == "arith:20"
    dest = tmp_path / "r.jsonl"
    rc, out, err = run_cli("jobs", "results", job, "--out", str(dest), "--redis", redis_server.url, "--summary")
    lines = [json.loads(x) for x in dest.read_text().splitlines()]
    assert rc == 0 and len(lines) == 40 and {r["strategy"] for r in lines} == {"greedy", "best_of_n"}
    assert all(r["dataset"] == "arith:20" for r in lines) and "greedy" in out
    # `ponder report` reads what `jobs results` wrote.
    rc, out, _ = run_cli("report", str(dest))
    assert rc == 0 and "best_of_n" in out
    # Bad ids and bad input: one line, non-zero, nothing written.
    rc, _, err = run_cli("jobs", "status", "0" * 32, "--redis", redis_server.url)
    assert rc == 1 and err.strip() == f"ponder: error: no job {'0' * 32}"
    rc, _, err = run_cli("submit", "arith:5", "--strategy", "nope", "--redis", redis_server.url, "--address", address)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    rc, _, err = run_cli("jobs", "list", "--redis", "http://x")
    assert rc == 2 and "redis://" in err

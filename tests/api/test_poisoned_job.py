"""A 200-problem job on the `sim` engines with five poisoned rows: the 195 others get exactly
the records of a clean run, and each poisoned row ends as its own clear record."""

from __future__ import annotations

import json
import time

from ponder.api import cli
from ponder.tasks.datasets import load_problems

SIM = ["--config", "configs/sim.yaml", "--address", "inprocess", "--quiet"]


def write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def records(path):
    return {r["id"]: r for r in map(json.loads, path.read_text().splitlines())}


def test_five_poisoned_rows_among_two_hundred(tmp_path, capsys):
    clean = [{"id": p.id, "problem": p.problem, "answer": p.answer} for p in load_problems("arith:195:seed=21")]
    poisoned = [
        {"id": "too-long", "problem": "Compute " + " + ".join(["1"] * 50_000) + ".", "answer": "50000"},
        {"id": "not-arith", "problem": "What is the capital of France?", "answer": "Paris"},
        {"id": "runaway-ref", "problem": "Compute (12 + 30) * 2.", "answer": "3^{3^{3^{3}}}"},
        {"id": "huge-ref", "problem": "Compute (12 + 30) * 3.", "answer": "9" * 5000},
        {"id": "no-label", "problem": "Compute (12 + 30) * 4.", "answer": ""},
    ]
    rows = clean[:50] + poisoned[:2] + clean[50:120] + poisoned[2:] + clean[120:]
    write(tmp_path / "clean.jsonl", clean)
    write(tmp_path / "mixed.jsonl", rows)
    base = ["eval", "--strategy", "best_of_n", "--budget", "n=4", *SIM]
    assert cli.main([*base, "--dataset", str(tmp_path / "clean.jsonl"), "--out", str(tmp_path / "a.jsonl")]) == 0
    t0 = time.perf_counter()
    code = cli.main([*base, "--dataset", str(tmp_path / "mixed.jsonl"), "--out", str(tmp_path / "b.jsonl")])
    wall = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert code == 1 and "2 of 200 searches failed" in err  # the two unsolvable rows, said in one line
    a, b = records(tmp_path / "a.jsonl"), records(tmp_path / "b.jsonl")
    assert len(b) == 200
    same = ("answer", "correct", "compute", "stop_reason", "trajectory")
    assert all({k: b[i][k] for k in same} == {k: a[i][k] for k in same} for i in a)  # the 195 untouched
    for bad in ("too-long", "not-arith"):
        assert b[bad]["stop_reason"] == "error" and "arithmetic" in b[bad]["error"]
        assert "\n" not in b[bad]["error"] and len(b[bad]["error"]) <= 500
    assert b["runaway-ref"]["correct"] is None and "not graded" in b["runaway-ref"]["meta"]["grading"]
    assert b["huge-ref"]["correct"] is False and b["huge-ref"]["answer"] is not None
    assert b["no-label"]["reference"] is None and b["no-label"]["correct"] is None
    assert wall < 120  # the runaway comparison is cut off at its limit, it does not hold the job

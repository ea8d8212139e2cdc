"""`python -m ponder` as a real process: exit codes, stdout/stderr, the files it leaves."""

from __future__ import annotations

import json


def test_eval_resume_and_report_as_a_process(tmp_path, engine, run_ponder):
    out, png = tmp_path / "r.jsonl", tmp_path / "acc.png"
    args = ["eval", "--dataset", "arith:4", "--budget", "n=2", "--budget", "n=8", *engine, "--out", str(out)]
    done = run_ponder(*args, "--plot", str(png))
    assert done.returncode == 0, done.stderr
    table = done.stdout.strip().splitlines()
    assert table[0].split()[:2] == ["strategy", "budget"] and len(table) == 2 + 2
    assert "eval: 100%" in done.stderr  # the progress bar
    lines = out.read_text().splitlines()
    assert len(lines) == 8 and all(json.loads(x)["budget"] in ("n=2", "n=8") for x in lines)
    assert png.read_bytes()[:4] == b"\x89PNG"

    # A crash mid-write of the last line: the rerun redoes only that problem.
    out.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:10])
    again = run_ponder(*args)
    assert again.returncode == 0, again.stderr
    assert "7 already in" in again.stderr and "1 to run" in again.stderr
    after = out.read_text().splitlines()
    assert after[:-1] == lines[:-1] and len(after) == 8
    assert {(json.loads(x)["id"], json.loads(x)["budget"]) for x in after} == {
        (json.loads(x)["id"], json.loads(x)["budget"]) for x in lines
    }

    report = run_ponder("report", str(out))
    assert report.returncode == 0 and report.stdout.strip().splitlines()[0] == table[0]


def test_bad_input_as_a_process(tmp_path, engine, run_ponder):
    out = tmp_path / "r.jsonl"
    out.write_text('{"id": "a", "strategy": "s", "budget": "n=1", "fingerprint": "f"}\n{"id": "b", "str')
    before = out.read_bytes()
    done = run_ponder("eval", "--dataset", "arith:3", "--strategy", "nope", *engine, "--out", str(out))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("ponder: error: unknown strategy 'nope'")
    assert done.stdout == "" and out.read_bytes() == before


def test_strategies_as_a_process(run_ponder):
    done = run_ponder("strategies")
    assert done.returncode == 0 and "\nbest_of_n" in done.stdout and "    n: " in done.stdout

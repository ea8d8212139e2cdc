"""`python -m ponder` as a real process: exit codes, stdout/stderr, the files it leaves."""

from __future__ import annotations

import json
import signal
import subprocess
import time

from tests.api.process import REPO, ponder_command


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


def slow_eval_args(out) -> list[str]:
    # Always the fake engine: its `delay` option makes the run slow enough to interrupt.
    args = [*ponder_command("fake"), "eval", "--dataset", "arith:30", "--budget", "n=2", "--quiet", "--out", str(out)]
    args += ["--set", "policy.kind=fake", "--set", "reward.kind=fake", "--set", "policy.options.delay=[0.05,0.1]"]
    return [*args, "--address", "inprocess"]


def interrupt_after_two_records(args: list[str], out, signals: int = 1) -> tuple[int, str]:
    """Run, send SIGINT `signals` times once two records are written; (exit code, stderr)."""
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while (not out.exists() or out.read_text().count("\n") < 2) and time.monotonic() < deadline:
            time.sleep(0.02)
        for i in range(signals):
            if i:
                time.sleep(0.05)
            proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, err


def test_ctrl_c_leaves_a_valid_file_that_resumes(tmp_path):
    out = tmp_path / "r.jsonl"
    args = slow_eval_args(out)
    code, err = interrupt_after_two_records([*args, "--set", "scheduler.max_concurrent_searches=2"], out)
    assert code == 130, err
    assert "interrupted" in err and "resume" in err
    text = out.read_text()
    assert text.endswith("\n")
    first = [json.loads(x)["id"] for x in text.splitlines()]
    assert 2 <= len(first) < 30
    resumed = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=60)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(first)} already in" in resumed.stderr
    ids = [json.loads(x)["id"] for x in out.read_text().splitlines()]
    assert ids[: len(first)] == first and len(ids) == len(set(ids)) == 30


def test_double_ctrl_c_says_interrupted_once_and_no_traceback(tmp_path):
    out = tmp_path / "r.jsonl"
    args = [*slow_eval_args(out), "--set", "scheduler.max_concurrent_searches=2"]
    code, err = interrupt_after_two_records(args, out, signals=2)
    assert code == 130, err
    assert err.count("ponder: interrupted") == 1 and "Traceback" not in err, err
    assert out.read_text().endswith("\n")

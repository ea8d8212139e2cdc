"""`ponder eval`, `report`, `solve` and `strategies` run in-process through `main(argv)`."""

from __future__ import annotations

import json
import re

import pytest

from ponder.api import cli
from ponder.search import registry

N = 6


def eval_args(out, engine, *extra) -> list[str]:
    return ["eval", "--dataset", f"arith:{N}", "--quiet", "--out", str(out), *engine, *extra]


def lines_of(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_eval_writes_one_wellformed_line_per_problem_and_prints_the_table(tmp_path, engine, capsys):
    out = tmp_path / "r.jsonl"
    assert cli.main(eval_args(out, engine, "--strategy", "best_of_n", "--budget", "n=4")) == 0
    table = capsys.readouterr().out
    recs = lines_of(out)
    assert sorted(r["id"] for r in recs) == sorted(f"arith-0-{i}" for i in range(N))
    for r in recs:
        assert r["strategy"] == "best_of_n" and r["budget"] == "n=4"
        assert r["stop_reason"] in ("done", "budget", "early_stop", "no_answer")
        assert r["correct"] == (r["answer"] == r["reference"])
        assert r["compute"]["cost"] > 0 and r["compute"]["generations"] >= 4
        assert r["level"] in {"1", "2", "3", "4", "5"} and r["wall_time"] >= 0
        assert r["candidates"]["count"] == sum(r["candidates"]["answers"].values()) >= 1
        assert all(isinstance(s["step"], str) for s in r["trajectory"])
        assert len({r["fingerprint"] for r in recs}) == 1
    header, _, row = table.strip().splitlines()
    assert header.split()[:4] == ["strategy", "budget", "n", "acc%"]
    accuracy = 100 * sum(r["correct"] for r in recs) / N
    assert row.split()[:4] == ["best_of_n", "n=4", str(N), f"{accuracy:.1f}"]


def test_resume_after_a_crash_skips_done_problems_and_never_duplicates(tmp_path, engine, capsys):
    out = tmp_path / "r.jsonl"
    args = eval_args(out, engine, "--budget", "n=4")
    assert cli.main(args) == 0
    full = out.read_text().splitlines(keepends=True)
    # A crash after two results, in the middle of writing the third.
    partial = "".join(full[:2]) + full[2][: len(full[2]) // 2]
    out.write_text(partial)
    capsys.readouterr()
    assert cli.main(args) == 0
    err = capsys.readouterr().err
    assert "truncated" in err and f"2 already in {out}, {N - 2} to run" in err
    text = out.read_text()
    assert text.startswith("".join(full[:2]))  # the finished lines are untouched
    ids = [r["id"] for r in lines_of(out)]
    assert len(ids) == len(set(ids)) == N
    # Deterministic engines: the rerun results equal the first run's (timestamps aside).
    strip = lambda r: {k: v for k, v in r.items() if k not in ("finished_at", "wall_time")}  # noqa: E731
    first = {json.loads(x)["id"]: strip(json.loads(x)) for x in full}
    assert {r["id"]: strip(r) for r in lines_of(out)} == first
    # A third run has nothing left to do and appends nothing.
    assert cli.main(args) == 0
    assert out.read_text() == text
    assert f"{N} already in" in capsys.readouterr().err


def test_errors_are_retried_on_resume(tmp_path, engine, capsys):
    out = tmp_path / "r.jsonl"
    args = eval_args(out, engine, "--budget", "n=4")
    assert cli.main(args) == 0
    recs = lines_of(out)
    broken = dict(recs[0], stop_reason="error", answer=None, correct=None, error="RuntimeError: boom")
    out.write_text("".join(json.dumps(r) + "\n" for r in [broken, *recs[1:]]))
    capsys.readouterr()
    assert cli.main(args) == 0
    assert f"{N - 1} already in {out}, 1 to run" in capsys.readouterr().err
    after = lines_of(out)
    assert len(after) == N + 1 and after[-1]["id"] == recs[0]["id"] and after[-1]["stop_reason"] != "error"


def test_a_search_that_raises_is_recorded_as_error_and_fails_the_run(tmp_path, engine, monkeypatch, capsys):
    strat = registry.get("best_of_n")

    async def explode(problem, ctx, cfg):
        raise RuntimeError("boom")

    monkeypatch.setitem(registry._REGISTRY, "best_of_n", registry.Strategy("best_of_n", explode, strat.config_cls))
    out = tmp_path / "r.jsonl"
    assert cli.main(eval_args(out, engine, "--budget", "n=4", "--limit", "2")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ponder: error: 2 of 2 searches failed after 3 attempts (first: RuntimeError: boom)")
    assert [r["stop_reason"] for r in lines_of(out)] == ["error", "error"]
    assert [r["attempts"] for r in lines_of(out)] == [3, 3]  # retried in the run, one record each


def test_interrupt_leaves_a_valid_file_that_resumes(tmp_path, engine, monkeypatch, capsys):
    out = tmp_path / "r.jsonl"
    from ponder.jobs import core

    real = core.make_record
    calls = []

    def interrupt_on_fourth(*a, **kw):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(core, "make_record", interrupt_on_fourth)
    args = eval_args(out, engine, "--budget", "n=4")
    assert cli.main(args) == cli.INTERRUPTED
    assert "run the same command to resume" in capsys.readouterr().err
    assert len(lines_of(out)) == 3
    monkeypatch.setattr(core, "make_record", real)
    assert cli.main(args) == 0
    assert len({r["id"] for r in lines_of(out)}) == len(lines_of(out)) == N


def test_a_failing_runner_is_one_line_and_keeps_the_results(tmp_path, engine, monkeypatch, capsys):
    import ponder.scheduler

    real = ponder.scheduler.make_runner

    def make_runner(config):
        runner = real(config)
        solve, calls = runner.solve, []

        async def solve_then_die(*a, **kw):
            calls.append(1)
            if len(calls) > 2:  # the scheduler is gone for good: every later call fails
                raise ConnectionError("scheduler actor died")
            return await solve(*a, **kw)

        runner.solve = solve_then_die
        return runner

    monkeypatch.setattr(ponder.scheduler, "make_runner", make_runner)
    out = tmp_path / "r.jsonl"
    assert cli.main(eval_args(out, engine, "--budget", "n=2")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("ponder: error: run failed: ConnectionError: scheduler actor died; results so far")
    assert len(lines_of(out)) == 2
    monkeypatch.setattr(ponder.scheduler, "make_runner", real)
    assert cli.main(eval_args(out, engine, "--budget", "n=2")) == 0
    assert len(lines_of(out)) == N


def test_out_must_not_be_the_dataset(tmp_path, engine, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text('{"problem": "Compute 1 + 2.", "answer": "3"}\n')
    assert cli.main(["eval", "--dataset", str(data), "--out", str(data), *engine]) == 2
    assert capsys.readouterr().err.startswith("ponder: error: --out must not be the dataset file")
    assert data.read_text() == '{"problem": "Compute 1 + 2.", "answer": "3"}\n'


def test_several_strategies_and_budgets_write_a_plot_and_report_rebuilds_the_table(tmp_path, engine, capsys):
    out, png, png2 = tmp_path / "r.jsonl", tmp_path / "acc.png", tmp_path / "again.png"
    args = eval_args(out, engine, "--strategy", "best_of_n", "--strategy", "beam_search")
    args += ["--budget", "n=4", "--budget", "n=8", "--plot", str(png)]
    assert cli.main(args) == 0
    table = capsys.readouterr().out.strip()
    rows = [line.split()[:3] for line in table.splitlines()[2:]]
    assert sorted(rows) == sorted([[s, b, str(N)] for s in ("best_of_n", "beam_search") for b in ("n=4", "n=8")])
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert len(lines_of(out)) == 4 * N
    # More samples cost more tokens for the same strategy.
    recs = lines_of(out)
    def total_cost(budget: str) -> float:
        return sum(r["compute"]["cost"] for r in recs if (r["strategy"], r["budget"]) == ("best_of_n", budget))

    assert total_cost("n=8") > total_cost("n=4")

    assert cli.main(["report", str(out), "--plot", str(png2)]) == 0
    assert capsys.readouterr().out.strip() == table
    assert png2.read_bytes()[:4] == b"\x89PNG"


def test_a_changed_config_is_a_new_key_in_the_same_file(tmp_path, engine, capsys):
    out = tmp_path / "r.jsonl"
    assert cli.main(eval_args(out, engine, "--budget", "n=4", "--limit", "3")) == 0
    assert cli.main(eval_args(out, engine, "--budget", "n=4", "--limit", "3", "--set", "search.seed=5")) == 0
    recs = lines_of(out)
    assert len(recs) == 6 and len({r["fingerprint"] for r in recs}) == 2
    # The table of the second run covers only its own results.
    assert capsys.readouterr().out.strip().splitlines()[-1].split()[:3] == ["best_of_n", "n=4", "3"]


def test_the_runner_is_shut_down_after_eval_and_solve(tmp_path, engine, monkeypatch, capsys):
    import ponder.scheduler

    real, closed = ponder.scheduler.make_runner, []

    def make_runner(config):
        runner = real(config)
        async def close():
            closed.append(runner)

        runner.close = close
        return runner

    monkeypatch.setattr(ponder.scheduler, "make_runner", make_runner)
    assert cli.main(eval_args(tmp_path / "r.jsonl", engine, "--budget", "n=2", "--limit", "2")) == 0
    assert cli.main(["solve", "Compute 3 + 4.", "--budget", "n=2", *engine]) == 0
    assert len(closed) == 2


def test_solve_prints_answer_path_with_rewards_and_compute(engine, capsys):
    from ponder.tasks.arith.problems import generate

    p = generate(1, seed=3, levels=(2,))[0]
    argv = ["solve", p.problem, "--strategy", "beam_search", "--budget", "n=8", "--reference", p.answer, *engine]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("answer: ")
    steps = [m for m in map(re.compile(r"^\s+(\d+)\. \[(\d\.\d{3})\] (.+)$").match, lines) if m]
    assert [int(m.group(1)) for m in steps] == list(range(1, len(steps) + 1))
    assert len(steps) >= 3  # level 2: three operations
    assert all(0.0 <= float(m.group(2)) <= 1.0 for m in steps)
    assert "=" in steps[0].group(3)
    assert "strategy: beam_search  budget: n=8" in out
    assert "compute: " in out and "tokens (policy " in out


def test_strategies_lists_every_registered_strategy_with_defaults(capsys):
    assert cli.main(["strategies"]) == 0
    out = capsys.readouterr().out
    names = [line.split(":")[0] for line in out.splitlines() if not line.startswith(" ")]
    assert names == registry.names()
    assert "    beam_width: int = 4" in out


@pytest.mark.parametrize("argv", [["--help"], ["eval", "--help"]])
def test_help_exits_zero(argv, capsys):
    assert cli.main(argv) == 0
    assert "usage:" in capsys.readouterr().out


def test_calibrate_hands_problems_runner_budgets_and_strategies_to_the_scheduler(tmp_path, engine, monkeypatch, capsys):
    import sys
    import types

    seen = {}

    async def calibrate(problems, runner, budgets, strategies, probe_samples, base, params):
        seen.update(problems=problems, runner=runner, budgets=[b.label() for b in budgets], strategies=strategies,
                    probe_samples=probe_samples, params=params)
        return {"easy": "best_of_n"}

    from ponder.scheduler import calibrate as real

    fake = types.SimpleNamespace(calibrate=calibrate, candidate=real.candidate, resolve_candidates=real.resolve_candidates)
    monkeypatch.setitem(sys.modules, "ponder.scheduler.calibrate", fake)
    out = tmp_path / "table.yaml"
    argv = ["calibrate", "--dataset", "arith:4", "--budget", "n=4", "--budget", "n=8", "--strategy", "dvts"]
    assert cli.main([*argv, "--out", str(out), *engine]) == 0
    assert [p.id for p in seen["problems"]] == [f"arith-0-{i}" for i in range(4)]
    assert seen["budgets"] == ["n=4", "n=8"] and seen["strategies"] == ["dvts"]
    assert seen["probe_samples"] == 4 and seen["params"] == {"dvts": {}}
    assert hasattr(seen["runner"], "run")
    assert out.read_text() == "easy: best_of_n\n"
    assert f"scheduler.allocation_table={out}" in capsys.readouterr().out


def test_a_finished_eval_starts_no_engine(tmp_path, engine, capsys, monkeypatch):
    out = tmp_path / "r.jsonl"
    argv = ["eval", "--dataset", "arith:3", "--quiet", "--out", str(out), *engine]
    assert cli.main(argv) == 0
    before = out.read_text()

    def no_engines(config):
        raise AssertionError("engines started for an eval with nothing left to run")

    monkeypatch.setattr(cli, "make_runner", no_engines)
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "3 already in" in err and "0 to run" in err
    assert out.read_text() == before


def test_solve_gives_the_shipped_models_their_form_and_says_so(capsys):
    assert cli.main(["solve", "What is 12 + 30 * 2?", "--strategy", "greedy", "--address", "inprocess"]) == 0
    captured = capsys.readouterr()
    assert "rewritten as 'Compute (30 * 2) + 12.'" in captured.err
    assert "30 * 2 = " in captured.out  # the model worked on the rewritten problem
    assert cli.main(["solve", "Compute 14 - 3 * 2.", "--strategy", "greedy", "--address", "inprocess"]) == 0
    assert "outside what the shipped arithmetic models read" in capsys.readouterr().err


async def test_replica_faults_are_told_to_the_user():
    import asyncio

    class Runner:
        def __init__(self):
            self.n = 0

        async def stats(self):
            self.n += 1
            lost = 1 if self.n >= 2 else 0
            return {"policy_pool": {"restarts_seen": lost, "replaced": 1 if self.n >= 3 else 0, "replicas": 2},
                    "reward_pool": {"restarts_seen": 0, "replaced": 0, "replicas": 1}}

    said: list[str] = []
    task = asyncio.ensure_future(cli._watch_replicas(Runner(), said.append, every_s=0.01))
    await asyncio.sleep(0.2)
    task.cancel()
    assert said == ["ponder: 1 policy replica(s) lost; its requests went to another replica (2 now serving)",
                    "ponder: 1 policy replica(s) replaced by a new one (2 now serving)"]

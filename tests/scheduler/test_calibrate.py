"""`ponder calibrate`: the learned table picks each bin's most accurate strategy per budget."""

from __future__ import annotations

import yaml

from ponder.api import cli
from ponder.config import Budget, PonderConfig
from ponder.scheduler.allocation import AllocationTable
from ponder.scheduler.calibrate import calibrate
from ponder.scheduler.runner import Runner
from tests.search.fakes import FakePolicy, FakePRM, problems


async def test_winners_are_the_measured_best_and_the_table_loads():
    cfg = PonderConfig.from_dict({"cluster": {"address": "inprocess"}})
    runner = Runner(FakePolicy(p_correct=0.7), FakePRM(noise=0.1), cfg)
    ps = problems(6, level=1, seed=1) + problems(6, level=4, seed=2)
    out = await calibrate(ps, runner, [Budget(n=4), Budget(n=16)], ["best_of_n", "beam_search"])
    table = AllocationTable.from_dict(out)
    cal = out["calibration"]
    assert sum(cal["bins"].values()) == 12 and cal["problems"] == 12
    for name, per_budget in cal["accuracy"].items():
        entries = {e.budget: e.strategy for e in table.bins[name].by_budget}
        assert set(entries) == set(per_budget) == {"n=4", "n=16"}
        for label, per in per_budget.items():
            best = max(per.values(), key=lambda v: v["accuracy"])["accuracy"]
            assert per[entries[label]]["accuracy"] == best
            assert all(v["problems"] == cal["bins"][name] for v in per.values())
        assert table.choose(name, Budget(n=16))[0].strategy == entries["n=16"]
    assert {n for n, c in cal["bins"].items() if c == 0}.isdisjoint(cal["accuracy"])  # empty bins keep the base


def test_calibrate_then_auto_from_the_cli(tmp_path, capsys):
    table = tmp_path / "table.yaml"
    sim = ["--config", "configs/sim.yaml"]
    argv = ["calibrate", "--dataset", "arith:20:seed=3", "--strategy", "best_of_n", "--strategy", "beam_search",
            "--budget", "n=4", *sim, "--out", str(table)]
    assert cli.main(argv) == 0
    data = yaml.safe_load(table.read_text())
    assert sum(data["calibration"]["bins"].values()) == 20
    out = tmp_path / "r.jsonl"
    argv = ["eval", "--dataset", "arith:6:seed=4", "--strategy", "auto", "--budget", "n=4", *sim, "--quiet",
            "--set", f"scheduler.allocation_table={table}", "--out", str(out)]
    assert cli.main(argv) == 0
    rows = [yaml.safe_load(line) for line in out.read_text().splitlines()]
    chosen = {r["meta"]["difficulty"]: r["meta"]["auto_strategy"] for r in rows}
    learned = AllocationTable.from_dict(data)
    assert all(learned.choose(b, Budget(n=4))[0].strategy == s for b, s in chosen.items())


async def test_calibration_bins_are_the_ones_auto_computes():
    # `probe` draws the samples `auto` starts from, so a dev problem lands in the bin it gets at run time.
    cfg = PonderConfig.from_dict({"cluster": {"address": "inprocess"}})
    runner = Runner(FakePolicy(p_correct=0.6), FakePRM(noise=0.1), cfg)
    ps = problems(4, level=1, seed=5) + problems(4, level=5, seed=6)
    probed = {p.id: r async for p, r in runner.run(ps, "probe", "n=4")}
    auto = {p.id: r async for p, r in runner.run(ps, "auto", "n=4")}
    assert [probed[p.id].meta["probe_score"] for p in ps] == [auto[p.id].meta["probe_score"] for p in ps]
    assert len({r.meta["difficulty"] for r in probed.values()}) > 1


def test_calibrate_runs_and_records_the_configured_parameters(tmp_path):
    """`--set search.params.*` reach the candidates and the table's entries, and the configured
    probe width is used: beam_width=1 and beam_width=4 give different measurements."""
    sim = ["--config", "configs/sim.yaml"]
    tables = {}
    for width in (1, 4):
        table = tmp_path / f"w{width}.yaml"
        argv = ["calibrate", "--dataset", "arith:12:seed=3:levels=5", "--strategy", "beam_search", "--budget", "n=4",
                *sim, "--set", f"search.params.beam_width={width}", "--set", "scheduler.probe_samples=2",
                "--out", str(table)]
        assert cli.main(argv) == 0
        tables[width] = yaml.safe_load(table.read_text())
        for bin_ in tables[width]["bins"].values():
            for e in bin_["by_budget"]:
                assert e["params"] == {"beam_width": width}
        assert tables[width]["calibration"]["probe_samples"] == 2
    acc = {w: t["calibration"]["accuracy"] for w, t in tables.items()}
    assert acc[1] != acc[4]

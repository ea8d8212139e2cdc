"""`ponder calibrate`: the fitted difficulty map (monotone, stored in the table, what bins
use), the per-bin curves, and the compute-optimal choice among them."""

from __future__ import annotations

import itertools
import random

import pytest
import yaml

from ponder.api import cli
from ponder.config import Budget, PonderConfig
from ponder.scheduler.allocation import AllocationTable, Point, hull, optimise
from ponder.scheduler.calibrate import calibrate
from ponder.scheduler.difficulty import DifficultyMap, pav
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
        assert table.bins[name].choose(Budget(n=16)).strategy == entries["n=16"]
    assert {n for n, c in cal["bins"].items() if c == 0}.isdisjoint(cal["accuracy"])  # empty bins keep the base
    # The fitted map is in the table, and the bins are the map's.
    assert table.difficulty_map is not None and out["difficulty_map"]["knots"]
    ys = [k[1] for k in out["difficulty_map"]["knots"]]
    assert ys == sorted(ys)
    assert sum(out["mix"].values()) == pytest.approx(1.0)
    # A curve point per (strategy, width) in every bin that had dev problems.
    for name, pts in table.curves.items():
        assert {(p.strategy, p.n) for p in pts} == {(s, n) for s in ("best_of_n", "beam_search") for n in (4, 16)}
        assert cal["bins"][name] > 0
    # Under a budget the table's choice is the plan's point, with its width.
    entry, share, cap, _ = table.choose(next(iter(table.curves)), Budget(tokens=10_000))
    assert entry.params["n"] in (4, 16) and share > 0


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
        measured = [b for b in tables[width]["bins"].values() if "by_budget" in b]  # bins with dev problems
        assert measured and len(measured) == len(tables[width]["curves"])
        for bin_ in measured:
            for e in bin_["by_budget"]:
                assert e["params"] == {"beam_width": width}
        for pts in tables[width]["curves"].values():
            assert all(p["params"] == {"beam_width": width} for p in pts)
        assert tables[width]["calibration"]["probe_samples"] == 2
    acc = {w: t["calibration"]["accuracy"] for w, t in tables.items()}
    assert acc[1] != acc[4]


def test_pav_is_the_isotonic_fit():
    xs, ys = pav([1, 2, 3, 4, 5], [1.0, 3.0, 2.0, 4.0, 0.0])
    # 3,2 pool to 2.5; then 4,0 pool to 2, which violates 2.5: the last four pool to 2.25
    assert ys == pytest.approx([1.0, 2.25])
    assert xs == pytest.approx([1.0, 3.5])
    xs, ys = pav([0.3, 0.1, 0.2, 0.1], [1.0, 0.0, 0.5, 1.0])  # unsorted, a repeated x
    assert all(b > a for a, b in itertools.pairwise(xs)) and ys == sorted(ys)


def test_difficulty_map_is_monotone_and_round_trips():
    rng = random.Random(0)
    feats, labels = [], []
    for _ in range(300):
        true = rng.random()
        feats.append({"score": min(1.0, max(0.0, 0.3 * true + rng.gauss(0, 0.1))),
                      "consensus": min(1.0, max(0.25, true + rng.gauss(0, 0.2)))})
        labels.append(true)
    m = DifficultyMap.fit(feats, labels)
    assert all(w >= 0 for w in m.weights.values())
    grid = [m.predict({"score": s / 10, "consensus": c / 10}) for s in range(11) for c in range(11)]
    for s in range(11):  # non-decreasing in each feature
        row = [m.predict({"score": s / 10, "consensus": c / 10}) for c in range(11)]
        assert row == sorted(row)
        col = [m.predict({"score": c / 10, "consensus": s / 10}) for c in range(11)]
        assert col == sorted(col)
    assert min(grid) >= 0 and max(grid) <= 1
    # The raw score alone under-predicts (scores sit at 0.3 x pass@1); the map does not.
    hi = m.predict({"score": 0.3, "consensus": 1.0})
    assert hi > 0.6
    again = DifficultyMap.from_dict(m.to_dict())
    assert again.predict(feats[0]) == pytest.approx(m.predict(feats[0]), abs=1e-4)
    table = AllocationTable.from_dict({**AllocationTable.load().to_dict(), "difficulty_map": m.to_dict()})
    assert table.bin_of(0.3, 1.0) == "easy" and table.bin_of(0.3, 1.0) != AllocationTable.load().bin_of(0.3, 1.0)
    assert table.estimate(0.0, 0.25) < 0.3 and table.bin_of(0.0, 0.25) != "easy"
    with pytest.raises(Exception, match="knots"):
        AllocationTable.from_dict({**table.to_dict(), "difficulty_map": {"knots": [[0.1, 0.5], [0.2, 0.4]]}})
    assert DifficultyMap.from_dict({"knots": [[0.1, 0.2], [0.1, 0.3], [0.5, 0.9]]}).predict({}) >= 0  # ties in x


def test_allocation_picks_the_best_curve_points_under_the_budget():
    curves = {
        "easy": [Point("best_of_n", 4, 0.90, 100), Point("best_of_n", 16, 0.92, 400)],
        "hard": [Point("best_of_n", 4, 0.20, 100), Point("beam_search", 16, 0.60, 400),
                 Point("dvts", 8, 0.25, 300)],  # dvts: dominated, never chosen
    }
    mix = {"easy": 0.5, "hard": 0.5}
    p = optimise(curves, mix, 100)
    assert (p.low["easy"].n, p.low["hard"].strategy, p.high) == (4, "best_of_n", {})
    p = optimise(curves, mix, 250)  # the budget buys beam search for the hard bin, not more for easy
    assert p.low["easy"].n == 4 and p.low["hard"].strategy == "beam_search" and not p.high
    assert p.accuracy == pytest.approx(0.75) and p.cost == pytest.approx(250)
    p = optimise(curves, mix, 175)  # half the hard queries get the upgrade: the LP optimum
    assert p.low["hard"].strategy == "best_of_n" and p.high["hard"].strategy == "beam_search"
    assert p.mix_up["hard"] == pytest.approx(0.5) and p.point("hard", 0.25).strategy == "beam_search"
    assert p.point("hard", 0.75).strategy == "best_of_n" and p.accuracy == pytest.approx(0.65)
    assert optimise(curves, mix, 50).cost == pytest.approx(100)  # infeasible: the cheapest plan
    assert optimise(curves, mix, 10_000).accuracy == pytest.approx(0.76)
    # Brute force over pure plans never beats the optimum at a pure plan's own cost.
    for a in curves["easy"]:
        for b in curves["hard"]:
            cost = 0.5 * (a.cost + b.cost)
            assert optimise(curves, mix, cost).accuracy >= 0.5 * (a.accuracy + b.accuracy) - 1e-9
    assert [q.strategy for q in hull(curves["hard"])] == ["best_of_n", "beam_search"]
    # Through the table: width and share (headroom x cost / budget) come with the entry.
    t = AllocationTable.from_dict({**AllocationTable.load().to_dict(), "mix": mix, "headroom": 1.5,
                                   "curves": {b: [q.to_dict() for q in pts] for b, pts in curves.items()}})
    entry, share, cap, value = t.choose("hard", Budget(tokens=250))
    assert entry.strategy == "beam_search" and entry.params["n"] == 16 and share == pytest.approx(400 / 250)
    assert cap == pytest.approx(1.5 * 400 / 250)  # no peak measured: headroom x the mean
    # The value the scheduler orders by: the upgrade's accuracy per cost; the easy bin's cheapest
    # point bought nothing above the minimum.
    assert value == pytest.approx((0.60 - 0.20) / (400 - 100)) and t.choose("easy", Budget(tokens=250)).value == 0
    assert t.choose("medium", Budget(tokens=250))[0].strategy == t.bins["medium"].default.strategy  # no curve


async def test_a_candidate_can_carry_its_own_parameters():
    """`best_of_n:confidence=0.9` is measured beside plain `best_of_n`: two curves with their
    parameters, the adaptive one cheaper, and auto runs the chosen point with them."""
    from ponder.scheduler.calibrate import candidate

    assert candidate("best_of_n:confidence=0.9,round_size=2") == ("best_of_n", {"confidence": 0.9, "round_size": 2})
    assert candidate("beam_search") == ("beam_search", {})
    for bad in ("best_of_n:confidence", ":x=1"):
        with pytest.raises(ValueError):
            candidate(bad)
    cfg = PonderConfig.from_dict({"cluster": {"address": "inprocess"}})
    runner = Runner(FakePolicy(p_correct=0.8), FakePRM(noise=0.1), cfg)
    ps = problems(8, level=1, seed=7)
    with pytest.raises(ValueError, match="confidence"):
        await calibrate(ps, runner, [Budget(n=16)], ["best_of_n:confidence=2"])
    out = await calibrate(ps, runner, [Budget(n=16)], ["best_of_n", "best_of_n:confidence=0.9"], probe_samples=2)
    table = AllocationTable.from_dict(out)
    for pts in table.curves.values():
        plain = next(p for p in pts if not p.params)
        adaptive = next(p for p in pts if dict(p.params) == {"confidence": 0.9})
        assert plain.strategy == adaptive.strategy == "best_of_n" and adaptive.cost < plain.cost
    path = _write(table)
    res = {p.id: r async for p, r in runner.run(ps, "auto", "200", {"table": str(path), "probe_samples": 2})}
    assert all(r.meta["auto_params"] in ({}, {"confidence": 0.9}) for r in res.values())


def _write(table: AllocationTable):
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "t.yaml"
    table.save(path)
    return path


def test_calibrate_cli_refuses_a_malformed_candidate(capsys):
    argv = ["calibrate", "--dataset", "arith:4", "--strategy", "best_of_n:confidence", "--config", "configs/sim.yaml",
            "--out", "/tmp/never-written.yaml"]
    assert cli.main(argv) != 0
    assert "expected name:key=value" in capsys.readouterr().err

"""bench.auto_seeds: runs at several search seeds are compared by their means."""

import pytest

from bench.auto_seeds import combine


def _run(seed: int, rebase16: float, auto: float, beam64: bool = False) -> dict:
    fixed = {"rebase": [{"n": 4, "accuracy": 0.4, "cost": 1000.0, "raw_cost": 2000.0},
                        {"n": 16, "accuracy": rebase16, "cost": 4000.0, "raw_cost": 8000.0}],
             "beam_search": [{"n": 4, "accuracy": 0.45, "cost": 1000.0, "raw_cost": 2000.0},
                             {"n": 16, "accuracy": 0.5, "cost": 4000.0, "raw_cost": 8000.0}]}
    if beam64:  # a width only this seed measured: left out of the means
        fixed["beam_search"].append({"n": 64, "accuracy": 0.9, "cost": 16000.0, "raw_cost": 32000.0})
    return {"engine": "sim", "test": "arith:10", "dev": "arith:10:seed=1", "probe_samples": 4, "seed": seed,
            "difficulty_map": {"bias": 0.0}, "calibration": {"bins": {"easy": 1}},
            "fixed": fixed, "uniform": {"n": 64, "accuracy": 0.6, "cost": 8000.0, "raw_cost": 16000.0},
            "auto": [{"fraction": 0.5, "accuracy": auto, "cost": 4000.0, "raw_cost": 9000.0}]}


def test_means_over_seeds_decide_and_per_seed_margins_give_an_error():
    res = combine([_run(0, 0.7, 0.6, beam64=True), _run(1, 0.5, 0.6), _run(2, 0.6, 0.6)])
    assert res["seeds"] == [0, 1, 2]
    assert [p["n"] for p in res["fixed"]["beam_search"]] == [4, 16]
    [a] = res["auto"]
    assert a["fixed_at_same_cost"]["rebase"] == pytest.approx(0.6)
    assert a["best_fixed"]["strategy"] == "rebase"
    assert a["margin"] == pytest.approx(0.0) and a["beats_fixed"]
    assert a["margin_per_seed"] == pytest.approx([-0.1, 0.1, 0.0])
    assert a["margin_se"] == pytest.approx(0.0577, abs=1e-4)
    assert res["budgets_beaten"] == 1 and res["cost_ratio"] == 0.5  # 0.6 >= best-of-64's 0.6 at 4000 of 8000

    behind = combine([_run(0, 0.7, 0.6), _run(1, 0.7, 0.6)])
    assert behind["auto"][0]["margin"] == pytest.approx(-0.1) and not behind["auto"][0]["beats_fixed"]


def test_runs_that_differ_in_more_than_their_seed_are_refused():
    other = _run(1, 0.5, 0.6)
    other["calibration"] = {"bins": {"easy": 2}}
    with pytest.raises(ValueError, match="more than their seed"):
        combine([_run(0, 0.7, 0.6), other])
    with pytest.raises(ValueError, match="share a seed"):
        combine([_run(0, 0.7, 0.6), _run(0, 0.5, 0.6)])
    with pytest.raises(ValueError, match="two seeds"):
        combine([_run(0, 0.7, 0.6)])

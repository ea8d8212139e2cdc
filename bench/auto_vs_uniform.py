"""`auto` against every fixed strategy at equal cost, and against weighted best-of-64.

Calibrate on a dev set (the difficulty map and each bin's accuracy-vs-cost curves), then on a
disjoint test set: weighted best-of-N@64 (the bar and the reference cost), best-of-N, beam
search, DVTS and REBASE at every width, adaptive best-of-N alone, and `auto` under job budgets
that are fractions of best-of-64's cost (shared through the ledger, so easy problems give to hard
ones). Figures: the cost at which `auto` reaches best-of-64's accuracy, over best-of-64's, and at
each budget whether `auto` is at least as accurate as every fixed strategy at the same cost
(interpolated between its measured widths). `--engine sim` (the default, minutes) or `--engine hf`
(the shipped tiny models, about an hour on two cores at 64 test problems).
"""

from __future__ import annotations

import asyncio
import atexit
import itertools
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from ponder.actors.factory import build_policy, build_reward
from ponder.config import PonderConfig
from ponder.scheduler.runner import Runner
from ponder.search.types import Problem, SearchResult
from ponder.tasks.datasets import load_problems


def make_runner(engine: str, concurrency: int, seed: int = 0) -> Runner:
    if engine == "hf":
        import torch

        torch.set_num_threads(1)  # the machine is shared
        cfg = PonderConfig()
        # Load from a snapshot: the engines memory-map the weights, and retraining that rewrites
        # the shipped files mid-run would crash the run (SIGBUS) or mix two models.
        snap = Path(tempfile.mkdtemp(prefix="ponder-bench-models-"))
        atexit.register(shutil.rmtree, snap, True)
        for ec in (cfg.policy, cfg.reward):
            ec.path = str(shutil.copytree(ec.path, snap / Path(ec.path).name))
    else:
        cfg = PonderConfig.from_dict({"policy": {"kind": "sim"}, "reward": {"kind": "sim"}})
    cfg.cluster.address = None
    cfg.scheduler.max_concurrent_searches = concurrency
    cfg.search.seed = seed  # every sample's seed derives from it (and its place in the tree)
    return Runner(build_policy(cfg.policy), build_reward(cfg.reward), cfg)


# -- auto (calibrated, optimised allocation) against fixed strategies ------------------------------

STRATEGIES = ("best_of_n", "beam_search", "dvts", "rebase")
# Candidates calibrate measures beside the fixed strategies: adaptive best-of-N (stop once the
# vote's leader is this likely to stay ahead; the width is its cap). Measured on the test set
# too, at the widest width, so that auto is also compared with adaptive best-of-N used alone.
# Rounds of 2 (adaptive consistency samples one at a time; 2 keeps some batching): with rounds of
# 4 the same run measured auto_vs_fixed-sim-round4.json.
ADAPTIVE = tuple(f"best_of_n:confidence={c},round_size=2" for c in (0.8, 0.9, 0.95))
WIDTHS = (4, 8, 16, 32, 64)
# Job budgets as fractions of best-of-64's cost. 1/16 is below every fixed strategy's cheapest
# point (nothing to compare with), so the grid starts at 1/8 and is finer around 1/4.
JOB_FRACTIONS = (1 / 8, 3 / 16, 1 / 4, 3 / 8, 1 / 2)


def _summary(results: list[SearchResult]) -> dict[str, Any]:
    return {
        "accuracy": round(statistics.mean(bool(r.correct) for r in results), 4),
        "cost": round(statistics.mean(r.compute.cost for r in results), 1),
        "raw_cost": round(statistics.mean(r.compute.raw_cost for r in results), 1),
        "errors": sum(1 for r in results if r.stop_reason == "error"),
    }


async def _results(runner: Runner, problems: list[Problem], strategy: str, budget: str,
                   params: dict[str, Any] | None = None) -> dict[str, SearchResult]:
    return {p.id: r async for p, r in runner.run(problems, strategy, budget, params)}


def _interp(curve: list[dict[str, Any]], cost: float) -> float | None:
    """A fixed strategy's accuracy at `cost`, linear in log cost between its measured widths
    (None outside its measured range)."""
    import math

    pts = sorted(curve, key=lambda p: p["cost"])
    for a, b in itertools.pairwise(pts):
        if a["cost"] <= cost <= b["cost"]:
            if b["cost"] == a["cost"]:
                return max(a["accuracy"], b["accuracy"])
            t = (math.log(cost) - math.log(a["cost"])) / (math.log(b["cost"]) - math.log(a["cost"]))
            return a["accuracy"] + t * (b["accuracy"] - a["accuracy"])
    return None


def auto_vs_fixed(engine: str = "sim", dev: str = "arith:300:seed=11", test: str = "arith:200:seed=7",
                  strategies: tuple[str, ...] = STRATEGIES, widths: tuple[int, ...] = WIDTHS,
                  fractions: tuple[float, ...] = JOB_FRACTIONS, concurrency: int = 32,
                  table_path: Path | None = None, probe_samples: int = 4, auto_concurrency: int = 1,
                  cal_widths: tuple[int, ...] | None = None, fixed_from: str | None = None,
                  adaptive: tuple[str, ...] = ADAPTIVE, table_from: str | None = None,
                  seed: int = 0, wide: tuple[str, ...] | None = None, log: Any = print) -> dict[str, Any]:
    """Calibrate on `dev`, then on `test`: weighted best-of-64, every fixed strategy at every
    width, and `auto` (the calibrated table) at job budgets that are fractions of best-of-64's
    cost; and the calibration's own check (test problems per bin, observed pass@1 per bin).

    `auto` runs at `auto_concurrency` (default 1). The job's ordered ledger decides each
    query's grant in the order the queries came, so the figures do not depend on which query
    finished first; they do depend on its window (4x the searches in flight): the last window's
    queries count at what their grants hold, not at what they spent, so more in flight leaves
    more of the budget unspent (at 8 in flight, 2-10%).

    `fixed_from` takes the fixed strategies' test figures (and adaptive best-of-N's) from an
    earlier run on the same test set; widths that run lacks are measured here.

    `table_from` skips calibration and takes an earlier run's table (its dev set must not be
    the test set), to measure `auto` at other budgets without recalibrating.

    `seed` is the search seed of every test run (calibration keeps seed 0: the table is what is
    being evaluated, the seed only redraws the test runs' samples; `bench.auto_seeds` averages
    runs over seeds). `wide` names the strategies measured at widths above the calibrated ones
    (default: all); the others' curves stop there and they are compared only where measured."""
    from ponder.config import Budget
    from ponder.scheduler.allocation import AllocationTable
    from ponder.scheduler.calibrate import apply_map, calibrate, candidate, candidate_pass_rate

    runner = make_runner(engine, concurrency, seed)
    dev_ps, test_ps = load_problems(dev), load_problems(test)
    if {p.problem for p in dev_ps} & {p.problem for p in test_ps}:
        log("  warning: dev and test share problems")
    t0 = time.perf_counter()
    import yaml

    if table_from is not None:
        data = yaml.safe_load(Path(table_from).read_text())
    else:
        cal_runner = runner if seed == 0 else make_runner(engine, concurrency)
        data = asyncio.run(calibrate(dev_ps, cal_runner, [Budget(n=w) for w in cal_widths or widths],
                                     list(strategies) + list(adaptive), probe_samples=probe_samples))
    table_path = table_path or Path(tempfile.mkdtemp(prefix="ponder-auto-")) / "table.yaml"
    table_path.write_text(yaml.safe_dump(data, sort_keys=False))
    table = AllocationTable.load(table_path)
    log(f"  calibrated on {dev} in {time.perf_counter() - t0:.0f} s: bins {data['calibration']['bins']}, "
        f"observed pass@1 {data['calibration']['observed_pass1']} -> {table_path}")

    t0 = time.perf_counter()
    fixed: dict[str, list[dict[str, Any]]] = {}
    bo64 = None
    prev: dict[str, Any] = {}  # the earlier run `fixed_from` names
    if fixed_from is not None:  # the fixed strategies' test figures from an earlier run on the same test set
        import json

        prev = json.loads(Path(fixed_from).read_text())
        if prev["test"] != test or prev["engine"] != engine or prev.get("seed", 0) != seed:
            raise ValueError(f"{fixed_from} is for {prev['engine']} / {prev['test']} / seed {prev.get('seed', 0)}, "
                             f"not {engine} / {test} / seed {seed}")
        fixed = {s: [p for p in c if p["n"] in widths] for s, c in prev["fixed"].items() if s in strategies}
    top = max(cal_widths or widths)
    for s in strategies:  # every width the earlier run lacks is measured here
        for w in widths:
            if any(p["n"] == w for p in fixed.get(s, [])):
                continue
            if w > top and wide is not None and s not in wide and not (s == "best_of_n" and w == max(widths)):
                continue  # best-of-N at the widest width is the bar: always measured
            res = asyncio.run(_results(runner, test_ps, s, f"n={w}"))
            fixed.setdefault(s, []).append({"n": w, **_summary(list(res.values()))})
            if s == "best_of_n" and w == max(widths):
                bo64 = res
        fixed[s].sort(key=lambda p: p["n"])
        log(f"  {s}: " + ", ".join(f"n={p['n']} {p['accuracy']:.3f}@{p['cost']:.0f}" for p in fixed[s]))
    bins_label = f"best_of_n n={max(widths)}"
    if bo64 is None:  # best-of-64 came from the earlier run: labels for the test bins only
        bins_label, bo64 = "best_of_n n=16", asyncio.run(_results(runner, test_ps, "best_of_n", "n=16"))
    adaptive_rows = []
    for spec in adaptive:  # adaptive best-of-N alone, capped at the widest width
        done = [r for r in prev.get("adaptive", []) if r["candidate"] == spec and r["n"] == max(widths)]
        if done:
            adaptive_rows.append(done[0])
            continue
        name, own = candidate(spec)
        res = asyncio.run(_results(runner, test_ps, name, f"n={max(widths)}", own))
        adaptive_rows.append({"candidate": spec, "n": max(widths), **_summary(list(res.values()))})
        log(f"  {spec} n={max(widths)}: {adaptive_rows[-1]['accuracy']:.3f}@{adaptive_rows[-1]['cost']:.0f}")
    fixed_s = round(time.perf_counter() - t0, 1)
    uniform = next(p for p in fixed["best_of_n"] if p["n"] == max(widths))

    # The difficulty estimate on the test set: bins of the map, pass@1 observed (best-of-64's candidates).
    probes = asyncio.run(_results(runner, test_ps, "probe", f"n={probe_samples}"))
    eb = apply_map(table, probes)
    bins: dict[str, dict[str, Any]] = {}
    for name in ("easy", "medium", "hard"):
        ids = [p.id for p in test_ps if eb[p.id][1] == name]
        if ids:
            bins[name] = {"problems": len(ids), "share": round(len(ids) / len(test_ps), 4),
                          "mean_estimate": round(statistics.mean(eb[i][0] for i in ids), 4),
                          "observed_pass1": round(statistics.mean(candidate_pass_rate(bo64[i], next(
                              p.answer for p in test_ps if p.id == i)) for i in ids), 4)}
    raw_bins = {}
    for p in test_ps:
        from ponder.scheduler.difficulty import difficulty_bin

        b = difficulty_bin(float(probes[p.id].meta["probe_score"]))
        raw_bins[b] = raw_bins.get(b, 0) + 1
    log(f"  test bins (calibrated): {bins}; by the raw score: {raw_bins}")

    autos = []
    t0 = time.perf_counter()
    auto_runner = make_runner(engine, auto_concurrency, seed) if auto_concurrency != concurrency else runner
    for f in fractions:
        budget = str(max(1, int(uniform["cost"] * f)))
        res = list(asyncio.run(_results(auto_runner, test_ps, "auto", budget, {"table": str(table_path),
                                                                       "probe_samples": probe_samples})).values())
        a = {"fraction": f, "budget": budget, **_summary(res)}
        picks: dict[str, int] = {}
        for r in res:
            own = ",".join(f"{k}={v}" for k, v in sorted((r.meta.get("auto_params") or {}).items()))
            k = f"{r.meta.get('difficulty')}:{r.meta.get('auto_strategy')}{':' + own if own else ''}@{r.meta.get('auto_n')}"
            picks[k] = picks.get(k, 0) + 1
        a["picks"] = dict(sorted(picks.items()))
        best_point = max((p["accuracy"], s, p["n"]) for s, c in fixed.items() for p in c if p["cost"] <= a["cost"]) \
            if any(p["cost"] <= a["cost"] for c in fixed.values() for p in c) else None
        interp = {s: _interp(c, a["cost"]) for s, c in fixed.items()}
        interp = {s: round(v, 4) for s, v in interp.items() if v is not None}
        a["best_fixed_within_cost"] = ({"accuracy": best_point[0], "strategy": best_point[1], "n": best_point[2]}
                                       if best_point else None)
        a["fixed_at_same_cost"] = interp
        # None: no fixed strategy was measured at or below auto's cost (nothing to compare with)
        a["beats_fixed"] = None if not interp and best_point is None else (
            all(a["accuracy"] >= v - 1e-9 for v in interp.values())
            and (best_point is None or a["accuracy"] >= best_point[0]))
        within = [r for r in adaptive_rows if r["cost"] <= a["cost"]]
        a["best_adaptive_within_cost"] = max(within, key=lambda r: r["accuracy"]) if within else None
        autos.append(a)
        log(f"  auto @ {f:.4f} x ({budget}): accuracy {a['accuracy']:.3f} at {a['cost']:.0f} "
            f"(raw {a['raw_cost']:.0f}); best fixed within cost {a['best_fixed_within_cost']}; "
            f"fixed interpolated {interp}; picks {a['picks']}")
    reached = [a for a in autos if a["accuracy"] >= uniform["accuracy"]]
    best = min(reached, key=lambda a: a["cost"]) if reached else None
    return {
        "engine": engine,
        "dev": dev,
        "test": test,
        "problems": len(test_ps),
        "probe_samples": probe_samples,
        "seed": seed,
        "auto_concurrency": auto_concurrency,
        "calibrated_widths": list(cal_widths or widths),
        "fixed_from": fixed_from,
        "table_from": table_from,
        "test_bins_label": bins_label,
        "cost_unit": "Compute.cost (cache_discount as configured); raw_cost: every token computed",
        "calibration": {k: data["calibration"][k] for k in ("bins", "observed_pass1", "label", "problems")},
        "difficulty_map": data.get("difficulty_map"),
        "test_bins": bins,
        "test_bins_raw_score": raw_bins,
        "uniform": uniform,
        "fixed": fixed,
        "adaptive": adaptive_rows,
        "auto": autos,
        "auto_reaching_bar": best,
        "cost_ratio": round(best["cost"] / uniform["cost"], 4) if best else None,
        "raw_cost_ratio": round(best["raw_cost"] / uniform["raw_cost"], 4) if best else None,
        "fixed_s": fixed_s,
        "auto_s": round(time.perf_counter() - t0, 1),
        "table": str(table_path),
    }


def difficulty_check(engine: str = "hf", dev: str = "arith:150:seed=11", test: str = "arith:150:seed=13",
                     label_width: int = 16, probe_samples: int = 4, concurrency: int = 16,
                     log: Any = print) -> dict[str, Any]:
    """Only the difficulty estimate (target: on the test set, >= 2 bins with >= 20% of the
    problems each, observed pass@1 ordered easy > medium > hard): fit the map on `dev` (probe +
    best-of-`label_width` as the label), then bin `test` by it and measure pass@1 per bin."""
    from ponder.config import Budget
    from ponder.scheduler.allocation import AllocationTable
    from ponder.scheduler.calibrate import apply_map, calibrate, candidate_pass_rate
    from ponder.scheduler.difficulty import difficulty_bin

    runner = make_runner(engine, concurrency)
    dev_ps, test_ps = load_problems(dev), load_problems(test)
    t0 = time.perf_counter()
    data = asyncio.run(calibrate(dev_ps, runner, [Budget(n=label_width)], ["best_of_n"], probe_samples=probe_samples))
    table = AllocationTable.from_dict(data)
    log(f"  map fitted on {dev} in {time.perf_counter() - t0:.0f} s: {data['difficulty_map']}")
    probes = asyncio.run(_results(runner, test_ps, "probe", f"n={probe_samples}"))
    labels = asyncio.run(_results(runner, test_ps, "best_of_n", f"n={label_width}"))
    eb = apply_map(table, probes)
    out: dict[str, Any] = {"engine": engine, "dev": dev, "test": test, "label": f"best_of_n n={label_width}",
                           "probe_samples": probe_samples, "difficulty_map": data["difficulty_map"],
                           "dev_bins": data["calibration"]["bins"], "dev_observed_pass1": data["calibration"]["observed_pass1"]}
    for kind, bin_of in (("calibrated", lambda i: eb[i][1]),
                         ("raw_score", lambda i: difficulty_bin(float(probes[i].meta["probe_score"])))):
        bins = {}
        for name in ("easy", "medium", "hard"):
            ids = [p for p in test_ps if bin_of(p.id) == name]
            if ids:
                bins[name] = {"problems": len(ids), "share": round(len(ids) / len(test_ps), 4),
                              "observed_pass1": round(statistics.mean(candidate_pass_rate(labels[p.id], p.answer)
                                                                      for p in ids), 4)}
        out[f"test_bins_{kind}"] = bins
        log(f"  test bins ({kind}): {bins}")
    out["bench_s"] = round(time.perf_counter() - t0, 1)
    return out


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    from ponder.scheduler.calibrate import candidate

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s, c in res["fixed"].items():
        ax.plot([p["cost"] for p in c], [p["accuracy"] for p in c], "o-", label=f"{s} (n={c[0]['n']}..{c[-1]['n']})",
                alpha=0.8)
    ad = res.get("adaptive") or []
    if ad:
        ax.plot([p["cost"] for p in ad], [p["accuracy"] for p in ad], "s--", color="tab:olive",
                label="adaptive best_of_n (n<=%d, confidence %s)" % (
                    ad[0]["n"], "/".join(str(candidate(r["candidate"])[1].get("confidence")) for r in ad)), alpha=0.8)
    a = res["auto"]
    ax.plot([p["cost"] for p in a], [p["accuracy"] for p in a], "k*-", ms=11, lw=2, label="auto (calibrated)")
    u = res["uniform"]
    ax.axhline(u["accuracy"], color="grey", ls=":", lw=1)
    ax.axvline(u["cost"] / 4, color="grey", ls="--", lw=1, label="1/4 of best-of-64's cost")
    ax.set_xscale("log")
    ax.set_xlabel("cost per problem (Compute.cost)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"auto vs fixed strategies, {res['engine']} engines, test {res['test']}")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_difficulty(res: dict[str, Any], path: Path) -> None:
    """The fitted map (logistic score -> pass@1 knots) and the test set's observed pass@1 per
    bin, binned by the calibrated estimate and by the raw probe score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    knots = res["difficulty_map"]["knots"]
    a.plot([k[0] for k in knots], [k[1] for k in knots], marker="o")  # predict() interpolates linearly
    a.set_xlabel("logistic score of (probe reward, agreement)")
    a.set_ylabel("isotonic pass@1 estimate")
    a.set_title(f"difficulty map fitted on {res['dev']}")
    a.grid(alpha=0.3)
    names = ("easy", "medium", "hard")
    for i, kind in enumerate(("calibrated", "raw_score")):
        bins = res[f"test_bins_{kind}"]
        xs = [j + (i - 0.5) * 0.38 for j in range(3)]
        ys = [bins.get(n, {}).get("observed_pass1", 0.0) for n in names]
        bars = b.bar(xs, ys, width=0.36, label=f"bins by {kind.replace('_', ' ')}")
        for bar, n in zip(bars, names):
            share = bins.get(n, {}).get("share", 0.0)
            b.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.01, f"{share:.0%}", ha="center", fontsize=8)
    b.set_xticks(range(3), names)
    b.set_ylabel(f"observed pass@1 ({res['label']})")
    b.set_title(f"test {res['test']}: pass@1 per bin (label: share)")
    b.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    import argparse
    import json

    ap = argparse.ArgumentParser(description="auto (calibrated) vs fixed strategies")
    ap.add_argument("--engine", default="sim", choices=["sim", "hf"])
    ap.add_argument("--dev", default="arith:300:seed=11")
    ap.add_argument("--test", default="arith:200:seed=7")
    ap.add_argument("--widths", default=",".join(map(str, WIDTHS)), help="fixed strategies' widths on the test set")
    ap.add_argument("--cal-widths", default=None, help="widths calibrate measures (default: --widths)")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--adaptive", default=";".join(ADAPTIVE),
                    help="extra calibrate candidates, ';'-separated (name:key=value,...); '' for none")
    ap.add_argument("--fractions", default=",".join(f"{f:g}" for f in JOB_FRACTIONS),
                    help="job budgets as fractions of best-of-64's cost ('' for none: fixed strategies only)")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--probe-samples", type=int, default=4)
    ap.add_argument("--auto-concurrency", type=int, default=1)
    ap.add_argument("--fixed-from", default=None,
                    help="take the fixed strategies' figures from this earlier JSON (widths it lacks are measured)")
    ap.add_argument("--table-from", default=None, help="skip calibration: take this earlier run's table (YAML)")
    ap.add_argument("--seed", type=int, default=0, help="search seed of the test runs (calibration keeps 0)")
    ap.add_argument("--wide", default=None,
                    help="strategies measured at widths above the calibrated ones (default: all; best-of-N's widest always)")
    ap.add_argument("--difficulty-only", action="store_true", help="only fit and check the difficulty map")
    ap.add_argument("--out", default=None, help="results JSON (default bench/results/auto_vs_fixed-<engine>.json)")
    args = ap.parse_args(argv)
    results = Path(__file__).resolve().parent / "results"
    out = Path(args.out) if args.out else results / f"auto_vs_fixed-{args.engine}.json"
    t0 = time.perf_counter()
    if args.difficulty_only:
        out = Path(args.out) if args.out else results / f"auto_difficulty-{args.engine}.json"
        res = difficulty_check(args.engine, args.dev, args.test, probe_samples=args.probe_samples,
                               concurrency=args.concurrency)
        out.write_text(json.dumps(res, indent=1) + "\n")
        plot_difficulty(res, out.with_suffix(".png"))
        print(f"wrote {out} and {out.with_suffix('.png')}")
        return
    res = auto_vs_fixed(args.engine, args.dev, args.test, widths=tuple(int(w) for w in args.widths.split(",")),
                        fractions=tuple(float(f) for f in args.fractions.split(",") if f), concurrency=args.concurrency,
                        probe_samples=args.probe_samples, auto_concurrency=args.auto_concurrency,
                        strategies=tuple(args.strategies.split(",")), fixed_from=args.fixed_from,
                        adaptive=tuple(a for a in args.adaptive.split(";") if a), table_from=args.table_from,
                        cal_widths=tuple(int(w) for w in args.cal_widths.split(",")) if args.cal_widths else None,
                        table_path=out.with_name(out.stem + "-table.yaml"), seed=args.seed,
                        wide=tuple(args.wide.split(",")) if args.wide is not None else None)
    res["bench_s"] = round(time.perf_counter() - t0, 1)
    out.write_text(json.dumps(res, indent=1) + "\n")
    plot(res, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}; cost ratio to reach best-of-64: {res['cost_ratio']}")


if __name__ == "__main__":
    main()

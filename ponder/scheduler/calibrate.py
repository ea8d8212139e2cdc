"""`ponder calibrate`: learn `auto`'s difficulty map and its compute-optimal allocation on a
labelled dev set.

    features(q)  <- the probe (strategy `probe`: the same samples `auto` draws first): raw
                    score (mean final PRM reward) and answer agreement
    pass@1(q)    <- share of correct candidates of the widest best-of-N run (the label)
    map          <- logistic + isotonic fit features -> pass@1   (difficulty.DifficultyMap)
    bin(q)       <- absolute thresholds on map(features(q))     (Liu et al.: 0.5 / 0.1)
    curve[bin]   <- (strategy, width) -> accuracy, mean cost, measured as `auto` runs it: the
                    probe, then the strategy (forced: auto's `strategy` parameter) starting from
                    the probe's samples, the unused ones joining the final vote
    plan(B)      <- per bin the curve point maximising expected accuracy under B (allocation.optimise)

The table also keeps, per bin and budget, the most accurate strategy (ties: fewer tokens), for
readers and for tables without curves; bins with no dev problem keep the base table's entries.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import yaml

from ponder.config import Budget
from ponder.scheduler.allocation import (
    AllocationTable,
    BinPolicy,
    Entry,
    Point,
    budget_size,
)
from ponder.scheduler.difficulty import BINS, DifficultyMap, difficulty_bin, pav
from ponder.search import registry
from ponder.search.types import Problem, SearchResult
from ponder.tasks.grading import grade


def candidate(spec: str) -> tuple[str, dict[str, Any]]:
    """A candidate's strategy and its own parameters: `name` or `name:key=value,key=value`
    (`best_of_n:confidence=0.9` is adaptive best-of-N beside plain `best_of_n`). Values are
    read as YAML scalars. Raises ValueError on a malformed spec."""
    name, _, rest = spec.partition(":")
    params: dict[str, Any] = {}
    for item in filter(None, (x.strip() for x in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"candidate {spec!r}: expected name:key=value[,key=value]")
        params[key.strip()] = yaml.safe_load(value)
    if not name.strip():
        raise ValueError(f"candidate {spec!r} names no strategy")
    return name.strip(), params


def resolve_candidates(specs: list[str], budgets: list[Budget],
                       params: dict[str, dict[str, Any]] | None = None) -> dict[str, tuple[str, dict[str, Any]]]:
    """Per candidate spec: its strategy and parameters (the strategy's from `params`, then its
    own), each checked to build its config at every budget (fail before a long run, not in it)."""
    out = {}
    for spec in specs:
        name, own = candidate(spec)
        merged = {**((params or {}).get(name) or {}), **own}
        strat = registry.get(name)
        for b in budgets:
            try:
                strat.make_config(merged, n=b.n)
            except (TypeError, ValueError) as e:
                raise ValueError(f"candidate {spec} at {b.label()}: {e}") from None
        out[spec] = (name, merged)
    return out


async def _collect(runner: Any, problems: list[Problem], strategy: str, budget: str | Budget, params=None):
    return {p.id: res async for p, res in runner.run(problems, strategy, budget, params)}


def candidate_pass_rate(result: SearchResult, reference: str | None) -> float:
    """Share of a result's finished candidates whose answer is right (an estimate of pass@1)."""
    cands = [c for c in result.candidates if c.terminal]
    if not cands:
        return 0.0
    return sum(1 for c in cands if c.answer is not None and grade(c.answer, reference)) / len(cands)


async def calibrate(
    problems: list[Problem],
    runner: Any,
    budgets: list[Budget],
    strategies: list[str],
    probe_samples: int = 4,
    base: AllocationTable | None = None,
    params: dict[str, dict[str, Any]] | None = None,
    label_width: int = 16,
    shrink: float = 10.0,
) -> dict[str, Any]:
    """The learned table as a mapping (what `AllocationTable.from_dict` reads): bins, the
    difficulty map, the bin mix and per-bin curves, plus `calibration`, the per-bin accuracies
    and tokens it was fitted from. `params` (per strategy) are the parameters each candidate
    runs with, and go into the table's entries with it. Width budgets (n=N) give the curves'
    points; token budgets only the `by_budget` entries. A bin's curve accuracies are shrunk
    towards the whole dev set's at the same point by `shrink` pseudo-problems (small bins are
    noisy; the optimiser would chase their noise)."""
    if not problems or not budgets or not strategies:
        raise ValueError("calibrate needs problems, budgets and strategies")
    resolved = resolve_candidates(strategies, budgets, params)
    params = {spec: own for spec, (_, own) in resolved.items()}
    names = {spec: name for spec, (name, _) in resolved.items()}
    base = base or AllocationTable.load()
    probes = await _collect(runner, problems, "probe", Budget(n=probe_samples))

    runs: dict[tuple[str, str], dict[str, SearchResult]] = {}
    for budget in budgets:
        for strategy in strategies:
            forced = {"strategy": names[strategy], "strategy_params": dict(params.get(strategy) or {}),
                      "probe_samples": probe_samples}
            runs[strategy, budget.label()] = await _collect(runner, problems, "auto", budget, forced)

    # The label: pass@1 from the widest best-of-N run's candidates (one more run if there is none).
    widths = [b.n for b in budgets if b.n is not None]
    bon = [n for n in widths if "best_of_n" in strategies and not params.get("best_of_n")]
    if bon and max(bon) >= min(label_width, 8):
        label_run = runs["best_of_n", Budget(n=max(bon)).label()]
        label_source = f"best_of_n n={max(bon)}"
    else:
        label_run = await _collect(runner, problems, "best_of_n", Budget(n=label_width))
        label_source = f"best_of_n n={label_width}"
    pass1 = {p.id: candidate_pass_rate(label_run[p.id], p.answer) for p in problems}

    feats = {pid: {"score": float(r.meta["probe_score"]), "consensus": float(r.meta.get("probe_consensus", 0.0))}
             for pid, r in probes.items()}
    dmap = DifficultyMap.fit([feats[p.id] for p in problems], [pass1[p.id] for p in problems])
    est = {pid: dmap.predict(f) for pid, f in feats.items()}
    bin_of = {pid: difficulty_bin(e, base.thresholds) for pid, e in est.items()}
    probe_cost = {pid: r.compute.cost for pid, r in probes.items()}

    # stats[bin][budget][strategy] = [correct, problems, cost, raw_cost, peak cost]
    stats: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(lambda: defaultdict(dict))
    for (strategy, label), results in runs.items():
        for p in problems:
            r = results[p.id]
            s = stats[bin_of[p.id]][label].setdefault(strategy, [0, 0, 0.0, 0.0, 0.0])
            s[0] += bool(r.correct)
            s[1] += 1
            s[2] += r.compute.cost
            s[3] += r.compute.raw_cost
            s[4] = max(s[4], r.compute.cost)

    overall = {(label, s): sum(bool(r.correct) for r in res.values()) / len(res) for (s, label), res in runs.items()}
    bins: dict[str, BinPolicy] = {}
    curves: dict[str, list[Point]] = {}
    for name in BINS:
        if name not in stats:
            bins[name] = base.bins[name]
            continue
        by_budget = []
        for label, per in stats[name].items():
            winner = max(per, key=lambda s: (per[s][0] / per[s][1], -per[s][2]))
            by_budget.append(Entry(names[winner], dict(params.get(winner) or {}), label))
        largest = max(by_budget, key=lambda e: budget_size(Budget.parse(e.budget)))
        bins[name] = BinPolicy(base.bins[name].share, Entry(largest.strategy, dict(largest.params)), by_budget)
        curves[name] = _curves(stats[name], overall, shrink, params, names)
    counts = {name: sum(1 for b in bin_of.values() if b == name) for name in BINS}
    table = AllocationTable(
        bins, dict(base.thresholds), "calibrate", dmap,
        mix={name: counts[name] / len(problems) for name in BINS if counts[name]},
        curves={b: pts for b, pts in curves.items() if pts},
        probe_cost_per_sample=sum(probe_cost.values()) / len(probe_cost) / probe_samples,
    )
    out = table.to_dict()
    out["calibration"] = {
        "problems": len(problems),
        "probe_samples": probe_samples,
        "label": label_source,
        "shrink": shrink,
        "bins": counts,
        "observed_pass1": {name: round(sum(pass1[p] for p in bin_of if bin_of[p] == name) / counts[name], 4)
                           for name in BINS if counts[name]},
        "accuracy": {
            name: {
                label: {s: {"accuracy": round(v[0] / v[1], 4), "problems": v[1], "mean_tokens": round(v[2] / v[1], 1),
                            "raw_cost": round(v[3] / v[1], 1)}
                        for s, v in per.items()}
                for label, per in stats[name].items()
            }
            for name in BINS if name in stats
        },
    }
    return out


def _curves(per_budget: dict[str, dict[str, list[float]]], overall: dict[tuple[str, str], float], shrink: float,
            params: dict[str, dict[str, Any]], names: dict[str, str]) -> list[Point]:
    """A bin's curve points: per strategy, accuracy by width shrunk towards the whole dev set's
    and then made non-decreasing in width (an isotonic fit, weighted by problems: more width
    should not hurt in expectation, and a dip at one width of a small bin is noise)."""
    out = []
    for s in sorted({s for per in per_budget.values() for s in per}):
        rows = sorted((Budget.parse(label).n, label, per[s]) for label, per in per_budget.items()
                      if s in per and Budget.parse(label).n is not None)
        if not rows:
            continue
        acc = [(v[0] + shrink * overall[label, s]) / (v[1] + shrink) for _, label, v in rows]
        xs, ys = pav([float(n) for n, _, _ in rows], acc, [v[1] + shrink for _, _, v in rows])
        fitted = [ys[max(i for i, x in enumerate(xs) if x <= n + 1e-9)] if any(x <= n + 1e-9 for x in xs) else ys[0]
                  for n, _, _ in rows]
        for (n, _, v), a in zip(rows, fitted):
            out.append(Point(names[s], n, a, v[2] / v[1], tuple(sorted((params.get(s) or {}).items())), v[4]))
    return out


def apply_map(table: AllocationTable, probe_results: dict[str, SearchResult]) -> dict[str, tuple[float, str]]:
    """(estimate, bin) per problem id for `probe` results under a table's map (evaluation helper)."""
    out = {}
    for pid, r in probe_results.items():
        score, cons = float(r.meta["probe_score"]), float(r.meta.get("probe_consensus", 0.0))
        out[pid] = (table.estimate(score, cons), table.bin_of(score, cons))
    return out

"""`ponder calibrate`: learn the allocation table (difficulty bin x budget -> strategy) on a
labelled dev set.

    bin(q)          <- the probe's predicted pass@1 (strategy `probe`: the same samples `auto` draws first)
    acc[s, b, bin]  <- accuracy of strategy s at budget b on the dev problems of that bin
    table[bin][b]   <- argmax_s acc (ties: fewer tokens); the bin's default: its winner at the largest budget

Bins with no dev problem keep the base table's entries; shares (how much of the ledger a bin's
queries get) are the base table's too. The measured accuracies go into the file beside the table,
so a reader can see why each entry won.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from ponder.config import Budget
from ponder.scheduler.allocation import AllocationTable, BinPolicy, Entry, budget_size
from ponder.scheduler.difficulty import BINS
from ponder.search.types import Problem


async def _collect(runner: Any, problems: list[Problem], strategy: str, budget: str | Budget, params=None):
    return {p.id: res async for p, res in runner.run(problems, strategy, budget, params)}


async def calibrate(
    problems: list[Problem],
    runner: Any,
    budgets: list[Budget],
    strategies: list[str],
    probe_samples: int = 4,
    base: AllocationTable | None = None,
    params: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The learned table as a mapping (what `AllocationTable.from_dict` reads) plus `calibration`,
    the per-bin accuracies and tokens it was chosen from. `params` (per strategy) are the
    parameters each candidate runs with, and go into the table's entries with it."""
    params = params or {}
    if not problems or not budgets or not strategies:
        raise ValueError("calibrate needs problems, budgets and strategies")
    base = base or AllocationTable.load()
    probes = await _collect(runner, problems, "probe", Budget(n=probe_samples))
    bin_of = {pid: base.bin_of(r.meta["probe_score"]) for pid, r in probes.items()}

    # stats[bin][budget][strategy] = [correct, problems, tokens]
    stats: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(lambda: defaultdict(dict))
    for budget in budgets:
        for strategy in strategies:
            results = await _collect(runner, problems, strategy, budget, params.get(strategy) or None)
            for p in problems:
                r = results[p.id]
                s = stats[bin_of[p.id]][budget.label()].setdefault(strategy, [0, 0, 0.0])
                s[0] += bool(r.correct)
                s[1] += 1
                s[2] += r.compute.cost

    bins: dict[str, BinPolicy] = {}
    for name in BINS:
        if name not in stats:
            bins[name] = base.bins[name]
            continue
        by_budget = []
        for label, per in stats[name].items():
            winner = max(per, key=lambda s: (per[s][0] / per[s][1], -per[s][2]))
            by_budget.append(Entry(winner, dict(params.get(winner) or {}), label))
        largest = max(by_budget, key=lambda e: budget_size(Budget.parse(e.budget)))
        bins[name] = BinPolicy(base.bins[name].share, Entry(largest.strategy, dict(largest.params)), by_budget)
    table = AllocationTable(bins, dict(base.thresholds), "calibrate")
    out = table.to_dict()
    out["calibration"] = {
        "problems": len(problems),
        "probe_samples": probe_samples,
        "bins": {name: sum(1 for b in bin_of.values() if b == name) for name in BINS},
        "accuracy": {
            name: {
                label: {s: {"accuracy": round(v[0] / v[1], 4), "problems": v[1], "mean_tokens": round(v[2] / v[1], 1)}
                        for s, v in per.items()}
                for label, per in stats[name].items()
            }
            for name in BINS if name in stats
        },
    }
    return out


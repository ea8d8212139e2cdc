"""Strategy `auto`: probe the difficulty, pick the table's strategy for the bin, and run it.

    probe  <- k sampled solutions, PRM-scored                  (difficulty.probe)
    bin    <- easy | medium | hard from the calibrated pass@1  (the table's difficulty map)
    entry  <- the compute-optimal plan's point for the bin at this budget, or table[bin]
              for a table without curves                       (allocation.AllocationTable)
    grant  <- expected spend share x fair share, limit cap x it, through ctx.regrant
                                                               (when the runner gave an account)
    value  <- the point's marginal accuracy per cost, through ctx.regrant too
                                                               (the scheduler serves high value first)
    result <- entry.strategy, handed the probe's samples and steps first (replay.ReplayContext)

What the search does not spend of its grant (an early stop, a cheap point) goes back to the
job's ledger when it closes, and raises the fair share of every query after it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from ponder.config import Budget
from ponder.scheduler.allocation import AllocationTable, Entry
from ponder.scheduler.difficulty import probe
from ponder.scheduler.replay import ReplayContext
from ponder.search import registry
from ponder.search.aggregate import aggregate, select
from ponder.search.context import SearchContext
from ponder.search.types import Candidate, Problem, SearchResult


@dataclass
class AutoConfig:
    n: int | None = None  # width budget handed to the chosen strategy (None: the table's, or tokens)
    probe_samples: int = 4  # the runner passes scheduler.probe_samples unless the user sets it
    table: str | None = None  # allocation table YAML (the runner passes scheduler.allocation_table); None: the shipped one
    strategy: str | None = None  # run this strategy after the probe whatever the table says (`ponder calibrate`)
    strategy_params: dict | None = None  # its parameters (with `strategy`)
    merge_probe: bool = True  # probe solutions the strategy never reached join the final PRM-weighted vote

    def validate(self) -> None:
        if self.n is not None and self.n < 1:
            raise ValueError(f"n must be positive, got {self.n!r}")
        if self.probe_samples < 1:
            raise ValueError(f"probe_samples must be at least 1, got {self.probe_samples!r}")
        if self.strategy is not None:
            if self.strategy == "auto":
                raise ValueError("auto cannot run itself")
            registry.get(self.strategy)


@registry.register("auto", AutoConfig)
async def auto(problem: Problem, ctx: SearchContext, cfg: AutoConfig) -> SearchResult:
    table = AllocationTable.load(cfg.table)  # cached per file and content
    pr = await probe(ctx, cfg.probe_samples, table.thresholds, table.difficulty_map)
    bin_name = pr.bin
    budget = Budget(n=cfg.n) if cfg.n is not None else Budget(tokens=ctx.budget + ctx.spent.cost)
    if cfg.strategy is not None:  # forced (calibrate measures each point): the grant it was given
        entry, share, grant = Entry(cfg.strategy, dict(cfg.strategy_params or {})), 1.0, None
    else:
        entry, share, cap, value = table.choose(bin_name, budget, _draw(problem.id))
        # Through the door: the runtime owns the job's ledger and the order of expansions.
        grant = await ctx.regrant(share, cap, value)
    strat = registry.get(entry.strategy)
    if strat.name == "auto":
        raise ValueError("the allocation table cannot choose 'auto' itself")
    params = dict(entry.params)
    planned = params.pop("n", None)
    # An optimised table's point carries its width; otherwise a width the user gave wins.
    from_plan = cfg.strategy is None and table.optimised and planned is not None
    n = planned if from_plan or cfg.n is None else cfg.n
    inner_cfg = strat.make_config(params, n=n)
    replay = ReplayContext(ctx, pr.samples, ctx.temperature)
    result = await strat.fn(problem, replay, inner_cfg)
    merged = 0
    unused = replay.unused()
    if cfg.merge_probe and unused and result.stop_reason != "error":
        merged = _merge_probe(result, unused)
    result.strategy = "auto"
    result.meta.update(
        {
            "auto_strategy": strat.name,
            "auto_n": getattr(inner_cfg, "n", None),
            "auto_params": params,
            "difficulty": bin_name,
            "probe_score": pr.score,
            "probe_consensus": pr.consensus,
            "estimate": pr.estimate,
            "probe_samples": len(pr.samples),
            "probe_reused": replay.replayed,
            "probe_steps_reused": replay.replayed_steps,
            "probe_merged": merged,
            "share": share,
        }
    )
    if grant is not None:
        result.meta["grant"] = grant if not math.isinf(grant) else None
    return result


def _draw(key: str) -> float:
    """A uniform draw in [0, 1) that is a function of the problem alone (reproducible runs)."""
    return int.from_bytes(hashlib.blake2b(f"auto:{key}".encode(), digest_size=8).digest(), "little") / 2**64


def _merge_probe(result: SearchResult, unused: list) -> int:
    """Add the probe's finished samples the strategy did not reuse to the result's candidates
    and choose again by PRM-weighted vote: the probe was paid for, so its samples vote."""
    extra = [Candidate.from_node(n, aggregate(n.rewards, "last")) for n in unused
             if n.terminal and n.answer is not None and n.rewards]
    if not extra:
        return 0
    cands = [c for c in result.candidates if c.terminal and c.answer is not None] + extra
    chosen = select(cands, "prm_vote")
    result.candidates = [c for c in result.candidates if not (c.terminal and c.answer is not None)] + cands
    if chosen is not None:
        result.answer = chosen.answer
        result.trajectory = list(chosen.steps)
        if result.stop_reason == "no_answer":
            result.stop_reason = "done"
    return len(extra)

"""Strategy `auto`: probe the difficulty, pick the table's strategy for the bin, and run it.

    probe  <- k sampled solutions, PRM-scored          (difficulty.probe)
    bin    <- easy | medium | hard from the probe's predicted pass@1
    entry  <- table[bin] at this budget                 (allocation.AllocationTable)
    grant  <- bin share x fair share, from the ledger   (when the runner gave an account)
    result <- entry.strategy, starting from the probe's samples (replay.ReplayContext)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ponder.config import Budget
from ponder.scheduler.allocation import AllocationTable
from ponder.scheduler.difficulty import probe
from ponder.scheduler.replay import ReplayContext
from ponder.search import registry
from ponder.search.context import SearchContext
from ponder.search.types import Problem, SearchResult


@dataclass
class AutoConfig:
    n: int | None = None  # width budget handed to the chosen strategy (None: the table's, or tokens)
    probe_samples: int = 4  # the runner passes scheduler.probe_samples unless the user sets it
    table: str | None = None  # allocation table YAML (the runner passes scheduler.allocation_table); None: the shipped one

    def validate(self) -> None:
        if self.n is not None and self.n < 1:
            raise ValueError(f"n must be positive, got {self.n!r}")
        if self.probe_samples < 1:
            raise ValueError(f"probe_samples must be at least 1, got {self.probe_samples!r}")


@registry.register("auto", AutoConfig)
async def auto(problem: Problem, ctx: SearchContext, cfg: AutoConfig) -> SearchResult:
    table = AllocationTable.load(cfg.table)  # cached per file and content
    pr = await probe(ctx, cfg.probe_samples, table.thresholds)
    bin_name = table.bin_of(pr.score)
    budget = Budget(n=cfg.n) if cfg.n is not None else Budget(tokens=ctx.budget + ctx.spent.cost)
    entry, share = table.choose(bin_name, budget)
    grant = ctx.regrant(share)  # through the door: the runtime owns the job's ledger
    strat = registry.get(entry.strategy)
    if strat.name == "auto":
        raise ValueError("the allocation table cannot choose 'auto' itself")
    params = dict(entry.params)
    n = cfg.n if cfg.n is not None else params.pop("n", None)
    inner_cfg = strat.make_config(params, n=n)
    replay = ReplayContext(ctx, pr.samples, ctx.temperature)
    result = await strat.fn(problem, replay, inner_cfg)
    result.strategy = "auto"
    result.meta.update(
        {
            "auto_strategy": strat.name,
            "difficulty": bin_name,
            "probe_score": pr.score,
            "probe_samples": len(pr.samples),
            "probe_reused": replay.replayed,
            "share": share,
        }
    )
    if grant is not None:
        result.meta["grant"] = grant if not math.isinf(grant) else None
    return result

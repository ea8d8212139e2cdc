"""Greedy decoding (the baseline) and best-of-N with PRM-weighted selection."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ponder.search.aggregate import aggregate, check_positive, check_scoring, conclude, lead_probability, vote_counts
from ponder.search.context import SearchContext
from ponder.search.registry import register
from ponder.search.types import Candidate, Node, Problem, SearchResult


@dataclass
class GreedyConfig:
    n: int = 1  # accepted so a shared "n=..." budget applies; greedy always draws one sample
    aggregation: str = "last"

    def validate(self) -> None:
        check_positive("n", self.n)
        check_scoring(self.aggregation, "prm_max")


@register("greedy", GreedyConfig)
async def greedy(problem: Problem, ctx: SearchContext, cfg: GreedyConfig) -> SearchResult:
    """One solution at temperature 0, scored by the PRM for reporting only."""
    [samples] = await ctx.expand([Node()], 1, temperature=0.0, to_end=True)
    trace = [{"round": 0, "samples": len(samples)}]
    return await conclude(ctx, "greedy", samples, aggregation=cfg.aggregation, selection="prm_max", trace=trace)


# With a token budget and no width, best-of-N samples this many at a time until the budget is
# spent; with neither, it falls back to DEFAULT_N samples.
DEFAULT_N = 16


@dataclass
class BestOfNConfig:
    # Default selection: PRM-weighted vote over `last`-step rewards (weighted best-of-N, the
    # common default for Qwen2.5-Math-PRM / RLHFlow PRMs, and the strongest in Liu et al.).
    n: int | None = None  # samples; None: as many as the token budget allows
    selection: str = "prm_vote"
    aggregation: str = "last"
    round_size: int = 4  # samples per round under a token cap
    temperature: float | None = None  # None: the context's sampling temperature
    # Adaptive best-of-N: sample in rounds of `round_size` and stop once the vote's leader is
    # this likely to stay ahead (aggregate.lead_probability); n is then the cap. None: all n.
    confidence: float | None = None

    def validate(self) -> None:
        check_positive("n", self.n, allow_none=True)
        check_positive("round_size", self.round_size)
        if self.confidence is not None and not 0.5 <= self.confidence < 1:
            raise ValueError(f"confidence must be in [0.5, 1), got {self.confidence!r}")
        check_scoring(self.aggregation, self.selection)
        if self.temperature is not None and self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature!r}")


@register("best_of_n", BestOfNConfig)
async def best_of_n(problem: Problem, ctx: SearchContext, cfg: BestOfNConfig) -> SearchResult:
    root = Node()
    width = cfg.n if cfg.n is not None else (DEFAULT_N if math.isinf(ctx.budget) else None)
    samples: list[Node] = []
    trace: list[dict] = []
    while width is None or len(samples) < width:
        # Under a token cap, sample in rounds: the context refuses a round the rest cannot pay for,
        # so little is left unspent.
        k = width - len(samples) if width is not None else cfg.round_size
        if not math.isinf(ctx.budget) or cfg.confidence is not None:
            k = min(k, cfg.round_size)
        [new] = await ctx.expand([root], k, temperature=cfg.temperature, to_end=True)
        if not new:  # budget spent
            break
        await ctx.score(new)
        samples.extend(new)
        cands = [Candidate.from_node(s, aggregate(s.rewards, cfg.aggregation)) for s in samples if s.terminal]
        trace.append({"round": len(trace), "samples": len(samples), "answers": len(vote_counts(cands)),
                      "cost": ctx.spent.cost})
        if cfg.confidence is not None:
            trace[-1]["lead"] = round(lead := lead_probability(cands, cfg.selection), 4)
            if lead >= cfg.confidence:
                break
    return await conclude(ctx, "best_of_n", samples, aggregation=cfg.aggregation, selection=cfg.selection, trace=trace)

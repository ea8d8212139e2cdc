"""Beam search guided by a PRM (Snell et al. 2024, arXiv 2408.03314, section 5.1).

N beams, beam width M: sample N first steps; then at every depth keep the top N/M unfinished
beams by PRM score and expand each of them M times. Finished beams move to the completed pool.
With lookahead k, a beam is scored by rolling it out k more steps at temperature 0 and taking
the PRM reward of the rollout's last step (the rollout itself is thrown away).
"""

from __future__ import annotations

from dataclasses import dataclass

from ponder.search.aggregate import aggregate, check_positive, check_scoring, conclude
from ponder.search.context import SearchContext
from ponder.search.registry import register
from ponder.search.types import Node, Problem, SearchResult


@dataclass
class BeamConfig:
    n: int = 16  # N: beams per depth, and the number of completed beams that ends the search
    beam_width: int = 4  # M: children per kept beam; N/M beams are kept
    lookahead: int = 0  # k: extra greedy steps before scoring a beam
    max_depth: int = 40
    aggregation: str = "last"  # for the final selection; pruning uses the (lookahead) step reward
    selection: str = "prm_vote"

    def validate(self) -> None:
        check_positive("n", self.n)
        check_positive("beam_width", self.beam_width)
        check_positive("max_depth", self.max_depth)
        if self.lookahead < 0:
            raise ValueError(f"lookahead must be >= 0, got {self.lookahead!r}")
        if self.n % self.beam_width:
            raise ValueError(f"n ({self.n}) must be a multiple of beam_width ({self.beam_width})")
        check_scoring(self.aggregation, self.selection)


async def lookahead_scores(ctx: SearchContext, beams: list[Node], k: int) -> list[float]:
    """Each beam's score: the reward of the last step of a k-step greedy rollout from it."""
    await ctx.score(beams)
    ends = list(beams)
    for _ in range(k):
        live = [i for i, node in enumerate(ends) if not node.terminal]
        if not live:
            break
        nexts = await ctx.expand([ends[i] for i in live], 1, temperature=0.0)
        for i, children in zip(live, nexts):
            if children:
                ends[i] = children[0]
    await ctx.score(ends)
    return [aggregate(node.rewards, "last") for node in ends]


@register("beam_search", BeamConfig)
async def beam_search(problem: Problem, ctx: SearchContext, cfg: BeamConfig) -> SearchResult:
    keep = cfg.n // cfg.beam_width
    [beams] = await ctx.expand([Node()], cfg.n)
    completed: list[Node] = []
    seen: list[Node] = list(beams)  # for the best partial answer if nothing finishes
    trace: list[dict] = []
    for depth in range(1, cfg.max_depth + 1):
        if not beams:
            break
        scores = await lookahead_scores(ctx, beams, cfg.lookahead)
        completed += [b for b in beams if b.terminal]
        live = sorted(
            ((s, b) for s, b in zip(scores, beams) if not b.terminal), key=lambda sb: sb[0], reverse=True
        )
        kept = [b for _, b in live[:keep]]
        step = {"depth": depth, "beams": len(beams), "kept": len(kept), "completed": len(completed)}
        step["best"] = live[0][0] if live else None
        # the pruning line: every kept beam scores at least as high as every dropped one
        step["kept_min"] = live[len(kept) - 1][0] if kept else None
        step["dropped_max"] = live[len(kept)][0] if len(live) > len(kept) else None
        if len(completed) >= cfg.n or not kept or depth == cfg.max_depth:
            trace.append(step)
            break
        children = await ctx.expand(kept, cfg.beam_width)
        step["children"] = [len(c) for c in children]
        trace.append(step)
        beams = [c for cs in children for c in cs]
        seen += beams
    return await conclude(
        ctx, "beam_search", seen, aggregation=cfg.aggregation, selection=cfg.selection, trace=trace
    )

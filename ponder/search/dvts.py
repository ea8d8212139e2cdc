"""Diverse verifier tree search (Beeching et al. 2024, HF "scaling test-time compute").

Split the N samples into N/M independent subtrees. Each subtree is a greedy-by-PRM beam: expand
its current node M times, keep the best child, repeat until the kept child finishes. Subtrees
start from their own root and never share nodes, which is where the diversity comes from. Only
finished trajectories are answer candidates; an unfinished subtree contributes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from ponder.search.aggregate import aggregate, check_positive, check_scoring, conclude
from ponder.search.context import SearchContext
from ponder.search.registry import register
from ponder.search.types import Node, Problem, SearchResult


@dataclass
class DVTSConfig:
    n: int = 16  # N: total width; N/M subtrees
    beam_width: int = 4  # M: children per expansion of a subtree's current node
    max_depth: int = 40
    aggregation: str = "last"  # for the final selection; each subtree keeps its best last-step reward
    selection: str = "prm_vote"

    def validate(self) -> None:
        check_positive("n", self.n)
        check_positive("beam_width", self.beam_width)
        check_positive("max_depth", self.max_depth)
        if self.n % self.beam_width:
            raise ValueError(f"n ({self.n}) must be a multiple of beam_width ({self.beam_width})")
        check_scoring(self.aggregation, self.selection)


@register("dvts", DVTSConfig)
async def dvts(problem: Problem, ctx: SearchContext, cfg: DVTSConfig) -> SearchResult:
    subtrees = cfg.n // cfg.beam_width
    current: list[Node] = [Node() for _ in range(subtrees)]  # one root per subtree
    finished: list[Node] = []
    stalled: list[Node] = []  # subtrees the budget cut off
    trace: list[dict] = []
    for depth in range(1, cfg.max_depth + 1):
        live = [node for node in current if not node.terminal]
        if not live:
            break
        children = await ctx.expand(live, cfg.beam_width)
        await ctx.score([c for cs in children for c in cs])
        current = []
        for node, cs in zip(live, children):
            if not cs:  # budget spent: this subtree ends unfinished
                stalled.append(node)
                continue
            best = max(cs, key=lambda c: aggregate(c.rewards, "last"))
            (finished if best.terminal else current).append(best)
        expanded = sum(1 for cs in children if cs)
        trace.append({"depth": depth, "live": len(live), "expanded": expanded, "finished": len(finished)})
        if not current:
            break
    # Only finished subtrees answer (`conclude` takes candidates from finished nodes only); the
    # unfinished ones are passed so that a search where nothing finished still reports its best
    # partial trajectory, with answer None.
    return await conclude(
        ctx, "dvts", finished + current + stalled, aggregation=cfg.aggregation, selection=cfg.selection, trace=trace
    )

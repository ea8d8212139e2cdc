"""REBASE, reward-balanced search (Wu et al. 2024, arXiv 2408.00724, section 3.2).

At every depth the remaining width W = N - (finished so far) is shared among the live nodes in
proportion to softmax(reward / T), rounded so the widths sum to exactly W, and each node is
expanded by its width. Good nodes get many children, weak ones few or none, and no node is cut
off outright by a hard top-k.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass

from ponder.search.aggregate import aggregate, check_positive, check_scoring, conclude, softmax
from ponder.search.context import SearchContext
from ponder.search.registry import register
from ponder.search.types import Node, Problem, SearchResult


@dataclass
class RebaseConfig:
    n: int = 16  # N: total width (the number of finished solutions the search aims for)
    temperature: float = 0.1  # balance temperature T: lower is greedier
    max_depth: int = 40
    aggregation: str = "last"  # the reward a node is balanced by (the paper: its step reward)
    selection: str = "prm_vote"

    def validate(self) -> None:
        check_positive("n", self.n)
        check_positive("temperature", self.temperature)
        check_positive("max_depth", self.max_depth)
        check_scoring(self.aggregation, self.selection)


def balanced_widths(scores: list[float], width: int, temperature: float) -> list[int]:
    """Split `width` in proportion to softmax(scores/T); largest remainders get the leftovers.

    The result always sums to `width`. Ties on the remainder go to the higher score, then to
    the earlier node, so the split is deterministic.
    """
    if not scores:
        return []
    shares = [p * width for p in softmax(scores, temperature)]
    widths = [math.floor(s) for s in shares]
    leftover = width - sum(widths)
    order = sorted(range(len(scores)), key=lambda i: (-(shares[i] - widths[i]), -scores[i], i))
    for i in order[:leftover]:
        widths[i] += 1
    return widths


@register("rebase", RebaseConfig)
async def rebase(problem: Problem, ctx: SearchContext, cfg: RebaseConfig) -> SearchResult:
    [frontier] = await ctx.expand([Node()], cfg.n)
    seen: list[Node] = list(frontier)
    finished: list[Node] = []
    trace: list[dict] = []
    for depth in range(1, cfg.max_depth + 1):
        await ctx.score(frontier)
        finished += [node for node in frontier if node.terminal]
        live = [node for node in frontier if not node.terminal]
        remaining = cfg.n - len(finished)
        if remaining <= 0 or not live or depth == cfg.max_depth:
            trace.append({"depth": depth, "live": len(live), "remaining": max(remaining, 0), "finished": len(finished)})
            break
        scores = [aggregate(node.rewards, cfg.aggregation) for node in live]
        widths = balanced_widths(scores, remaining, cfg.temperature)
        trace.append(
            {"depth": depth, "live": len(live), "remaining": remaining, "widths": widths, "finished": len(finished)}
        )
        # One expand call per distinct width (ctx.expand takes one n for all its nodes); they go
        # out together so the scheduler can batch them.
        groups = {w: [node for node, wi in zip(live, widths) if wi == w] for w in sorted(set(widths) - {0})}
        expanded = await asyncio.gather(*(ctx.expand(group, w) for w, group in groups.items()))
        frontier = [child for per_group in expanded for children in per_group for child in children]
        if not frontier:  # budget spent
            break
        seen += frontier
    return await conclude(ctx, "rebase", seen, aggregation=cfg.aggregation, selection=cfg.selection, trace=trace)

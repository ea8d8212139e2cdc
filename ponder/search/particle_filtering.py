"""Particle filtering (Puri et al. 2025, arXiv 2502.01618, algorithm 1).

N particles, each a partial solution. Every iteration extends each unfinished particle by one
step and scores it; then every particle of the population, finished ones included, is weighted
by softmax(logit(PRM reward) / T) and N are resampled (multinomial, with replacement, from the
context's seeded RNG). A resampled finished particle stays finished (it is not extended again),
so the population keeps its size and a strong finished solution can take over it. The filter
ends when every particle has finished; the answer is selected over the finished particles.
With T = 1 the weights are the PRM's odds r / (1 - r), as in the authors' library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ponder.search.aggregate import aggregate, check_positive, check_scoring, conclude, softmax
from ponder.search.context import SearchContext
from ponder.search.registry import register
from ponder.search.types import Node, Problem, SearchResult

_EPS = 1e-6  # keeps logit finite at rewards of exactly 0 or 1


@dataclass
class ParticleConfig:
    n: int = 16  # particles
    temperature: float = 1.0  # of the softmax over the rewards' logits: lower resamples more greedily
    max_depth: int = 40
    weight: str = "last"  # aggregation a particle is weighted by
    aggregation: str = "last"  # aggregation for the final selection
    selection: str = "prm_vote"

    def validate(self) -> None:
        check_positive("n", self.n)
        check_positive("temperature", self.temperature)
        check_positive("max_depth", self.max_depth)
        check_scoring(self.weight, self.selection)
        check_scoring(self.aggregation, self.selection)


def logit(p: float) -> float:
    p = min(1 - _EPS, max(_EPS, p))
    return math.log(p / (1 - p))


@register("particle_filtering", ParticleConfig)
async def particle_filtering(problem: Problem, ctx: SearchContext, cfg: ParticleConfig) -> SearchResult:
    particles: list[Node] = [Node()] * cfg.n
    seen: list[Node] = []
    trace: list[dict] = []
    for depth in range(1, cfg.max_depth + 1):
        live = [i for i, p in enumerate(particles) if not p.terminal]
        if not live:
            break
        # Duplicated particles expand independently: each draw from a node gets its own seed.
        children = await ctx.expand([particles[i] for i in live], 1)
        extended = [cs[0] for cs in children if cs]
        if not extended:  # budget spent
            break
        await ctx.score(extended)
        seen += extended
        for i, cs in zip(live, children):
            if cs:
                particles[i] = cs[0]
        scored = [p for p in particles if p.rewards]
        step = {"depth": depth, "extended": len(extended)}
        if len(scored) == len(particles):
            weights = softmax([logit(aggregate(p.rewards, cfg.weight)) for p in particles], cfg.temperature)
            particles = ctx.rng.choices(particles, weights=weights, k=cfg.n)
            step["distinct_after_resample"] = len({p.id for p in particles})
        step["finished"] = sum(p.terminal for p in particles)  # in the population, after resampling
        trace.append(step)
    return await conclude(
        ctx, "particle_filtering", seen, aggregation=cfg.aggregation, selection=cfg.selection, trace=trace
    )

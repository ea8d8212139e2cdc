"""Particle filtering (Puri et al. 2025, arXiv 2502.01618, algorithm 1).

N particles, each a partial solution. Every iteration extends each unfinished particle by one
step, weights the unfinished ones by softmax(PRM reward / T) and resamples them (multinomial,
with replacement, from the context's seeded RNG). Finished particles leave the population and
are kept. The answer is selected over the finished particles.
"""

from __future__ import annotations

from dataclasses import dataclass

from ponder.search.aggregate import aggregate, check_positive, check_scoring, conclude, softmax
from ponder.search.context import SearchContext
from ponder.search.registry import register
from ponder.search.types import Node, Problem, SearchResult


@dataclass
class ParticleConfig:
    n: int = 16  # particles
    temperature: float = 0.2  # softmax temperature over rewards: lower resamples more greedily
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


@register("particle_filtering", ParticleConfig)
async def particle_filtering(problem: Problem, ctx: SearchContext, cfg: ParticleConfig) -> SearchResult:
    root = Node()
    particles: list[Node] = [root] * cfg.n
    finished: list[Node] = []
    seen: list[Node] = []
    trace: list[dict] = []
    for depth in range(1, cfg.max_depth + 1):
        # Duplicated particles expand independently: every request gets its own seed.
        extended = [cs[0] for cs in await ctx.expand(particles, 1) if cs]
        if not extended:  # budget spent
            break
        await ctx.score(extended)
        seen += extended
        finished += [p for p in extended if p.terminal]
        live = [p for p in extended if not p.terminal]
        step = {"depth": depth, "particles": len(extended), "finished": len(finished)}
        if not live:
            trace.append(step)
            break
        weights = softmax([aggregate(p.rewards, cfg.weight) for p in live], cfg.temperature)
        particles = ctx.rng.choices(live, weights=weights, k=len(live))
        step["distinct_after_resample"] = len({p.id for p in particles})
        trace.append(step)
    return await conclude(
        ctx, "particle_filtering", seen, aggregation=cfg.aggregation, selection=cfg.selection, trace=trace
    )

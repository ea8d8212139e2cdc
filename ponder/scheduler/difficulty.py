"""A cheap difficulty probe: a few sampled solutions scored by the PRM.

The mean final-step PRM reward of `k` samples (an unfinished sample counts 0) predicts pass@1;
bins use absolute thresholds after Liu et al. 2025: easy >= 0.5, medium 0.1-0.5, hard < 0.1.
The probe's samples are paid for, so the search that follows reuses them (see `replay`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ponder.search.aggregate import conclude
from ponder.search.context import SearchContext
from ponder.search.registry import register
from ponder.search.types import Node, Problem, SearchResult

BINS = ("easy", "medium", "hard")
DEFAULT_THRESHOLDS = {"easy": 0.5, "medium": 0.1}


@dataclass
class Probe:
    samples: list[Node]
    score: float  # predicted pass@1
    bin: str
    answers: dict[str, int] = field(default_factory=dict)

    @property
    def consensus(self) -> float:
        """Share of samples that gave the most common answer."""
        return max(self.answers.values()) / len(self.samples) if self.answers and self.samples else 0.0


def difficulty_bin(score: float, thresholds: dict[str, float] | None = None) -> str:
    t = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    if score >= t["easy"]:
        return "easy"
    if score >= t["medium"]:
        return "medium"
    return "hard"


def predicted_pass_rate(samples: list[Node]) -> float:
    if not samples:
        return 0.0
    return sum((s.reward or 0.0) if s.terminal and s.answer is not None else 0.0 for s in samples) / len(samples)


async def probe(ctx: SearchContext, k: int = 4, thresholds: dict[str, float] | None = None) -> Probe:
    if k < 1:
        raise ValueError(f"probe_samples must be at least 1, got {k}")
    [samples] = await ctx.expand([Node()], k, to_end=True)
    await ctx.score(samples)
    answers: dict[str, int] = {}
    for s in samples:
        if s.terminal and s.answer is not None:
            answers[s.answer] = answers.get(s.answer, 0) + 1
    score = predicted_pass_rate(samples)
    return Probe(samples, score, difficulty_bin(score, thresholds), answers)


@dataclass
class ProbeConfig:
    n: int = 4  # samples

    def validate(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n!r}")


@register("probe", ProbeConfig)
async def probe_strategy(problem: Problem, ctx: SearchContext, cfg: ProbeConfig) -> SearchResult:
    """The difficulty probe on its own: the samples `auto` starts from, the PRM-weighted vote of
    them as the answer, and the predicted pass@1 and bin in `meta` (what `ponder calibrate` bins by)."""
    pr = await probe(ctx, cfg.n)
    result = await conclude(ctx, "probe", pr.samples, aggregation="last", selection="prm_vote", trace=[])
    result.meta.update({"probe_score": pr.score, "difficulty": pr.bin})
    return result

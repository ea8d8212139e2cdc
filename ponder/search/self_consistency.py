"""Self-consistency (Wang et al. 2022) with early stopping.

Samples full solutions in windows of w, up to n in all, and stops early when a window's answers
all agree (ESC, Li et al. 2024, arXiv 2401.10480) or, if `stop_threshold` is set, when the
leading answer holds at least that share of all answers so far (adaptive consistency, Aggarwal
et al. 2023, with a plain majority-share criterion). The answer is the majority vote; the PRM is
only called when another selection is configured.
"""

from __future__ import annotations

from dataclasses import dataclass

from ponder.search.aggregate import canonical, check_positive, check_scoring, conclude, vote_counts
from ponder.search.context import SearchContext
from ponder.search.registry import register
from ponder.search.types import Candidate, Node, Problem, SearchResult


@dataclass
class SelfConsistencyConfig:
    n: int = 16  # the most samples drawn
    window: int = 4  # w: samples per window
    stop_threshold: float | None = None  # leading answer's share that ends the search early
    selection: str = "majority"
    aggregation: str = "last"

    def validate(self) -> None:
        check_positive("n", self.n)
        check_positive("window", self.window)
        if self.stop_threshold is not None and not 0 < self.stop_threshold <= 1:
            raise ValueError(f"stop_threshold must be in (0, 1], got {self.stop_threshold!r}")
        check_scoring(self.aggregation, self.selection)


def window_agrees(window: list[Node]) -> bool:
    """ESC's rule: every sample in the window finished with the same answer."""
    answers = {canonical(node.answer) for node in window}
    return len(window) > 0 and len(answers) == 1 and None not in answers


@register("self_consistency", SelfConsistencyConfig)
async def self_consistency(problem: Problem, ctx: SearchContext, cfg: SelfConsistencyConfig) -> SearchResult:
    root = Node()
    samples: list[Node] = []
    trace: list[dict] = []
    stop_reason: str | None = None
    while len(samples) < cfg.n:
        [window] = await ctx.expand([root], min(cfg.window, cfg.n - len(samples)), to_end=True)
        if not window:  # budget spent
            break
        samples += window
        votes = vote_counts([Candidate.from_node(s, 0.0) for s in samples if s.terminal])
        share = max(votes.values()) / len(samples) if votes else 0.0
        trace.append({"window": len(trace), "samples": len(samples), "answers": len(votes), "top_share": share})
        agrees = window_agrees(window)
        if len(samples) < cfg.n and (agrees or (cfg.stop_threshold is not None and share >= cfg.stop_threshold)):
            stop_reason = "early_stop"
            break
    result = await conclude(
        ctx, "self_consistency", samples, aggregation=cfg.aggregation, selection=cfg.selection, trace=trace,
        stop_reason=stop_reason, score=cfg.selection != "majority",  # a plain vote needs no PRM
    )
    if result.answer is None and stop_reason is not None:
        result.stop_reason = "no_answer"
    return result

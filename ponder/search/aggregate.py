"""Step-score aggregation, answer normalisation and answer selection.

Aggregation turns a trajectory's per-step PRM rewards into one score:
`last` (the PRM's view of the whole solution, the usual choice for Qwen/RLHFlow PRMs), `min`
(a chain is as good as its weakest step), `avg`, `prod` (probability that every step is right).

Selection picks one answer among finished candidates:
`majority` (self-consistency: most frequent canonical answer), `prm_max` (highest score) and
`prm_vote` (weighted best-of-N, Snell et al. / Liu et al.: sum of scores per canonical answer).
Candidates without an answer never win unless no candidate has one. Ties are broken
deterministically: by the next criterion, then by first appearance in the candidate list.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ponder.search.context import SearchContext
from ponder.search.types import Candidate, Node, SearchResult
from ponder.tasks.grading import answer_key

AGGREGATIONS = ("last", "min", "avg", "prod")
SELECTIONS = ("majority", "prm_max", "prm_vote")


def aggregate(rewards: Sequence[float] | None, how: str = "last") -> float:
    """One score from per-step rewards; 0.0 for an unscored trajectory."""
    if how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {how!r} (known: {', '.join(AGGREGATIONS)})")
    if not rewards:
        return 0.0
    if how == "last":
        return float(rewards[-1])
    if how == "min":
        return float(min(rewards))
    if how == "avg":
        return float(sum(rewards) / len(rewards))
    return float(math.prod(rewards))


def canonical(answer: str | None) -> str | None:
    """A comparison key for answers, the equivalence of grading's exact path: "$12.0$." and
    " 12 " both give "12"; \\frac{1}{2}, \\dfrac{1}{2}, 0.5, 1/2 and \\frac12 all give "0.5"."""
    return None if answer is None else answer_key(answer)


def select(candidates: Sequence[Candidate], how: str = "prm_vote") -> Candidate | None:
    """The chosen candidate: for vote-style selections, the best-scoring one with the winning answer."""
    if how not in SELECTIONS:
        raise ValueError(f"unknown selection {how!r} (known: {', '.join(SELECTIONS)})")
    if not candidates:
        return None
    answered = [c for c in candidates if c.answer is not None]
    if not answered:
        return _best_by_score(candidates)
    if how == "prm_max":
        return _best_by_score(answered)
    groups = _groups(answered)
    count = {k: len(v) for k, v in groups.items()}
    weight = {k: sum(c.score for c in v) for k, v in groups.items()}
    if how == "majority":
        key = lambda k: (count[k], weight[k])  # noqa: E731
    else:  # prm_vote
        key = lambda k: (weight[k], count[k])  # noqa: E731
    winner = max(groups, key=key)  # max keeps the first of equal keys
    return _best_by_score(groups[winner])


def _groups(answered: Sequence[Candidate]) -> dict[str, list[Candidate]]:
    """Candidates by canonical answer, in order of first appearance (the final tie-break)."""
    groups: dict[str, list[Candidate]] = {}
    for c in answered:
        groups.setdefault(canonical(c.answer), []).append(c)  # type: ignore[arg-type]
    return groups


def _best_by_score(cands: Sequence[Candidate]) -> Candidate:
    return max(cands, key=lambda c: c.score)  # first of equal scores


def vote_counts(candidates: Sequence[Candidate]) -> dict[str, int]:
    """Canonical answer -> how many candidates gave it (answers only)."""
    out: dict[str, int] = {}
    for c in candidates:
        key = canonical(c.answer)
        if key is not None:
            out[key] = out.get(key, 0) + 1
    return out


def lead_probability(candidates: Sequence[Candidate], how: str = "prm_vote") -> float:
    """How sure the vote's leader is to stay the leader: adaptive consistency's stopping rule
    (Aggarwal et al. 2023), P(theta > 1/2) for theta ~ Beta(1 + v1, 1 + v2), where v1 >= v2 are
    the two largest answers' votes. Under `prm_vote` the votes are the answers' shares of the
    PRM weight scaled to the answered samples (the PRM splits the evidence, the sample count
    sizes it); under `majority` and `prm_max` they are plain counts. 0 without an answer."""
    answered = [c for c in candidates if c.answer is not None]
    if not answered:
        return 0.0
    groups = _groups(answered)
    weight = [sum(max(c.score, 0.0) for c in g) for g in groups.values()]
    total = sum(weight)
    if how == "prm_vote" and total > 0:
        votes = sorted((len(answered) * w / total for w in weight), reverse=True)
    else:
        votes = sorted((float(len(g)) for g in groups.values()), reverse=True)
    return beta_tail(1.0 + votes[0], 1.0 + (votes[1] if len(votes) > 1 else 0.0))


def beta_tail(a: float, b: float, steps: int = 256) -> float:
    """P(theta > 1/2) for theta ~ Beta(a, b), a, b >= 1 (Simpson's rule on [1/2, 1])."""
    log_norm = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)

    def density(x: float) -> float:
        if x >= 1.0:
            return math.exp(log_norm) if b == 1.0 else 0.0
        return math.exp(log_norm + (a - 1) * math.log(x) + (b - 1) * math.log1p(-x))

    h = 0.5 / steps
    total = density(0.5) + density(1.0)
    total += sum((4 if i % 2 else 2) * density(0.5 + i * h) for i in range(1, steps))
    return min(1.0, max(0.0, total * h / 3))


def check_choice(field: str, value: str, known: Sequence[str]) -> None:
    if value not in known:
        raise ValueError(f"{field} must be one of {', '.join(known)}, got {value!r}")


def softmax(xs: Sequence[float], temperature: float) -> list[float]:
    """Numerically stable softmax of xs/temperature."""
    if not xs:
        return []
    scaled = [x / temperature for x in xs]
    top = max(scaled)
    exps = [math.exp(x - top) for x in scaled]
    total = sum(exps)
    return [e / total for e in exps]


async def conclude(
    ctx: SearchContext,
    strategy: str,
    nodes: Sequence[Node],
    *,
    aggregation: str,
    selection: str,
    trace: list[dict[str, Any]],
    stop_reason: str | None = None,
    score: bool = True,
) -> SearchResult:
    """The result of a search that produced `nodes` (any mix of finished and unfinished).

    Answer candidates are the finished nodes with an answer. When none finished, the one
    candidate is the best partial trajectory (marked `terminal=False`) and the answer is None.
    With `score=False`, nodes not yet scored are not sent to the PRM and score 0.
    """
    unique = list({id(n): n for n in nodes if not n.is_root}.values())
    if score:
        await ctx.score([n for n in unique if n.rewards is None])
    finished = [n for n in unique if n.terminal and n.answer is not None]
    if finished:
        cands = [Candidate.from_node(n, aggregate(n.rewards, aggregation)) for n in finished]
        return ctx.result(strategy, select(cands, selection), cands, stop_reason=stop_reason, trace=trace)
    if not unique:
        return ctx.result(strategy, None, [], stop_reason=stop_reason, trace=trace)
    best = max(unique, key=lambda n: (aggregate(n.rewards, aggregation), n.depth))
    partial = Candidate.from_node(best, aggregate(best.rewards, aggregation))
    partial.terminal = False
    partial.answer = None
    return ctx.result(strategy, partial, [partial], stop_reason=stop_reason, trace=trace)


def check_scoring(aggregation: str, selection: str) -> None:
    check_choice("aggregation", aggregation, AGGREGATIONS)
    check_choice("selection", selection, SELECTIONS)


def check_positive(field: str, value: float | None, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"{field} must be a positive number, got {value!r}")

"""A cheap difficulty probe: a few sampled solutions scored by the PRM, and a calibrated map from
what the probe saw to a predicted pass@1.

The probe draws `k` complete samples and scores them. Its raw features are the mean final-step
PRM reward (an unfinished sample counts 0) and the answer agreement (share of the samples giving
the most common answer). A PRM's rewards are not probabilities (an implicit PRM's sit far below
the policy's pass rate), so `ponder calibrate` fits a `DifficultyMap` on a labelled dev set:

    z(q)      = sigmoid(b + w_s * score + w_c * consensus)        (logistic fit, w >= 0)
    pass@1(q) = isotonic(z)                                      (pool-adjacent-violators fit)

and bins use absolute thresholds on that estimate after Liu et al. 2025: easy >= 0.5, medium
0.1-0.5, hard < 0.1. Without a map (an uncalibrated table) the raw score is the estimate. The
probe's samples are paid for, so the search that follows reuses them (see `replay`).
"""

from __future__ import annotations

import itertools
import math
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ponder.search.aggregate import conclude
from ponder.search.context import SearchContext
from ponder.search.registry import register
from ponder.search.types import Node, Problem, SearchResult

BINS = ("easy", "medium", "hard")
DEFAULT_THRESHOLDS = {"easy": 0.5, "medium": 0.1}
FEATURES = ("score", "consensus")


@dataclass
class Probe:
    samples: list[Node]
    score: float  # raw: mean final PRM reward
    bin: str
    answers: dict[str, int] = field(default_factory=dict)
    estimate: float | None = None  # calibrated pass@1 (the raw score when no map was given)

    @property
    def consensus(self) -> float:
        """Share of samples that gave the most common answer."""
        return max(self.answers.values()) / len(self.samples) if self.answers and self.samples else 0.0

    def features(self) -> dict[str, float]:
        return {"score": self.score, "consensus": self.consensus}


def difficulty_bin(score: float, thresholds: dict[str, float] | None = None) -> str:
    t = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    if score >= t["easy"]:
        return "easy"
    if score >= t["medium"]:
        return "medium"
    return "hard"


def predicted_pass_rate(samples: list[Node]) -> float:
    """The raw probe score: mean final-step reward, an unfinished sample counting 0."""
    if not samples:
        return 0.0
    return sum((s.reward or 0.0) if s.terminal and s.answer is not None else 0.0 for s in samples) / len(samples)


# -- the calibrated map ------------------------------------------------------------------------------


def pav(x: Sequence[float], y: Sequence[float], w: Sequence[float] | None = None) -> tuple[list[float], list[float]]:
    """Isotonic (non-decreasing) least-squares fit of y on x by pool-adjacent-violators.

    Returns knots (xs, ys): one per pooled block, at the block's weighted mean x, with its
    weighted mean y; xs strictly increasing and ys non-decreasing."""
    if len(x) != len(y) or not x:
        raise ValueError("pav needs equally many x and y values, at least one")
    w = [1.0] * len(x) if w is None else list(w)
    order = sorted(range(len(x)), key=lambda i: x[i])
    # blocks: [sum_w, sum_wy, sum_wx]; equal x values start pooled (a function of x)
    blocks: list[list[float]] = []
    last_x = None
    for i in order:
        if last_x is not None and x[i] == last_x:
            b = blocks[-1]
            b[0] += w[i]; b[1] += w[i] * y[i]; b[2] += w[i] * x[i]
        else:
            blocks.append([w[i], w[i] * y[i], w[i] * x[i]])
        last_x = x[i]
        while len(blocks) > 1 and blocks[-2][1] / blocks[-2][0] >= blocks[-1][1] / blocks[-1][0]:
            top = blocks.pop()
            b = blocks[-1]
            b[0] += top[0]; b[1] += top[1]; b[2] += top[2]
    return [b[2] / b[0] for b in blocks], [b[1] / b[0] for b in blocks]


def _sigmoid(t: float) -> float:
    return 1 / (1 + math.exp(-t)) if t >= 0 else math.exp(t) / (1 + math.exp(t))


def fit_logistic(rows: Sequence[Sequence[float]], y: Sequence[float], ridge: float = 1e-3,
                 iters: int = 50) -> tuple[float, list[float]]:
    """Logistic regression of fractional labels y in [0, 1] on feature rows (Newton's method,
    a small ridge), with non-negative weights: a feature whose weight comes out negative is
    dropped and the rest refitted, so the map is non-decreasing in every feature."""
    d = len(rows[0]) if rows else 0
    active = list(range(d))
    while True:
        beta = [0.0] * (len(active) + 1)  # bias first
        for _ in range(iters):
            g = [0.0] * len(beta)
            h = [[0.0] * len(beta) for _ in beta]
            for r, t in zip(rows, y):
                xs = [1.0] + [r[j] for j in active]
                p = _sigmoid(sum(b * v for b, v in zip(beta, xs)))
                for a in range(len(beta)):
                    g[a] += (p - t) * xs[a]
                    for c in range(len(beta)):
                        h[a][c] += p * (1 - p) * xs[a] * xs[c]
            for a in range(1, len(beta)):
                g[a] += ridge * beta[a]
                h[a][a] += ridge
            for a in range(len(beta)):
                h[a][a] += 1e-9
            step = _solve(h, g)
            beta = [b - s for b, s in zip(beta, step)]
            if max(abs(s) for s in step) < 1e-8:
                break
        neg = [j for j, b in zip(active, beta[1:]) if b < 0]
        if not neg:
            weights = [0.0] * d
            for j, b in zip(active, beta[1:]):
                weights[j] = b
            return beta[0], weights
        active = [j for j in active if j not in neg]


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting (tiny systems)."""
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(m[r][c]))
        m[c], m[p] = m[p], m[c]
        if abs(m[c][c]) < 1e-15:
            continue
        for r in range(n):
            if r != c:
                f = m[r][c] / m[c][c]
                m[r] = [u - f * v for u, v in zip(m[r], m[c])]
    return [m[i][n] / m[i][i] if abs(m[i][i]) > 1e-15 else 0.0 for i in range(n)]


@dataclass
class DifficultyMap:
    """Probe features -> predicted pass@1: a logistic score, then an isotonic map of it."""

    bias: float
    weights: dict[str, float]
    knots_x: list[float]
    knots_y: list[float]
    problems: int = 0

    def raw(self, features: dict[str, float]) -> float:
        return _sigmoid(self.bias + sum(w * features.get(f, 0.0) for f, w in self.weights.items()))

    def predict(self, features: dict[str, float]) -> float:
        z = self.raw(features)
        xs, ys = self.knots_x, self.knots_y
        if z <= xs[0]:
            return ys[0]
        if z >= xs[-1]:
            return ys[-1]
        i = bisect_right(xs, z)
        x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
        return y0 + (y1 - y0) * (z - x0) / (x1 - x0)

    @classmethod
    def fit(cls, features: Sequence[dict[str, float]], pass_rates: Sequence[float]) -> DifficultyMap:
        if not features or len(features) != len(pass_rates):
            raise ValueError("the difficulty map needs one pass rate per probed problem, at least one")
        rows = [[f.get(name, 0.0) for name in FEATURES] for f in features]
        bias, w = fit_logistic(rows, pass_rates)
        m = cls(bias, dict(zip(FEATURES, w)), [0.0], [0.0], len(features))
        z = [m.raw(f) for f in features]
        m.knots_x, m.knots_y = pav(z, pass_rates)
        return m

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "logistic+isotonic", "bias": float(self.bias),
                "weights": {k: float(v) for k, v in self.weights.items()},
                "knots": [[float(x), float(y)] for x, y in zip(self.knots_x, self.knots_y)],
                "problems": self.problems}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DifficultyMap:
        knots = d.get("knots") or []
        if not knots:
            raise ValueError("difficulty map has no knots")
        xs, ys = [float(k[0]) for k in knots], [float(k[1]) for k in knots]
        if any(b < a for a, b in itertools.pairwise(xs)) or any(b < a for a, b in itertools.pairwise(ys)):
            raise ValueError("difficulty map knots must not decrease in x or y")
        return cls(float(d.get("bias", 0.0)), {k: float(v) for k, v in (d.get("weights") or {}).items()},
                   xs, ys, int(d.get("problems", 0)))


def estimate(features: dict[str, float], dmap: DifficultyMap | None) -> float:
    """Predicted pass@1 from probe features: the map's, or the raw score without a map."""
    return dmap.predict(features) if dmap is not None else features["score"]


# -- the probe ---------------------------------------------------------------------------------------


async def probe(ctx: SearchContext, k: int = 4, thresholds: dict[str, float] | None = None,
                dmap: DifficultyMap | None = None) -> Probe:
    if k < 1:
        raise ValueError(f"probe_samples must be at least 1, got {k}")
    [samples] = await ctx.expand([Node()], k, to_end=True)
    await ctx.score(samples)
    answers: dict[str, int] = {}
    for s in samples:
        if s.terminal and s.answer is not None:
            answers[s.answer] = answers.get(s.answer, 0) + 1
    pr = Probe(samples, predicted_pass_rate(samples), "", answers)
    pr.estimate = estimate(pr.features(), dmap)
    pr.bin = difficulty_bin(pr.estimate, thresholds)
    return pr


@dataclass
class ProbeConfig:
    n: int = 4  # samples

    def validate(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be at least 1, got {self.n!r}")


@register("probe", ProbeConfig)
async def probe_strategy(problem: Problem, ctx: SearchContext, cfg: ProbeConfig) -> SearchResult:
    """The difficulty probe on its own: the samples `auto` starts from, the PRM-weighted vote of
    them as the answer, and the raw features (`probe_score`, `probe_consensus`) in `meta`
    (what `ponder calibrate` fits its map on)."""
    pr = await probe(ctx, cfg.n)
    result = await conclude(ctx, "probe", pr.samples, aggregation="last", selection="prm_vote", trace=[])
    result.meta.update({"probe_score": pr.score, "probe_consensus": pr.consensus, "difficulty": pr.bin})
    return result

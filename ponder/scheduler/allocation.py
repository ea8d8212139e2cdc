"""The allocation table: difficulty bin -> (strategy, params, width, budget share).

Loaded from YAML (`scheduler.allocation_table`, written by `ponder calibrate`; the shipped
`default_allocation.yaml` otherwise).

A calibrated table carries, besides its bins, the difficulty map (probe features -> predicted
pass@1, see `difficulty.DifficultyMap`), the dev set's bin mix, and per bin the measured
accuracy-vs-cost curve of every candidate (strategy, width). For a per-query budget B it then
solves Snell et al.'s compute-optimal rule as a small optimisation (`optimise`):

    choose one point (s_b, n_b) per bin b  maximising  sum_b mix_b * acc_b(s_b, n_b)
    subject to                             sum_b mix_b * cost_b(s_b, n_b) <= B

(relaxed so that one bin may split its queries between two neighbouring points of its convex
hull, which makes the greedy walk over the hulls exact), and a
query of bin b runs s_b at width n_b with a grant of `headroom` x cost_b from the job's ledger
(what it does not spend goes back). A table without curves keeps the hand-written rule: each bin
has a default entry and optional `by_budget` entries; a query takes the entry whose budget is
nearest (on a log scale) to its own, among entries of the same kind (width `n=...` or tokens).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from ponder.config import Budget, ConfigError
from ponder.scheduler.difficulty import (
    BINS,
    DEFAULT_THRESHOLDS,
    DifficultyMap,
    difficulty_bin,
    estimate,
)

DEFAULT_TABLE = Path(__file__).with_name("default_allocation.yaml")


@dataclass
class Entry:
    strategy: str
    params: dict[str, Any] = field(default_factory=dict)
    budget: str | None = None  # the budget this entry was calibrated at (by_budget entries)


@dataclass
class BinPolicy:
    share: float
    default: Entry
    by_budget: list[Entry] = field(default_factory=list)

    def choose(self, budget: Budget | None) -> Entry:
        if budget is None or not self.by_budget:
            return self.default
        want = _budget_value(budget)
        same_kind = [(e, _budget_value(Budget.parse(e.budget))) for e in self.by_budget if e.budget]
        same_kind = [(e, v) for e, v in same_kind if v[0] == want[0] and v[1] is not None]
        if not same_kind or want[1] is None:
            return self.default
        return min(same_kind, key=lambda ev: abs(math.log(ev[1][1]) - math.log(want[1])))[0]


def _budget_value(b: Budget) -> tuple[str, float | None]:
    if b.n is not None:
        return "n", float(b.n)
    return "tokens", (None if math.isinf(b.tokens) else b.tokens)


def budget_size(b: Budget) -> float:
    """A budget's size in its own unit (width or tokens); unbounded is infinite."""
    size = _budget_value(b)[1]
    return math.inf if size is None else size


@dataclass(frozen=True)
class Point:
    """One measured point of a bin's accuracy-vs-cost curve: `strategy` at width `n` (with
    `params`) solved `accuracy` of the bin's dev problems at a mean `cost` per problem, as `auto`
    spends it (the probe included, its samples reused where the strategy reuses them)."""

    strategy: str
    n: int
    accuracy: float
    cost: float
    params: tuple[tuple[str, Any], ...] = ()
    peak: float = 0.0  # the most one dev problem spent at this point (0: not measured)

    def entry(self) -> Entry:
        return Entry(self.strategy, {**dict(self.params), "n": self.n})

    def to_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "n": self.n, "accuracy": round(self.accuracy, 4),
                "cost": round(self.cost, 1), **({"peak": round(self.peak, 1)} if self.peak else {}),
                **({"params": dict(self.params)} if self.params else {})}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Point:
        return cls(str(d["strategy"]), int(d["n"]), float(d["accuracy"]), float(d["cost"]),
                   tuple(sorted((d.get("params") or {}).items())), float(d.get("peak") or 0.0))


def pareto(points: list[Point]) -> list[Point]:
    """The points no other point beats: cheaper-or-equal and at least as accurate. Sorted by cost."""
    front: list[Point] = []
    for p in sorted(points, key=lambda p: (p.cost, -p.accuracy)):
        if not front or p.accuracy > front[-1].accuracy:
            front.append(p)
    return front


def hull(points: list[Point]) -> list[Point]:
    """The upper-left convex hull of a curve's Pareto front: the points worth buying when a
    bin may mix two neighbouring points (each next point's accuracy per extra cost is lower)."""
    out: list[Point] = []
    for p in pareto(points):
        while len(out) >= 2:
            a, b = out[-2], out[-1]
            # b lies on or under the chord a-p: drop it
            if (b.accuracy - a.accuracy) * (p.cost - a.cost) <= (p.accuracy - a.accuracy) * (b.cost - a.cost):
                out.pop()
            else:
                break
        out.append(p)
    return out


@dataclass
class Plan:
    """Per bin, one point, or two neighbouring hull points with the share `mix_up` of the bin's
    queries taking the dearer one (the LP optimum spends the budget to the last token)."""

    low: dict[str, Point]
    high: dict[str, Point] = field(default_factory=dict)
    mix_up: dict[str, float] = field(default_factory=dict)
    accuracy: float = 0.0  # expected, mix-weighted
    cost: float = 0.0
    hulls: dict[str, list[Point]] = field(default_factory=dict)  # per bin, what the plan walked

    def point(self, bin_name: str, u: float = 0.0) -> Point:
        """The bin's point for a query whose uniform draw is `u` in [0, 1)."""
        if bin_name in self.high and u < self.mix_up.get(bin_name, 0.0):
            return self.high[bin_name]
        return self.low[bin_name]

    def value(self, bin_name: str, point: Point) -> float:
        """What the compute of a query at `point` buys, per unit of cost, at the margin: the
        slope of the bin's hull segment that ends at the point (the last upgrade the plan paid
        for it). 0 at the bin's cheapest point (the plan bought it nothing above the minimum)."""
        h = self.hulls.get(bin_name, [])
        for lo, hi in zip(h, h[1:]):
            if hi == point:
                return max(0.0, (hi.accuracy - lo.accuracy) / max(hi.cost - lo.cost, 1e-9))
        return 0.0


def optimise(curves: dict[str, list[Point]], mix: dict[str, float], budget: float) -> Plan:
    """Snell et al.'s compute-optimal rule over difficulty bins, as the multiple-choice knapsack

        maximise sum_b mix_b * acc_b   subject to   sum_b mix_b * cost_b <= budget

    relaxed to allow a bin to split its queries between two points: its exact optimum is greedy
    on the bins' convex hulls (buy the upgrade with the most accuracy per unit of cost until
    the budget is spent; the last upgrade goes to a fraction of the bin's queries). When even
    the cheapest plan costs more than the budget, the cheapest plan."""
    names = [b for b in curves if curves[b]]
    hulls = {b: hull(curves[b]) for b in names}
    at = {b: 0 for b in names}
    cost = sum(mix.get(b, 0.0) * hulls[b][0].cost for b in names)
    plan = Plan({b: hulls[b][0] for b in names}, hulls=hulls)
    while True:
        ups = []
        for b in names:
            w = mix.get(b, 0.0)
            if at[b] + 1 < len(hulls[b]) and w > 0:
                lo, hi = hulls[b][at[b]], hulls[b][at[b] + 1]
                ups.append(((hi.accuracy - lo.accuracy) / max(hi.cost - lo.cost, 1e-9), b, w * (hi.cost - lo.cost)))
        if not ups:
            break
        _, b, extra = max(ups, key=lambda u: (u[0], u[1]))
        if cost + extra <= budget + 1e-9:
            at[b] += 1
            cost += extra
            plan.low[b] = hulls[b][at[b]]
            continue
        if budget > cost:  # the last, partial upgrade
            plan.high[b] = hulls[b][at[b] + 1]
            plan.mix_up[b] = (budget - cost) / extra
            cost = budget
        break
    plan.cost = cost
    for b in names:
        lo = plan.low[b].accuracy
        up = plan.mix_up.get(b, 0.0) * (plan.high[b].accuracy - lo) if b in plan.high else 0.0
        plan.accuracy += mix.get(b, 0.0) * (lo + up)
    return plan


class Choice(NamedTuple):
    entry: Entry
    share: float  # the spend the ledger holds for the query, x its fair share
    cap: float  # its limit, x its fair share
    value: float | None = None  # accuracy per unit of cost its compute buys (the scheduler's order)


@dataclass
class AllocationTable:
    bins: dict[str, BinPolicy]
    thresholds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    source: str = ""
    difficulty_map: DifficultyMap | None = None
    mix: dict[str, float] = field(default_factory=dict)  # dev share of problems per bin
    curves: dict[str, list[Point]] = field(default_factory=dict)
    probe_cost_per_sample: float = 0.0  # dev mean: turns a width budget n=N into cost N x this
    headroom: float = 2.0  # limit >= headroom x the chosen point's mean cost (what it does not spend goes back)

    def bin_of(self, score: float, consensus: float | None = None) -> str:
        """The bin of a probe: by the calibrated estimate when the table has a map (features raw
        score and consensus), else by the raw score itself."""
        return difficulty_bin(self.estimate(score, consensus), self.thresholds)

    def estimate(self, score: float, consensus: float | None = None) -> float:
        return estimate({"score": score, "consensus": consensus or 0.0}, self.difficulty_map)

    @property
    def optimised(self) -> bool:
        return bool(self.curves) and any(self.curves.values())

    def plan(self, budget: float) -> Plan:
        """The compute-optimal plan for a per-query budget (cost units); cached per budget,
        rounded to 2 significant digits."""
        key = float(f"{budget:.2g}") if budget > 0 and not math.isinf(budget) else budget
        cached = self._plans.get(key)
        if cached is None:
            cached = self._plans[key] = optimise(self.curves, self.mix, key)
        return cached

    def __post_init__(self) -> None:
        self._plans: dict[float, Plan] = {}

    def budget_cost(self, budget: Budget | None) -> float | None:
        """A query budget in cost units: tokens as they are, a width n as n probe-like samples."""
        if budget is None:
            return None
        if budget.n is not None:
            return budget.n * self.probe_cost_per_sample if self.probe_cost_per_sample > 0 else None
        return None if math.isinf(budget.tokens) else budget.tokens

    def choose(self, bin_name: str, budget: Budget | None = None, u: float = 0.0) -> Choice:
        """What a query of `bin_name` under `budget` runs, and the grant it asks for, as weights
        on its fair share of the ledger. Optimised tables: the plan's point for the bin (`u`, the
        query's uniform draw, picks between a split bin's two) with width n in its params; the
        share its mean cost / budget (what the ledger holds for it) and the cap the larger of
        headroom x that and its dev peak / budget (its limit: an adaptive search's spend varies
        by query, and cutting the dear ones short loses the answers the plan paid for); the
        value, the accuracy per cost of the point's last upgrade (`Plan.value`)."""
        cost = self.budget_cost(budget)
        if self.optimised and cost is not None and self.curves.get(bin_name):
            plan = self.plan(max(cost, 0.0))
            point = plan.point(bin_name, u)  # nothing left: the cheapest point
            value = plan.value(bin_name, point)
            if cost <= 0:
                return Choice(point.entry(), 1.0, 1.0, value)
            return Choice(point.entry(), point.cost / cost, max(self.headroom * point.cost, point.peak) / cost, value)
        policy = self.bins[bin_name]
        return Choice(policy.choose(budget), policy.share, policy.share)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"thresholds": dict(self.thresholds), "bins": {}}
        for name, p in self.bins.items():
            d: dict[str, Any] = {"share": p.share, "strategy": p.default.strategy, "params": dict(p.default.params)}
            if p.by_budget:
                d["by_budget"] = [{"budget": e.budget, "strategy": e.strategy, "params": dict(e.params)} for e in p.by_budget]
            out["bins"][name] = d
        if self.difficulty_map is not None:
            out["difficulty_map"] = self.difficulty_map.to_dict()
        if self.optimised:
            out["mix"] = {k: round(v, 4) for k, v in self.mix.items()}
            out["probe_cost_per_sample"] = round(self.probe_cost_per_sample, 2)
            out["headroom"] = self.headroom
            out["curves"] = {b: [p.to_dict() for p in pts] for b, pts in self.curves.items()}
        return out

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "") -> AllocationTable:
        where = source or "allocation table"
        if not isinstance(data, dict) or not isinstance(data.get("bins"), dict):
            raise ConfigError(f"{where}: needs a 'bins' mapping with {', '.join(BINS)}")
        missing = [b for b in BINS if b not in data["bins"]]
        if missing:
            raise ConfigError(f"{where}: bin '{missing[0]}' is missing")
        bins = {}
        for name in BINS:
            raw = data["bins"][name]
            if not isinstance(raw, dict) or "strategy" not in raw:
                raise ConfigError(f"{where}: bin '{name}' needs a 'strategy'")
            share = float(raw.get("share", 1.0))
            if share <= 0:
                raise ConfigError(f"{where}: bin '{name}' share must be positive, got {share}")
            by_budget = []
            for e in raw.get("by_budget") or []:
                try:
                    Budget.parse(e["budget"])
                    by_budget.append(Entry(e["strategy"], dict(e.get("params") or {}), str(e["budget"])))
                except (KeyError, TypeError, ConfigError) as err:
                    raise ConfigError(f"{where}: bad by_budget entry in bin '{name}': {err}") from None
            bins[name] = BinPolicy(share, Entry(raw["strategy"], dict(raw.get("params") or {})), by_budget)
        thresholds = {**DEFAULT_THRESHOLDS, **(data.get("thresholds") or {})}
        if not 0 <= thresholds["medium"] <= thresholds["easy"] <= 1:
            raise ConfigError(f"{where}: thresholds need 0 <= medium <= easy <= 1, got {thresholds}")
        dmap = None
        if data.get("difficulty_map") is not None:
            try:
                dmap = DifficultyMap.from_dict(data["difficulty_map"])
            except (KeyError, TypeError, ValueError) as err:
                raise ConfigError(f"{where}: bad difficulty_map: {err}") from None
        curves: dict[str, list[Point]] = {}
        for name, pts in (data.get("curves") or {}).items():
            if name not in BINS:
                raise ConfigError(f"{where}: curves for unknown bin {name!r}")
            try:
                curves[name] = [Point.from_dict(p) for p in pts or []]
            except (KeyError, TypeError, ValueError) as err:
                raise ConfigError(f"{where}: bad curve point in bin '{name}': {err}") from None
        mix = {k: float(v) for k, v in (data.get("mix") or {}).items()}
        return cls(bins, thresholds, source, dmap, mix, curves, float(data.get("probe_cost_per_sample") or 0.0),
                   float(data.get("headroom") or 2.0))

    @classmethod
    def load(cls, path: str | Path | None = None) -> AllocationTable:
        """The table in `path` (None: the shipped one), parsed once per file content: `auto`
        loads it for every query."""
        p = Path(path) if path else DEFAULT_TABLE
        if not p.is_file():
            raise ConfigError(f"allocation table not found: {p}")
        text = p.read_text()
        return _parse_cached(cls, text, str(p))

    @classmethod
    def parse(cls, text: str, source: str) -> AllocationTable:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"allocation table {source} is not valid YAML: {str(e).splitlines()[0]}") from None
        return cls.from_dict(data, source)


@functools.lru_cache(maxsize=32)
def _parse_cached(cls: type, text: str, source: str) -> AllocationTable:
    return cls.parse(text, source)

"""The allocation table: difficulty bin -> (strategy, params, budget share), by budget.

Loaded from YAML (`scheduler.allocation_table`, written by `ponder calibrate`; the shipped
`default_allocation.yaml` otherwise). Each bin has a default entry and optional `by_budget`
entries; a query takes the entry whose budget is nearest (on a log scale) to its own, among
entries of the same kind (width `n=...` or tokens).
"""

from __future__ import annotations

import functools

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ponder.config import Budget, ConfigError
from ponder.scheduler.difficulty import BINS, DEFAULT_THRESHOLDS, difficulty_bin

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


@dataclass
class AllocationTable:
    bins: dict[str, BinPolicy]
    thresholds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    source: str = ""

    def bin_of(self, score: float) -> str:
        return difficulty_bin(score, self.thresholds)

    def choose(self, bin_name: str, budget: Budget | None = None) -> tuple[Entry, float]:
        policy = self.bins[bin_name]
        return policy.choose(budget), policy.share

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"thresholds": dict(self.thresholds), "bins": {}}
        for name, p in self.bins.items():
            d: dict[str, Any] = {"share": p.share, "strategy": p.default.strategy, "params": dict(p.default.params)}
            if p.by_budget:
                d["by_budget"] = [{"budget": e.budget, "strategy": e.strategy, "params": dict(e.params)} for e in p.by_budget]
            out["bins"][name] = d
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
        return cls(bins, thresholds, source)

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

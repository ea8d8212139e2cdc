"""`JobSpec`: everything that defines an evaluation job, validated before anything runs, and
its plan: one `Item` per (problem, strategy, budget, config fingerprint)."""

from __future__ import annotations

import copy
import dataclasses
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from ponder.config import Budget, ConfigError, PonderConfig
from ponder.jobs.queue import Item
from ponder.jobs.records import one_line
from ponder.jobs.store import config_fingerprint
from ponder.search import registry
from ponder.search.types import Problem, problem_to_dict


class SpecError(ValueError):
    """A job spec that cannot run; the message is one line for the user."""


def new_job_id() -> str:
    # 128 random bits: job ids are capabilities on a shared store, so they must not be guessable.
    return secrets.token_hex(16)


def _one_line(e: BaseException) -> str:
    return one_line(str(e).strip() or type(e).__name__)


def load_strategies() -> None:
    # The scheduler registers strategies of its own (`auto`) when its runner is imported.
    import ponder.scheduler.runner  # noqa: F401


def resolve_strategies(names: list[str] | None, config: PonderConfig) -> list[registry.Strategy]:
    load_strategies()
    out = []
    for name in dict.fromkeys(names or [config.search.strategy]):
        try:
            out.append(registry.get(name))
        except registry.UnknownStrategy as e:
            raise SpecError(_one_line(e)) from None
    return out


def resolve_budgets(specs: list[str] | None, config: PonderConfig) -> list[Budget]:
    budgets: dict[str, Budget] = {}
    for spec in specs or [config.search.budget]:
        try:
            b = Budget.parse(spec)
        except ConfigError as e:
            raise SpecError(_one_line(e)) from None
        budgets.setdefault(b.label(), b)
    return list(budgets.values())


def strategy_params(
    strategies: list[registry.Strategy], budgets: list[Budget], config: PonderConfig
) -> dict[str, dict[str, Any]]:
    """`search.params` split per strategy: each takes the fields it has. A key no selected
    strategy knows is an error (a typo must not silently do nothing)."""
    params = config.search.params or {}
    if not isinstance(params, dict):
        raise SpecError("search.params must be a mapping of strategy parameters")
    fields = {s.name: {f.name for f in dataclasses.fields(s.config_cls)} for s in strategies}
    for key in params:
        if not any(key in f for f in fields.values()):
            raise SpecError(f"search.params.{key} is not a parameter of {', '.join(fields)}")
    out = {}
    for s in strategies:
        out[s.name] = {k: v for k, v in params.items() if k in fields[s.name]}
        for b in budgets:  # fail now, not in the middle of a run
            try:
                s.make_config(out[s.name], n=b.n)
            except (TypeError, ValueError) as e:
                raise SpecError(f"{s.name} with budget {b.label()}: {_one_line(e)}") from None
    return out


def runner_config(config: PonderConfig) -> PonderConfig:
    # Strategy params are passed per strategy (see strategy_params), never merged by the runner.
    cfg = copy.deepcopy(config)
    cfg.search.params = {}
    return cfg


@dataclass
class JobSpec:
    strategies: list[str]
    budgets: list[str]  # Budget labels
    params: dict[str, dict[str, Any]]  # per strategy
    config: dict[str, Any]  # PonderConfig.to_dict() of the engines and search settings
    fingerprints: dict[str, str]  # per strategy: the config part of each key
    dataset: str | None = None  # where the problems came from (a path, arith:N, hf:NAME), for records
    job_budget: float | None = None  # total cost across every key; None: per-query budgets only
    owner: str = ""
    name: str = ""
    max_attempts: int = 3  # a search that fails this often ends as an error record
    id: str = field(default_factory=new_job_id)
    created_at: float = field(default_factory=time.time)

    @classmethod
    def build(
        cls,
        config: PonderConfig,
        strategies: list[str] | None = None,
        budgets: list[str] | None = None,
        *,
        dataset: str | None = None,
        job_budget: float | str | None = None,
        owner: str = "",
        name: str = "",
        max_attempts: int = 3,
        job_id: str | None = None,
    ) -> JobSpec:
        """Validate strategies, budgets and parameters against `config` (one-line `SpecError`)."""
        strats = resolve_strategies(strategies, config)
        buds = resolve_budgets(budgets, config)
        params = strategy_params(strats, buds, config)
        if job_budget is None and config.scheduler.job_budget is not None:
            job_budget = config.scheduler.job_budget
        total = None
        if job_budget is not None:
            try:
                total = Budget.parse(job_budget).tokens
            except ConfigError as e:
                raise SpecError(f"job budget: {_one_line(e)}") from None
        if max_attempts < 1:
            raise SpecError(f"max_attempts must be at least 1, got {max_attempts}")
        fps = {s.name: config_fingerprint(config, s.name, params[s.name]) for s in strats}
        return cls(
            strategies=[s.name for s in strats],
            budgets=[b.label() for b in buds],
            params=params,
            config=runner_config(config).to_dict(),
            fingerprints=fps,
            dataset=dataset,
            job_budget=total,
            owner=owner,
            name=name,
            max_attempts=max_attempts,
            **({"id": job_id} if job_id else {}),
        )

    def ponder_config(self) -> PonderConfig:
        return PonderConfig.from_dict(self.config)

    def plan(self, problems: list[Problem]) -> list[Item]:
        """Every key of the job, as one queue: the pools stay busy across strategies."""
        seen: set[str] = set()
        for p in problems:
            if p.id in seen:  # ids key the results: duplicates would make resume skip problems
                raise SpecError(f"duplicate problem id {p.id!r}")
            seen.add(p.id)
        dicts = [problem_to_dict(p) for p in problems]
        items, i = [], 0
        for s in self.strategies:
            for b in self.budgets:
                for d in dicts:
                    items.append(Item(i, d, s, b, self.fingerprints[s]))
                    i += 1
        return items

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

"""Checks across sections that only a deployment needs, before anything is rendered: the
strategies and budgets it names (the Serve app's default, the RayJob's) and that the groups can
hold their replicas (in plan.py). Each failure is one ConfigError line."""

from __future__ import annotations

from ponder.config import Budget, ConfigError, PonderConfig
from ponder.search import registry

# Strategies the scheduler registers when its runner is imported (ponder/scheduler/auto.py,
# difficulty.py). The deploy room does not import the scheduler; tests/deploy checks this list
# against the registry once the scheduler is loaded.
SCHEDULER_STRATEGIES = ("auto", "probe")


def known_strategies() -> list[str]:
    return sorted(set(registry.names()) | set(SCHEDULER_STRATEGIES))


def check_strategy(name: object, where: str) -> None:
    known = known_strategies()
    if name not in known:
        raise ConfigError(f"{where}: unknown strategy {name!r} (known: {', '.join(known)})")


def check_budget(spec: object, where: str) -> None:
    if not isinstance(spec, (str, int, float)):
        raise ConfigError(f"{where}: a budget is a string such as n=16 or 8k, got {spec!r}")
    try:
        Budget.parse(spec)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def job_strategies(config: PonderConfig) -> list[str]:
    return list(config.deploy.job.strategies) or [config.search.strategy]


def job_budgets(config: PonderConfig) -> list[str]:
    return [str(b) for b in config.deploy.job.budgets] or [str(config.search.budget)]


def check(config: PonderConfig) -> None:
    check_strategy(config.search.strategy, "search.strategy")
    check_budget(config.search.budget, "search.budget")
    for name in config.deploy.job.strategies:
        check_strategy(name, "deploy.job.strategies")
    for spec in config.deploy.job.budgets:
        check_budget(spec, "deploy.job.budgets")
    spec = config.deploy.job.job_budget
    if spec is not None:
        try:
            ok = isinstance(spec, (str, int, float)) and Budget.parse(spec).n is None
        except ConfigError:
            ok = False
        if not ok:
            raise ConfigError(f"deploy.job.job_budget must be a token count such as 2m, got {spec!r}")
    for role in ("policy", "reward"):
        if getattr(config, role).kind == "sim":
            raise ConfigError(f"{role}.kind is sim, a simulator for tests: a deployment needs real engines "
                              "(hf, vllm or openai)")

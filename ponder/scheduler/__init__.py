"""Runs searches: the search context over engines or pools, batching, budgets, allocation."""

from __future__ import annotations

from typing import Any

from ponder.config import PonderConfig
from ponder.scheduler import auto as _auto  # noqa: F401  (registers strategy "auto" with the registry)


def make_runner(config: PonderConfig) -> Any:
    """A runner for `config`: a Ray scheduler (`cluster.address` "local" or a Ray address) or
    in-process engines (`cluster.address` "inprocess" or null).

    Every runner has `async solve(problem, strategy, budget, params)` and
    `async run(problems, strategy, budget, params)` yielding (problem, result) as they finish.
    Over Ray it is a `RemoteRunner`, a client of a `SchedulerActor` that hosts the same runner
    over replica pools.
    """
    if config.cluster.uses_ray:
        if config.cluster.scheduler_shards > 1:
            from ponder.scheduler.shards import ShardedRunner

            return ShardedRunner.start(config)
        from ponder.scheduler.scheduler import RemoteRunner

        return RemoteRunner.start(config)

    from ponder.actors.factory import build_policy, build_reward
    from ponder.scheduler.runner import Runner

    return Runner(build_policy(config.policy), build_reward(config.reward), config)


"""`SearchContext`: the only door between a search algorithm and the outside world.

Algorithms call `expand` (policy: next step per child), `score` (PRM: one reward per step),
read `budget` and check `should_stop()`. They never batch, retry or route: the implementation
(`ponder.scheduler.context.EngineContext`) does, across all live trees.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from ponder.search.types import Candidate, Compute, Node, Problem, SearchResult


class SearchContext(ABC):
    problem: Problem
    rng: random.Random  # seeded per problem: algorithms draw all their randomness from it
    spent: Compute
    temperature: float = 0.8  # the sampling temperature `expand` uses when given none

    @abstractmethod
    async def expand(
        self,
        nodes: Sequence[Node],
        n: int = 1,
        *,
        temperature: float | None = None,
        to_end: bool = False,
    ) -> list[list[Node]]:
        """Sample `n` continuations of each node.

        Returns, for each input node, its new children: each child is the next reasoning step
        (ending at the step delimiter or the end of the solution), or with `to_end=True` the
        last node of a chain of steps running to the end of the solution. A terminal node, and
        every node once the budget is spent, gets an empty list: algorithms treat that as "no
        more work here", never as an error.
        """

    @abstractmethod
    async def score(self, nodes: Sequence[Node]) -> list[list[float]]:
        """PRM rewards, one per step on each node's path; also stored in `node.rewards`.

        Nodes already scored are not scored again. Scoring goes on after the budget is spent
        (the nodes exist and the search needs their scores to choose), so a search overspends
        by at most its last expansion and the scoring of it (for MCTS, its `parallel`
        expansions in flight, which the scheduler sends as one batch).
        """

    @property
    @abstractmethod
    def budget(self) -> float:
        """Cost (tokens) left to this search; `math.inf` when only widths bound it."""

    @abstractmethod
    def should_stop(self) -> bool:
        """True when the budget is spent or the scheduler asks this search to end early."""

    async def regrant(self, weight: float, cap: float | None = None, value: float | None = None) -> float | None:
        """Ask the runtime for `weight` x this search's fair share of a shared budget (a job's
        ledger) as the spend it expects, and `cap` x it (default: `weight`) as its limit;
        returns the new limit, or None when no shared budget applies. `value`: the accuracy
        this search's compute is expected to buy per unit of cost; among job work the runtime
        serves the expansions of higher-value searches first. It may wait for the grants of
        searches that came before (so that grants do not depend on timing)."""
        return None

    # Shared helpers every algorithm uses to build its result.

    def result(
        self,
        strategy: str,
        chosen: Candidate | None,
        candidates: list[Candidate],
        *,
        stop_reason: str | None = None,
        trace: list[dict[str, Any]] | None = None,
    ) -> SearchResult:
        if stop_reason is None:
            if chosen is None or chosen.answer is None:
                stop_reason = "no_answer"
            elif self.should_stop():  # the budget ran out, or what is left cannot pay for a step
                stop_reason = "budget"
            else:
                stop_reason = "done"
        return SearchResult(
            problem_id=self.problem.id,
            strategy=strategy,
            answer=chosen.answer if chosen else None,
            trajectory=list(chosen.steps) if chosen else [],
            candidates=candidates,
            compute=Compute(**vars(self.spent)),
            stop_reason=stop_reason,
            trace=trace or [],
        )

    def budget_left_fraction(self, total: float) -> float:
        if math.isinf(self.budget) or total <= 0:
            return 1.0
        return max(0.0, self.budget / total)

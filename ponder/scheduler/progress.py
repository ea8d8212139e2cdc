"""What a running search has done so far, as the scheduler sees it through the door.

The context updates it after every expansion and every scoring call, so streaming clients see
depth, expansions, tokens and the best answer found so far without the algorithm reporting
anything. "Best so far" is the finished trajectory with the highest last-step PRM reward (the
`last` aggregation); the algorithm's own final choice may differ (majority vote, another
aggregation), and the result says which it chose.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ponder.search.types import Candidate, Compute, Node


@dataclass
class SearchProgress:
    limit: float = math.inf  # the grant, in cost units
    expansions: int = 0  # expand calls that reached the engine
    generations: int = 0
    depth: int = 0  # deepest step reached
    finished: int = 0  # terminal trajectories seen
    best: Node | None = None
    best_score: float | None = None
    spent: Compute = field(default_factory=Compute)
    seq: int = 0  # bumped on every update: events are ordered by it
    listener: Callable[[dict[str, Any]], None] | None = None

    def on_expand(self, children: Sequence[Sequence[Node]], generations: int, spent: Compute) -> None:
        self.expansions += 1
        self.generations += generations
        for kids in children:
            for node in kids:
                self.depth = max(self.depth, node.depth)
                if node.terminal:
                    self.finished += 1
        self.spent = spent
        self._emit()

    def on_score(self, nodes: Sequence[Node], spent: Compute) -> None:
        for node in nodes:
            if node.terminal and node.answer is not None and node.reward is not None:
                if self.best_score is None or node.reward > self.best_score:
                    self.best, self.best_score = node, float(node.reward)
        self.spent = spent
        self._emit()

    def best_candidate(self) -> Candidate | None:
        return Candidate.from_node(self.best, self.best_score or 0.0) if self.best is not None else None

    def snapshot(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "depth": self.depth,
            "expansions": self.expansions,
            "generations": self.generations,
            "finished": self.finished,
            "best_answer": self.best.answer if self.best is not None else None,
            "best_score": self.best_score,
            "tokens": {"policy": self.spent.policy_tokens, "prm": self.spent.prm_tokens, "cost": self.spent.cost},
            "budget": None if math.isinf(self.limit) else self.limit,
        }

    def _emit(self) -> None:
        self.seq += 1
        if self.listener is not None:
            self.listener(self.snapshot())

"""The data model shared by every room: problems, step nodes, compute and results.

Everything a search returns is plain data (msgpack round-trips it); `Node` is the one live
object, a step in a search tree with a parent pointer.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any

import msgpack

STEP_DELIMITER = "\n\n"


@dataclass
class Problem:
    """One question. `answer` is the reference (None when unknown, e.g. online serving)."""

    id: str
    problem: str
    answer: str | None = None
    level: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


_node_ids = itertools.count(1)


@dataclass(eq=False)
class Node:
    """A reasoning step in a search tree. The root has no text and depth 0.

    `rewards` holds the PRM's reward for every step on the path root..self (one per step), set
    by `SearchContext.score`. `answer` is the extracted final answer of a terminal step.
    """

    text: str = ""
    tokens: int = 0
    parent: Node | None = None
    terminal: bool = False
    answer: str | None = None
    rewards: list[float] | None = None
    depth: int = 0
    id: int = field(default_factory=lambda: next(_node_ids))
    # Identity by place in the tree, for seeding: `index` is this node's sample index among its
    # parent's draws (0 for the later steps of a to_end chain); `key` is derived from the
    # parent's key and `index` by the context when the node is first expanded (a root's from
    # the order the search hands its roots over). `drawn` counts the samples drawn from it.
    index: int = 0
    key: int | None = None
    drawn: int = 0
    prm_tokens: int | None = None  # the PRM's sequence length for this path, once scored
    # Free slots for algorithms (MCTS statistics, particle weights, ...).
    meta: dict[str, Any] = field(default_factory=dict)
    # The path's step texts, built once from the parent's (every request sends them; walking
    # the path each time was the scheduler's busiest loop).
    _texts: tuple[str, ...] | None = field(default=None, repr=False, compare=False)

    def child(self, text: str, tokens: int, terminal: bool = False, answer: str | None = None,
              index: int = 0) -> Node:
        return Node(text=text, tokens=tokens, parent=self, terminal=terminal, answer=answer, depth=self.depth + 1,
                    index=index)

    def path(self) -> list[Node]:
        """Nodes from the first step to self (the root excluded)."""
        out: list[Node] = []
        node: Node | None = self
        while node is not None and node.parent is not None:
            out.append(node)
            node = node.parent
        out.reverse()
        return out

    def steps(self) -> list[str]:
        return list(self._path_texts())

    def _path_texts(self) -> tuple[str, ...]:
        if self._texts is None:
            self._texts = () if self.parent is None else (*self.parent._path_texts(), self.text)
        return self._texts

    @property
    def reward(self) -> float | None:
        """The PRM reward of this step (the last on its path), or None if unscored."""
        return self.rewards[-1] if self.rewards else None

    @property
    def is_root(self) -> bool:
        return self.parent is None

    def root(self) -> Node:
        node = self
        while node.parent is not None:
            node = node.parent
        return node

    def __repr__(self) -> str:  # short: trees are big
        return f"Node(id={self.id}, depth={self.depth}, terminal={self.terminal}, answer={self.answer!r}, text={self.text[:30]!r})"


@dataclass
class Compute:
    """Compute spent, in the one unit used everywhere: tokens.

    Engines report how long each prompt was; what counts as reused is the search's own prefix:
    a policy prompt whose path this search already computed (every node but the first sampling
    of the problem: its steps' KV states were made when it was generated), and the PRM tokens of
    the nearest ancestor this search already scored. That is what a prefix cache holding the
    tree reuses (vLLM's, with the pool's tree affinity), and it depends on the search alone, not
    on which replica a request met or what else was cached, so budgets stay independent of
    timing. What the engines actually reused is kept beside it (`engine_cached_tokens`). A
    reused token costs `cache_discount` of a computed one (0 by default, as a prefix-cache hit):

        cost = policy_tokens + (policy_prompt_tokens - policy_cached_tokens)
               + cache_discount * policy_cached_tokens
               + prm_cost_ratio * ((prm_tokens - prm_cached_tokens) + cache_discount * prm_cached_tokens)

    `raw_cost` is the same with no cache at all (every token computed). Budgets are in `cost`.
    """

    policy_tokens: int = 0  # generated (decode)
    prm_tokens: int = 0  # read by the PRM, cached or not
    generations: int = 0  # policy calls (one per sampled step or completion)
    score_calls: int = 0  # PRM calls (one per scored trajectory prefix)
    cost: float = 0.0
    policy_prompt_tokens: int = 0  # prompt tokens the policy was conditioned on, cached or not
    policy_cached_tokens: int = 0  # of those, reused from a prefix cache
    prm_cached_tokens: int = 0  # of prm_tokens, reused from a prefix cache
    raw_cost: float = 0.0
    engine_cached_tokens: int = 0  # prompt tokens the engines themselves reported reusing (telemetry)

    def add(self, other: Compute) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    @classmethod
    def charge(cls, *, policy_tokens: int = 0, policy_prompt_tokens: int = 0, policy_cached_tokens: int = 0,
               prm_tokens: int = 0, prm_cached_tokens: int = 0, generations: int = 0, score_calls: int = 0,
               engine_cached_tokens: int = 0, prm_cost_ratio: float = 1.0, cache_discount: float = 0.0) -> Compute:
        """One engine call's compute under the documented cost rule."""
        policy = policy_tokens + (policy_prompt_tokens - policy_cached_tokens) + cache_discount * policy_cached_tokens
        prm = (prm_tokens - prm_cached_tokens) + cache_discount * prm_cached_tokens
        return cls(
            policy_tokens=policy_tokens, prm_tokens=prm_tokens, generations=generations, score_calls=score_calls,
            cost=policy + prm_cost_ratio * prm,
            policy_prompt_tokens=policy_prompt_tokens, policy_cached_tokens=policy_cached_tokens,
            prm_cached_tokens=prm_cached_tokens, engine_cached_tokens=engine_cached_tokens,
            raw_cost=policy_tokens + policy_prompt_tokens + prm_cost_ratio * prm_tokens,
        )


@dataclass
class Candidate:
    """A finished (or, only when nothing finished, the best partial) trajectory."""

    steps: list[str]
    rewards: list[float]
    score: float  # aggregated PRM score (last/min/avg/prod)
    answer: str | None
    tokens: int
    terminal: bool = True

    @classmethod
    def from_node(cls, node: Node, score: float) -> Candidate:
        return cls(
            steps=node.steps(),
            rewards=list(node.rewards or []),
            score=float(score),
            answer=node.answer,
            tokens=sum(n.tokens for n in node.path()),
            terminal=node.terminal,
        )


@dataclass
class SearchResult:
    """What every algorithm returns. `answer` is None when the search found none."""

    problem_id: str
    strategy: str
    answer: str | None
    trajectory: list[str]
    candidates: list[Candidate] = field(default_factory=list)
    compute: Compute = field(default_factory=Compute)
    wall_time: float = 0.0
    stop_reason: str = "done"  # done | budget | early_stop | no_answer | error
    trace: list[dict[str, Any]] = field(default_factory=list)  # per-iteration stats
    correct: bool | None = None  # filled in by grading when a reference answer exists
    meta: dict[str, Any] = field(default_factory=dict)  # difficulty bin, grant, config fingerprint...

    def to_dict(self) -> dict[str, Any]:
        # By hand: `dataclasses.asdict` was 4% of the scheduler actor's CPU (it deep-copies).
        d = _plain(vars(self))
        d["candidates"] = [_plain(vars(c)) for c in self.candidates]
        d["compute"] = dict(vars(self.compute))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchResult:
        d = dict(d)
        d["candidates"] = [Candidate(**c) for c in d.get("candidates", [])]
        d["compute"] = Compute(**d.get("compute", {}))
        return cls(**d)

    def to_msgpack(self) -> bytes:
        return msgpack.packb(self.to_dict(), use_bin_type=True)

    @classmethod
    def from_msgpack(cls, data: bytes) -> SearchResult:
        return cls.from_dict(msgpack.unpackb(data, raw=False))


def _plain(x: Any) -> Any:
    """A copy of nested dicts and lists (what results hold), leaving leaves shared."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def problem_to_dict(p: Problem) -> dict[str, Any]:
    return asdict(p)


def problem_from_dict(d: dict[str, Any]) -> Problem:
    return Problem(**d)

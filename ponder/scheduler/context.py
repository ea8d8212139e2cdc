"""`EngineContext`: the one implementation of `SearchContext`, over any policy/reward engine.

The engines it gets are batching fronts (`BatchedPolicy`/`BatchedReward`) over an in-process
engine or a Ray replica pool, so many contexts' requests share engine calls. It turns engine
output into tree nodes, extracts answers, and keeps the books: tokens, generations and cost
against the search's grant.
"""

from __future__ import annotations

import hashlib
import math
import random
import zlib
from collections.abc import Callable, Sequence
from typing import Any

from ponder.actors.engine import PolicyEngine, RewardEngine, ScoreRequest, StepRequest
from ponder.scheduler.batcher import JOB_WORK, BatchedPolicy, BatchedReward, Priority, SearchCancelled
from ponder.scheduler.progress import SearchProgress
from ponder.search.context import SearchContext
from ponder.search.types import Compute, Node, Problem
from ponder.tasks.grading import extract_answer


class EngineContext(SearchContext):
    def __init__(
        self,
        problem: Problem,
        policy: PolicyEngine,
        reward: RewardEngine,
        *,
        limit: float = math.inf,
        prm_cost_ratio: float = 1.0,
        cache_discount: float = 0.0,
        temperature: float = 0.8,
        top_p: float = 1.0,
        max_step_tokens: int = 48,
        max_steps: int = 16,
        seed: int = 0,
        answer_fn: Callable[[str], str | None] = extract_answer,
        on_spend: Callable[[float], None] | None = None,
        priority: Priority = JOB_WORK,
    ):
        self.problem = problem
        self.policy = policy
        self.reward = reward
        self.limit = limit  # the grant; the scheduler may raise or lower it while the search runs
        self.prm_cost_ratio = prm_cost_ratio
        self.cache_discount = cache_discount
        self.temperature = temperature
        self.top_p = top_p
        self.max_step_tokens = max_step_tokens
        self.max_steps = max_steps
        self.answer_fn = answer_fn
        self.on_spend = on_spend
        self.spent = Compute()
        self.cancelled = False
        self.unaffordable = False  # the next expansion was refused: the grant could not pay for it
        self.stopped: str | None = None  # the scheduler ended the search early ("deadline")
        self.priority = priority  # of its engine requests in the batchers' queues
        self.progress = SearchProgress(limit)
        self.account: Any = None  # a ledger account (`Account.attach`), when a job budget is shared
        self._seed = zlib.crc32(f"{seed}:{problem.id}".encode())
        self._roots = 0  # roots keyed so far, in the order the search handed them over
        self._prefilled = False  # the problem's prompt has been computed once for this search
        self.rng = random.Random(self._seed)
        self.affinity = f"{problem.id}:{self._seed}"

    @property
    def budget(self) -> float:
        return self.limit - self.spent.cost

    def should_stop(self) -> bool:
        return self.cancelled or self.unaffordable or self.stopped is not None or self.budget <= 0

    async def regrant(self, weight: float, cap: float | None = None, value: float | None = None) -> float | None:
        if value is not None and self.priority[0] >= 1:  # job work: more value goes first
            self.priority = (self.priority[0], -float(value))
        if self.account is None:
            return None
        return await self.account.request(weight, cap)

    def stop(self, reason: str) -> None:
        """End the search at its next expansion: it returns the best it has (a deadline)."""
        self.stopped = reason

    def _alive(self) -> bool:
        return not self.cancelled

    def _affordable(self, samples: int) -> bool:
        """Do not start what the grant cannot pay for: after the first expansion, one whose
        expected cost (samples x this search's own mean cost per sample so far, its scoring
        included) is more than what is left is refused, as if the budget were spent. Without
        this every search overspends its grant by a round, and a job of many small grants its
        total by a third (measured). The estimate is the search's own history, so the decision
        does not depend on timing or on other searches."""
        if math.isinf(self.budget) or not self.spent.generations:
            return True
        per_sample = self.spent.cost / self.spent.generations
        if samples * per_sample <= self.budget:
            return True
        self.unaffordable = True
        return False

    def _key(self, node: Node) -> int:
        """A node's key, derived when it is first expanded (most sampled nodes never are)."""
        if node.key is None:
            if node.parent is None:  # a root: keyed by the order the search first hands its roots over
                self._roots += 1
                node.key = _mix(self._seed, "root", self._roots)
            else:
                node.key = _mix(self._key(node.parent), node.index)
        return node.key

    def _charge(self, **counts: int) -> None:
        spent = Compute.charge(**counts, prm_cost_ratio=self.prm_cost_ratio, cache_discount=self.cache_discount)
        self.spent.add(spent)
        self.progress.limit = self.limit  # the ledger may have moved the grant
        if self.on_spend is not None:
            self.on_spend(spent.cost)

    async def expand(
        self,
        nodes: Sequence[Node],
        n: int = 1,
        *,
        temperature: float | None = None,
        to_end: bool = False,
    ) -> list[list[Node]]:
        out: list[list[Node]] = [[] for _ in nodes]
        if self.should_stop() or n <= 0:
            return out
        live = [(i, node) for i, node in enumerate(nodes) if not node.terminal]
        if not live or not self._affordable(len(live) * n):
            return out
        temp = self.temperature if temperature is None else temperature
        # Each request's seed is its parent's place in the tree and the index of its first sample
        # there, so the samples do not depend on the order of calls, batching or latency.
        # A node listed twice (particles resampled onto one node) draws fresh samples each time.
        first = []
        for _, parent in live:
            first.append(parent.drawn)
            parent.drawn += n
        requests = [
            StepRequest(
                problem=self.problem.problem,
                steps=node.steps(),
                n=n,
                temperature=temp,
                top_p=self.top_p,
                max_step_tokens=self.max_step_tokens,
                to_end=to_end,
                max_steps=max(1, self.max_steps - node.depth),
                seed=_mix(self._key(node), first_sample) % (2**31),
                affinity=self.affinity,
            )
            for (_, node), first_sample in zip(live, first)
        ]
        try:
            results = await (self.policy.generate(requests, self.priority, self._alive)
                             if isinstance(self.policy, BatchedPolicy) else self.policy.generate(requests))
        except SearchCancelled:
            return out
        tokens = generations = prompt = uncached = engine_cached = 0
        for (i, parent), samples, first_sample in zip(live, results, first):
            for k, steps in enumerate(samples):
                node = parent
                for j, step in enumerate(steps):
                    node = node.child(step.text, step.tokens, index=first_sample + k if j == 0 else 0)
                    tokens += step.tokens
                    prompt += step.prompt_tokens
                    engine_cached += step.cached_tokens
                    if not self._prefilled:  # the search's first prompt: the problem, computed once
                        uncached += step.prompt_tokens
                        self._prefilled = step.prompt_tokens > 0
                    if step.finished or node.depth >= self.max_steps:
                        node.terminal = True
                        node.answer = self.answer_fn(step.text) if step.finished else None
                        break
                generations += 1
                if node is not parent:
                    out[i].append(node)
        self._charge(policy_tokens=tokens, policy_prompt_tokens=prompt, policy_cached_tokens=prompt - uncached,
                     engine_cached_tokens=engine_cached, generations=generations)
        self.progress.on_expand(out, generations, self.spent)
        return out

    async def score(self, nodes: Sequence[Node]) -> list[list[float]]:
        # Scoring is allowed after the budget runs out (only cancellation refuses it): the nodes
        # exist already, and the search needs their scores to pick its answer. The overspend is
        # bounded by the last expansion.
        todo = [node for node in nodes if node.rewards is None and not node.is_root]
        if todo and not self.cancelled:
            requests = [ScoreRequest(self.problem.problem, node.steps(), self.affinity) for node in todo]
            try:
                results = await (self.reward.score(requests, self.priority, self._alive)
                                 if isinstance(self.reward, BatchedReward) else self.reward.score(requests))
            except SearchCancelled:
                results = []
            reused = 0
            for node, res in zip(todo, results):
                reused += min(res.tokens, _scored_prefix(node))
                node.rewards = list(res.rewards)
                node.prm_tokens = res.tokens
                if res.prefix_tokens:
                    _score_prefixes(node, res.rewards, res.prefix_tokens)
            if results:
                self._charge(prm_tokens=sum(r.tokens for r in results), prm_cached_tokens=reused,
                             engine_cached_tokens=sum(r.cached_tokens for r in results), score_calls=len(results))
                self.progress.on_score(todo, self.spent)
        return [list(node.rewards or []) for node in nodes]


def _mix(*parts: object) -> int:
    """A 63-bit hash of `parts` (stable across processes, unlike `hash`)."""
    return int.from_bytes(hashlib.blake2b(repr(parts).encode(), digest_size=8).digest(), "little") >> 1


def _score_prefixes(node: Node, rewards: Sequence[float], prefix_tokens: Sequence[int]) -> None:
    """A causal PRM's read of a path is also its read of every prefix: the unscored steps above
    `node` (a to_end chain's) take their rewards and lengths from it, at no cost, so a search
    that later meets them (the probe's chains, replayed) does not score them again."""
    parent = node.parent
    while parent is not None and not parent.is_root and parent.rewards is None:
        parent.rewards = list(rewards[: parent.depth])
        parent.prm_tokens = prefix_tokens[parent.depth - 1]
        parent = parent.parent


def _scored_prefix(node: Node) -> int:
    """PRM tokens of the nearest ancestor this search has scored: the prefix a cache holds."""
    parent = node.parent
    while parent is not None and parent.prm_tokens is None:
        parent = parent.parent
    return parent.prm_tokens if parent is not None else 0

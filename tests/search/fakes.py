"""Deterministic fake engines over the arithmetic task, for algorithm tests on the real
`EngineContext` (so budgets and bookkeeping are the real ones).

`FakePolicy` writes the right next step with probability `p_correct`, else the same operation
with a wrong result (which may end the solution early); its randomness is keyed by (request
seed, sample index, step index), or by the prefix alone at temperature 0, so results never
depend on batching or timing. `FakePRM` returns the exact prefix labels (`hi`/`lo`) with
optional per-prefix noise. Both can sleep a random time per call so concurrent requests
interleave.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import zlib
from dataclasses import dataclass, field

from ponder.actors.engine import EngineInfo, GeneratedStep, ScoreRequest, ScoreResult, StepRequest
from ponder.scheduler.context import EngineContext
from ponder.search.types import Problem
from ponder.tasks.arith.problems import apply, format_answer, format_step, generate, parse, parse_step, prefix_labels


def keyed_rng(*key: object) -> random.Random:
    return random.Random(zlib.crc32(repr(key).encode()))


def tokens_of(text: str) -> int:
    return len(text.split())


@dataclass
class FakePolicy:
    p_correct: float = 0.7
    p_early_answer: float = 0.0  # chance a wrong step also gives up with its (wrong) result boxed
    delay: tuple[float, float] | None = None  # seconds, uniform per call
    delay_seed: int = 0
    requests: list[StepRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._delay_rng = random.Random(self.delay_seed)

    def info(self) -> EngineInfo:
        return EngineInfo(kind="fake-policy")

    async def generate(self, requests: list[StepRequest]) -> list[list[list[GeneratedStep]]]:
        self.requests += requests
        if self.delay:
            await asyncio.sleep(self._delay_rng.uniform(*self.delay))
        return [[self.continuation(req, i) for i in range(req.n)] for req in requests]

    def continuation(self, req: StepRequest, sample: int) -> list[GeneratedStep]:
        steps, out = list(req.steps), []
        for _ in range(req.max_steps if req.to_end else 1):
            step = self.step(req, sample, steps)
            out.append(step)
            steps.append(step.text)
            if step.finished:
                break
        return out

    def step(self, req: StepRequest, sample: int, steps: list[str]) -> GeneratedStep:
        chain = parse(req.problem)
        i = min(len(steps), len(chain.ops) - 1)
        prev = chain.start
        if steps:
            parsed, _ = parse_step(steps[-1])
            prev = parsed[3] if parsed else prev
        greedy = req.temperature == 0
        rng = keyed_rng(req.problem, tuple(steps)) if greedy else keyed_rng(req.seed, sample, len(steps))
        op, b = chain.ops[i]
        c = apply(op, prev, b)
        last = i == len(chain.ops) - 1
        if rng.random() >= self.p_correct:
            c += rng.choice([-1, 1]) * rng.randint(1, 9)
            last = last or rng.random() < self.p_early_answer
        text = format_step(prev, op, b, c)
        if last:
            text += "\n" + format_answer(c)
        return GeneratedStep(text=text, tokens=tokens_of(text), finished=last)


@dataclass
class FakePRM:
    hi: float = 0.9
    lo: float = 0.1
    noise: float = 0.0  # uniform jitter of this amplitude, fixed per prefix
    delay: tuple[float, float] | None = None
    delay_seed: int = 1
    calls: int = 0

    def __post_init__(self) -> None:
        self._delay_rng = random.Random(self.delay_seed)

    def info(self) -> EngineInfo:
        return EngineInfo(kind="fake-prm")

    async def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        self.calls += len(requests)
        if self.delay:
            await asyncio.sleep(self._delay_rng.uniform(*self.delay))
        return [self.score_one(r) for r in requests]

    def score_one(self, req: ScoreRequest) -> ScoreResult:
        rewards = self.score_one_steps(req.problem, req.steps)
        prefix = list(itertools.accumulate(tokens_of(s) for s in req.steps))  # causal: prefixes read alike
        return ScoreResult(rewards=rewards, tokens=prefix[-1] if prefix else 0, prefix_tokens=prefix)

    def score_one_steps(self, problem: str, steps: list[str]) -> list[float]:
        rewards = []
        for i, ok in enumerate(prefix_labels(problem, steps)):
            r = self.hi if ok else self.lo
            if self.noise:
                r += self.noise * keyed_rng(problem, tuple(steps[: i + 1])).uniform(-1, 1)
            rewards.append(min(1.0, max(0.0, r)))
        return rewards


def problems(n: int = 5, level: int = 2, seed: int = 7) -> list[Problem]:
    return generate(n, seed=seed, levels=(level,))


def make_ctx(
    problem: Problem,
    policy: FakePolicy | None = None,
    reward: FakePRM | None = None,
    *,
    limit: float = math.inf,
    seed: int = 0,
    max_steps: int = 16,
) -> EngineContext:
    return EngineContext(
        problem, policy or FakePolicy(), reward or FakePRM(), limit=limit, seed=seed, max_steps=max_steps
    )


class SpyContext(EngineContext):
    """The real context, also recording every expand call as (nodes, n, children) and the most
    expand calls in flight at once."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.calls: list[tuple[list, int, list]] = []
        self.cost_at_call: list[float] = []  # cost spent when each expand call started
        self.in_flight = self.max_in_flight = 0

    async def expand(self, nodes, n=1, **kw):
        self.cost_at_call.append(self.spent.cost)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            out = await super().expand(nodes, n, **kw)
        finally:
            self.in_flight -= 1
        self.calls.append((list(nodes), n, out))
        return out

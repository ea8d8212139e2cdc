"""The two engine protocols: a policy that writes reasoning steps and a PRM that scores them.

Engines take whole batches (the scheduler batches requests from many trees) and are async, so
one protocol covers in-process transformers, vLLM's async engine, an OpenAI-compatible server
and the simulator.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ponder.search.types import STEP_DELIMITER


class EngineUnavailable(RuntimeError):
    """No engine can take the call at all (a pool with no live replica): every request of a
    batch would fail alike, so a batcher must not split the batch to find a culprit."""


@dataclass
class StepRequest:
    """Sample `n` continuations of a partial solution `steps` to `problem`."""

    problem: str
    steps: list[str]
    n: int = 1
    temperature: float = 0.8
    top_p: float = 1.0
    max_step_tokens: int = 256  # per step
    to_end: bool = False  # run on to the end of the solution (split into steps) instead of one step
    max_steps: int = 32  # with to_end: at most this many steps per continuation
    seed: int | None = None  # per-request seed: results do not depend on batch composition
    affinity: str | None = None  # routing key (tree id) so a tree's prefix stays in one replica's cache
    delimiter: str = STEP_DELIMITER


@dataclass
class GeneratedStep:
    text: str  # the step without the delimiter
    tokens: int  # policy tokens generated for it
    finished: bool  # the solution ended here (end of sequence or final answer given)
    # Prefill accounting (see `Compute`): the context this step was generated from (problem and
    # earlier steps, as the engine tokenises it) and how much of it the engine reused from a
    # prefix cache instead of computing, as the engine itself counts it (hf and sim: the n
    # samples of one request share one prefill, so samples after the first report their whole
    # prompt; vLLM recomputes each sample's partial last block and says so). Telemetry: the
    # cost rule (`Compute`) charges the search's own prefix, not these. Engines that cannot tell
    # report 0 for both (the prompt is then not charged at all).
    prompt_tokens: int = 0
    cached_tokens: int = 0


@dataclass
class ScoreRequest:
    problem: str
    steps: list[str]
    affinity: str | None = None


@dataclass
class ScoreResult:
    rewards: list[float]  # one per step, in [0, 1]: P(solution still correct after this step)
    tokens: int  # PRM tokens the request covers (the whole sequence read)
    cached_tokens: int = 0  # of `tokens`, the prefix reused from the engine's cache (not computed)
    # PRM tokens through each step, from engines whose PRM is causal (a step's reward reads only
    # the path up to that step): the path cut after step k would score rewards[:k+1] over
    # prefix_tokens[k] tokens, so one scored path scores its prefixes too. None: not known.
    prefix_tokens: list[int] | None = None


@dataclass
class EngineInfo:
    kind: str
    model: str = ""
    device: str = "cpu"
    extra: dict = field(default_factory=dict)


@runtime_checkable
class PolicyEngine(Protocol):
    async def generate(self, requests: list[StepRequest]) -> list[list[list[GeneratedStep]]]:
        """For each request, `n` continuations; each continuation is a list of steps (exactly
        one unless `to_end`)."""
        ...

    def info(self) -> EngineInfo: ...


@runtime_checkable
class RewardEngine(Protocol):
    async def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]: ...

    def info(self) -> EngineInfo: ...


def rollout_seed(seed: int | None, sample: int, step: int) -> int | None:
    """A seed per (request seed, sample, step), so a to_end rollout is reproducible and
    independent of what else is in the batch."""
    if seed is None:
        return None
    return (seed * 1_000_003 + sample * 10_007 + step) % (2**63)


class StepwisePolicy:
    """A policy over a server-style primitive `_steps(req, steps, n, seed)` (n samples of the next
    step, each request on its own): requests run concurrently (the server batches them), and a
    to_end rollout is one step per call, so each step keeps its own token limit and count."""

    async def _steps(self, req: StepRequest, steps: list[str], n: int, seed: int | None) -> list[GeneratedStep]:
        raise NotImplementedError

    async def generate(self, requests: list[StepRequest]) -> list[list[list[GeneratedStep]]]:
        return list(await asyncio.gather(*(self._request(r) for r in requests)))

    async def _request(self, req: StepRequest) -> list[list[GeneratedStep]]:
        if req.n < 1 or req.max_step_tokens < 1 or req.max_steps < 1:
            raise ValueError(
                f"bad step request: n={req.n}, max_step_tokens={req.max_step_tokens}, max_steps={req.max_steps}"
            )
        if not req.to_end:
            return [[step] for step in await self._steps(req, req.steps, req.n, req.seed)]
        return list(await asyncio.gather(*(self._rollout(req, i) for i in range(req.n))))

    async def _rollout(self, req: StepRequest, sample: int) -> list[GeneratedStep]:
        out: list[GeneratedStep] = []
        for k in range(req.max_steps):
            (step,) = await self._steps(req, req.steps + [s.text for s in out], 1, rollout_seed(req.seed, sample, k))
            out.append(step)
            if step.finished:
                break
        return out

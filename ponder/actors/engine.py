"""The two engine protocols: a policy that writes reasoning steps and a PRM that scores them.

Engines take whole batches (the scheduler batches requests from many trees) and are async, so
one protocol covers in-process transformers, vLLM's async engine, an OpenAI-compatible server
and the simulator.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ponder.search.types import STEP_DELIMITER


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


@dataclass
class ScoreRequest:
    problem: str
    steps: list[str]
    affinity: str | None = None


@dataclass
class ScoreResult:
    rewards: list[float]  # one per step, in [0, 1]: P(solution still correct after this step)
    tokens: int  # PRM tokens processed


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

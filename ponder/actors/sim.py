"""A calibrated simulator of a small policy and a PRM on the arithmetic task, for scale tests.

`SimPolicy` writes solutions in the task's exact step format (``a op b = c``, the last step
followed by ``The answer is \\boxed{c}.``) and errs like a small model: the chance of a wrong
step grows with the step's difficulty (digit columns, carries/borrows, digit products of a
multiplication), divided by `skill`, raised by temperature, and scaled by a hidden per-prefix
hardness shared by all samples (some prefixes trip every sample up, as with a real model). Its
errors look like real ones: a wrong digit, a dropped carry or borrow, an answer off by a
multiple of a power of ten, a mis-copied operand. After an error it goes on consistently from
the value it wrote; rarely it also gives up and boxes its wrong value at once.

Randomness never depends on batching: at temperature 0 a step is a function of (problem,
prefix) alone (greedy); with a request `seed`, sample k is a function of (seed, k, problem,
prefix). Without a seed, samples come from the engine's own stream.

`SimReward` returns, per step, ``sigmoid(scale * (center ± d/2 + noise))`` with + while the
prefix is still correct (the task's exact `prefix_labels`) and - after an error; noise is
standard normal and keyed by (problem, prefix) so a step's reward does not change as the
trajectory grows. `d = sqrt(2) * Phi^-1(auroc)` makes the AUROC between correct and wrong
prefixes equal the `auroc` setting.

Sampling at temperature T with nucleus `top_p` acts as temperature ``T * top_p`` (a smaller
nucleus cuts the unlikely, mostly wrong, tokens).

Token counts are ``len(text) // 2 + 1`` per text (about what a BPE tokenizer uses on digits
and short words). Latency is GPU-like: each engine is one device that runs one batch at a time,
and calls that arrive while it is busy wait and then run together as the next batch (as vLLM's
scheduler takes waiting requests into its next step). A batch takes
``call_overhead_s + per_request_s * requests + per_token_s * tokens + per_step_s * longest``
seconds (tokens generated or scored in the whole batch; `longest` is the longest output of the
batch in tokens, i.e. its decode steps, so batching pays), slept with `asyncio.sleep` on the
running loop's clock; all zero by default (instant). Calibration for a vLLM 1.5B policy and a
7B PRM on one H100 (assumptions, not measurements) is in `bench/README.md`.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
from collections import OrderedDict
from dataclasses import asdict, dataclass, fields
from statistics import NormalDist
from typing import Any

from ponder.actors.engine import EngineInfo, GeneratedStep, ScoreRequest, ScoreResult, StepRequest
from ponder.config import ConfigError, EngineConfig
from ponder.tasks.arith.problems import Chain, apply, format_answer, format_step, parse, parse_step, prefix_labels


def count_tokens(text: str) -> int:
    """Tokens a char/BPE tokenizer would use, roughly: two characters a token."""
    return len(text) // 2 + 1


def keyed_rng(*key: object) -> random.Random:
    """A random stream that is a pure function of `key`."""
    digest = hashlib.blake2b(repr(key).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "little"))


def arith_chain(problem: str) -> Chain:
    try:
        return parse(problem)
    except ValueError:
        raise ValueError(f"the sim engine handles only arithmetic problems, got {problem[:60]!r}") from None


@dataclass
class Latency:
    """Seconds per batch: overhead + per request + per token + per decode step."""

    call_overhead_s: float = 0.0
    per_request_s: float = 0.0
    per_token_s: float = 0.0
    per_step_s: float = 0.0

    def seconds(self, requests: int, tokens: int, longest: int = 0) -> float:
        return self.call_overhead_s + self.per_request_s * requests + self.per_token_s * tokens + self.per_step_s * longest

    @property
    def instant(self) -> bool:
        return not (self.call_overhead_s or self.per_request_s or self.per_token_s or self.per_step_s)


@dataclass
class _Call:
    requests: float
    tokens: float
    longest: int
    seqs: int  # sequences still to run (samples for a policy, requests for a PRM)
    done: asyncio.Future


class Device:
    """One simulated accelerator: runs one batch at a time; calls that arrive while it is busy
    are merged into the next batch, up to `max_seqs` sequences a batch (0: no limit; vLLM's
    `max_num_seqs`): a call over the limit runs in parts and returns when its last part is done.
    Keeps busy time on the event loop's clock."""

    def __init__(self, latency: Latency, max_seqs: int = 0):
        self.latency = latency
        self.max_seqs = max_seqs
        self._queue: list[_Call] = []
        self._worker: asyncio.Task | None = None
        self.busy_s = 0.0  # finished batches
        self._running: tuple[float, float] | None = None  # (start, seconds) of the batch running now
        self.batches = 0
        self.requests = 0

    def busy_seconds(self, now: float) -> float:
        """Busy time up to `now` (the loop's clock), counting the running batch's part."""
        if self._running is None:
            return self.busy_s
        start, delay = self._running
        return self.busy_s + min(max(0.0, now - start), delay)

    async def run(self, requests: int, tokens: int, longest: int = 0, seqs: int | None = None) -> None:
        if self.latency.instant:
            self.batches += 1
            self.requests += requests
            return
        loop = asyncio.get_running_loop()
        call = _Call(requests, tokens, longest, max(1, requests if seqs is None else seqs), loop.create_future())
        self._queue.append(call)
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())
        await call.done

    def _take(self) -> tuple[list[_Call], float, float, int]:
        """The next batch: whole calls in arrival order, the last one cut to fit `max_seqs`."""
        room = self.max_seqs or float("inf")
        finished: list[_Call] = []
        requests = tokens = 0.0
        longest = 0
        while self._queue and room > 0:
            call = self._queue[0]
            part = min(1.0, room / call.seqs)
            requests += call.requests * part
            tokens += call.tokens * part
            longest = max(longest, call.longest)
            if part < 1.0:  # the rest waits for the next batch
                take = int(room)
                call.requests -= call.requests * part
                call.tokens -= call.tokens * part
                call.seqs -= take
                break
            room -= call.seqs
            finished.append(self._queue.pop(0))
        return finished, requests, tokens, longest

    async def _drain(self) -> None:
        while self._queue:
            finished, requests, tokens, longest = self._take()
            delay = self.latency.seconds(requests, tokens, longest)  # type: ignore[arg-type]
            self._running = (asyncio.get_running_loop().time(), delay)
            await asyncio.sleep(delay)
            self._running = None
            self.busy_s += delay
            self.batches += 1
            self.requests += round(requests)
            for call in finished:
                if not call.done.done():
                    call.done.set_result(None)


def _options(cls: type, options: dict[str, Any], what: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ConfigError(f"unknown {what} option {unknown[0]!r} (known: {', '.join(sorted(known))})")
    try:
        return cls(**options)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad {what} options: {e}") from None


# -- step difficulty -------------------------------------------------------------------------------


def _digits(x: int) -> list[int]:
    """Decimal digits of |x|, least significant first."""
    return [int(d) for d in reversed(str(abs(x)))]


def carry_columns(a: int, op: str, b: int) -> list[int]:
    """Columns (0 = units) that produce a carry (+), need a borrow (-), or, for *, the columns
    of the digit products that carry into the next column."""
    da, db = _digits(a), _digits(b)
    out: list[int] = []
    if op == "+":
        carry = 0
        for k in range(max(len(da), len(db))):
            s = (da[k] if k < len(da) else 0) + (db[k] if k < len(db) else 0) + carry
            carry = int(s >= 10)
            if carry:
                out.append(k)
    elif op == "-":
        if a < b:  # the policy computes |a - b| the usual way
            da, db = db, da
        borrow = 0
        for k in range(len(da)):
            s = da[k] - (db[k] if k < len(db) else 0) - borrow
            borrow = int(s < 0)
            if borrow:
                out.append(k)
    else:
        out = [i + j for i, x in enumerate(da) for j, y in enumerate(db) if x * y >= 10]
    return out


@dataclass(frozen=True)
class StepDifficulty:
    columns: int  # digit columns handled
    carries: int
    products: int  # single-digit products (multiplication only)

    @classmethod
    def of(cls, a: int, op: str, b: int) -> StepDifficulty:
        products = len(_digits(a)) * len(_digits(b)) if op == "*" else 0
        return cls(len(_digits(apply(op, a, b))), len(carry_columns(a, op, b)), products)


# -- the policy ----------------------------------------------------------------------------------


@dataclass
class SimPolicySettings:
    skill: float = 1.0  # divides every step's error hazard: 2.0 is a model twice as reliable
    base_hazard: float = 0.002  # per step, whatever its size
    column_hazard: float = 0.004  # per digit column, growing with the square of the width
    carry_hazard: float = 0.035  # per carry or borrow
    product_hazard: float = 0.035  # per single-digit product of a multiplication
    temperature_gain: float = 0.6  # sampling at temperature T multiplies the hazard by 1 + gain * T
    hardness_spread: float = 0.6  # sigma of the log-normal per-prefix hardness all samples share
    early_answer: float = 0.1  # chance a wrong step also boxes its wrong value and stops
    seed: int = 0  # the engine's own stream, for requests without a seed
    call_overhead_s: float = 0.0
    per_request_s: float = 0.0
    per_token_s: float = 0.0
    per_step_s: float = 0.0  # per decode step: the longest output of a batch, in tokens
    max_batch_seqs: int = 0  # sequences (samples) a batch holds, as vLLM's max_num_seqs; 0: no limit

    def __post_init__(self) -> None:
        if self.skill <= 0:
            raise ValueError(f"skill must be positive, got {self.skill}")
        if not 0 <= self.early_answer <= 1:
            raise ValueError(f"early_answer must be in [0, 1], got {self.early_answer}")


class SimPolicy:
    """A stochastic small policy for the arithmetic task (see the module docstring)."""

    def __init__(self, settings: SimPolicySettings | None = None, **options: Any) -> None:
        self.settings = settings or _options(SimPolicySettings, options, "sim policy")
        s = self.settings
        self.device = Device(Latency(s.call_overhead_s, s.per_request_s, s.per_token_s, s.per_step_s), s.max_batch_seqs)
        self._rng = random.Random(s.seed)

    @classmethod
    def from_config(cls, cfg: EngineConfig) -> SimPolicy:
        return cls(_options(SimPolicySettings, dict(cfg.options), "sim policy"))

    def info(self) -> EngineInfo:
        return EngineInfo(
            kind="sim", model=f"sim-policy(skill={self.settings.skill})", device="cpu", extra=asdict(self.settings)
        )

    async def generate(self, requests: list[StepRequest]) -> list[list[list[GeneratedStep]]]:
        out = [[self.continuation(req, k) for k in range(req.n)] for req in requests]
        lengths = [sum(step.tokens for step in cont) for per_req in out for cont in per_req]
        await self.device.run(len(requests), sum(lengths), max(lengths, default=0), len(lengths))
        return out

    def continuation(self, req: StepRequest, sample: int) -> list[GeneratedStep]:
        """Sample `sample` of a request: one step, or every step to the end with `to_end`."""
        chain = arith_chain(req.problem)
        steps, out = list(req.steps), []
        for _ in range(max(1, req.max_steps) if req.to_end else 1):
            step = self.step(chain, req, sample, steps)
            out.append(step)
            steps.append(step.text)
            if step.finished:
                break
        return out

    def error_probability(self, a: int, op: str, b: int, temperature: float, hardness: float = 1.0) -> float:
        s, d = self.settings, StepDifficulty.of(a, op, b)
        hazard = (
            s.base_hazard + s.column_hazard * d.columns**2 + s.carry_hazard * d.carries + s.product_hazard * d.products
        )
        hazard *= hardness * (1 + s.temperature_gain * max(temperature, 0.0)) / s.skill
        return 1 - math.exp(-hazard)

    def _rng_for(self, req: StepRequest, sample: int, steps: list[str]) -> random.Random:
        if req.temperature <= 0:
            return keyed_rng("greedy", req.problem, tuple(steps))
        if req.seed is not None:
            return keyed_rng("sample", req.seed, sample, req.problem, tuple(steps))
        return random.Random(self._rng.getrandbits(64))

    def step(self, chain: Chain, req: StepRequest, sample: int, steps: list[str]) -> GeneratedStep:
        i, a = len(steps), _last_value(chain, steps)
        if i >= len(chain.ops):  # nothing left to compute: just say the answer
            return self._emit(format_answer(a), True, req)
        op, b = chain.ops[i]
        rng = self._rng_for(req, sample, steps)
        hardness = math.exp(keyed_rng("hardness", req.problem, tuple(steps)).gauss(0.0, self.settings.hardness_spread))
        c = apply(op, a, b)
        temperature = req.temperature * min(max(req.top_p, 0.0), 1.0)
        wrong = rng.random() < self.error_probability(a, op, b, temperature, hardness)
        if wrong:
            a, c = _mistake(rng, a, op, b)
        last = i == len(chain.ops) - 1 or (wrong and rng.random() < self.settings.early_answer)
        text = format_step(a, op, b, c, final=last)
        return self._emit(text, last, req)

    @staticmethod
    def _emit(text: str, finished: bool, req: StepRequest) -> GeneratedStep:
        tokens = count_tokens(text)
        if tokens > req.max_step_tokens:  # cut off mid-step, as a real engine would
            text, tokens, finished = text[: 2 * max(req.max_step_tokens - 1, 0)], req.max_step_tokens, False
        return GeneratedStep(text=text, tokens=tokens, finished=finished)


def _last_value(chain: Chain, steps: list[str]) -> int:
    """The value the solution has reached: the result the last readable step wrote."""
    for step in reversed(steps):
        parsed, answer = parse_step(step)
        if parsed is not None:
            return parsed[3]
        if answer is not None:
            return int(answer)
    return chain.start


def _mistake(rng: random.Random, a: int, op: str, b: int) -> tuple[int, int]:
    """A plausible wrong (a, c) for ``a op b``: a != right a or c != right c, and c >= 0
    unless the right result is already negative (after an earlier mistake)."""
    right = apply(op, a, b)
    carries = carry_columns(a, op, b)
    kinds = ["digit", "carry", "tens", "copy"]
    weights = [0.35, 0.4 if carries else 0.0, 0.15, 0.1]
    for _ in range(8):
        kind = rng.choices(kinds, weights)[0]
        if kind == "copy":  # mis-copied the running value, then computed correctly from it
            wrong_a = _wrong_digit(rng, a)
            c = apply(op, wrong_a, b)
            if c >= 0 or right < 0:
                return wrong_a, c
            continue
        if kind == "digit":
            c = _wrong_digit(rng, right)
        elif kind == "carry":
            k = rng.choice(carries)
            dropped = 10 ** (k + 1)
            c = right + dropped if op == "-" else right - dropped  # a forgotten borrow adds back
        else:
            c = right + rng.choice([-1, 1]) * rng.randint(1, 9) * 10 ** rng.randint(1, max(1, len(str(right)) - 1))
        if (c >= 0 or right < 0) and c != right:
            return a, c
    return a, right + 10


def _wrong_digit(rng: random.Random, x: int) -> int:
    """`x` with one digit changed, mostly by one (a slip, not a random number)."""
    sign, digits = (-1 if x < 0 else 1), list(str(abs(x)))
    k = rng.randrange(len(digits))
    old = int(digits[k])
    choices = [d for d in range(10) if d != old and not (k == 0 and d == 0 and len(digits) > 1)]
    near = [d for d in choices if abs(d - old) == 1]
    digits[k] = str(rng.choice(near) if near and rng.random() < 0.7 else rng.choice(choices))
    return sign * int("".join(digits))


# -- the PRM -------------------------------------------------------------------------------------


@dataclass
class SimRewardSettings:
    auroc: float = 0.9  # how well a step's reward separates still-correct from wrong prefixes
    center: float = 0.5  # logit offset: > 0 is an optimistic PRM
    scale: float = 2.0  # logit scale: larger spreads rewards towards 0 and 1
    seed: int = 0  # which noise this PRM has
    call_overhead_s: float = 0.0
    per_request_s: float = 0.0
    per_token_s: float = 0.0
    max_batch_seqs: int = 0  # trajectories a batch holds; 0: no limit
    # Prefixes (problem, first k steps) a replica keeps cached, LRU; 0: none. Latency then counts
    # only the tokens after the longest cached prefix, as vLLM's prefix caching does for a PRM
    # that is sent the same tree again (what the pools' affinity routing is for). Results and
    # the reported (budgeted) token counts do not change.
    prefix_cache: int = 0

    def __post_init__(self) -> None:
        if not 0.5 <= self.auroc < 1:
            raise ValueError(f"auroc must be in [0.5, 1), got {self.auroc}")
        if self.scale <= 0:
            raise ValueError(f"scale must be positive, got {self.scale}")


class SimReward:
    """A PRM with a set AUROC over the exact step labels (see the module docstring)."""

    def __init__(self, settings: SimRewardSettings | None = None, **options: Any) -> None:
        self.settings = settings or _options(SimRewardSettings, options, "sim reward")
        s = self.settings
        self.device = Device(Latency(s.call_overhead_s, s.per_request_s, s.per_token_s), s.max_batch_seqs)
        self.separation = math.sqrt(2) * NormalDist().inv_cdf(s.auroc)
        self._cache: OrderedDict[tuple, None] = OrderedDict()

    @classmethod
    def from_config(cls, cfg: EngineConfig) -> SimReward:
        return cls(_options(SimRewardSettings, dict(cfg.options), "sim reward"))

    def info(self) -> EngineInfo:
        return EngineInfo(
            kind="sim", model=f"sim-prm(auroc={self.settings.auroc})", device="cpu", extra=asdict(self.settings)
        )

    async def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        out = [self.score_one(req) for req in requests]
        tokens = sum(map(self._uncached_tokens, requests)) if self.settings.prefix_cache else sum(r.tokens for r in out)
        await self.device.run(len(requests), tokens)
        return out

    def _uncached_tokens(self, req: ScoreRequest) -> int:
        """Tokens to prefill after the longest cached prefix of `req`; caches its prefixes."""
        keys = [(req.problem,)]
        for step in req.steps:
            keys.append((keys[-1], step))
        hit = max((k for k, key in enumerate(keys) if key in self._cache), default=-1)
        for key in keys:
            self._cache[key] = None
            self._cache.move_to_end(key)
        while len(self._cache) > self.settings.prefix_cache:
            self._cache.popitem(last=False)
        return (count_tokens(req.problem) if hit < 0 else 0) + sum(count_tokens(st) for st in req.steps[max(hit, 0) :])

    def score_one(self, req: ScoreRequest) -> ScoreResult:
        arith_chain(req.problem)
        s = self.settings
        rewards = []
        for i, good in enumerate(prefix_labels(req.problem, req.steps)):
            noise = keyed_rng("prm", s.seed, req.problem, tuple(req.steps[: i + 1])).gauss(0.0, 1.0)
            logit = s.center + (self.separation / 2 if good else -self.separation / 2) + noise
            rewards.append(1 / (1 + math.exp(-s.scale * logit)))
        tokens = count_tokens(req.problem) + sum(count_tokens(step) for step in req.steps)
        return ScoreResult(rewards=rewards, tokens=tokens)

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
and short words). The policy reports each step's prompt (problem and earlier steps) and how much
of it its prefix cache (`prefix_cache`) held; the PRM reports its cache hits likewise.

Latency has two models (`device`). "continuous" is vLLM-like continuous batching (see
`ContinuousDevice`). "static", the default: each engine is one device that runs one batch at a time,
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
import heapq
import itertools
import math
import random
from collections import OrderedDict, deque
from collections.abc import Sequence
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
    """Seconds per batch: overhead + per request + per token + per decode step (+ per prefilled
    prompt token, for a policy with `per_prefill_token_s`)."""

    call_overhead_s: float = 0.0
    per_request_s: float = 0.0
    per_token_s: float = 0.0
    per_step_s: float = 0.0
    per_prefill_token_s: float = 0.0

    def seconds(self, requests: int, tokens: int, longest: int = 0, prefill: int = 0) -> float:
        return (self.call_overhead_s + self.per_request_s * requests + self.per_token_s * tokens
                + self.per_step_s * longest + self.per_prefill_token_s * prefill)

    @property
    def instant(self) -> bool:
        return not (self.call_overhead_s or self.per_request_s or self.per_token_s or self.per_step_s
                    or self.per_prefill_token_s)


@dataclass
class _Call:
    requests: float
    tokens: float
    longest: int
    seqs: int  # sequences still to run (samples for a policy, requests for a PRM)
    done: asyncio.Future
    prefill: float = 0.0


class _Gpu:
    """What co-located engines share: one device, one batch (or step) at a time across them."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()


class Device:
    """One simulated accelerator, *static* batching: runs one batch at a time; calls that arrive
    while it is busy are merged into the next batch, up to `max_seqs` sequences a batch (0: no
    limit; vLLM's `max_num_seqs`): a call over the limit runs in parts and returns when its last
    part is done. A batch lasts until its longest output is done and its per-call overhead is
    device time. Keeps busy time on the event loop's clock. `gpu` (a `_Gpu`) makes engines share
    one device: their batches run one after another (a policy and a PRM on one GPU)."""

    kind = "static"

    def __init__(self, latency: Latency, max_seqs: int = 0):
        self.latency = latency
        self.max_seqs = max_seqs
        self.gpu: _Gpu | None = None
        self._queue: list[_Call] = []
        self._worker: asyncio.Task | None = None
        self.busy_s = 0.0  # finished batches
        self._running: tuple[float, float] | None = None  # (start, seconds) of the batch running now
        self.batches = 0
        self.requests = 0
        self.seqs = 0  # sequences run, summed over batches
        self.prefill_tokens = 0  # prompt tokens prefilled (not cached)

    def busy_seconds(self, now: float) -> float:
        """Busy time up to `now` (the loop's clock), counting the running batch's part."""
        if self._running is None:
            return self.busy_s
        start, delay = self._running
        return self.busy_s + min(max(0.0, now - start), delay)

    async def run(self, requests: int, tokens: int, longest: int = 0, seqs: int | None = None,
                  prefill: int = 0, lengths: list[list[int]] | None = None, prefills: list[int] | None = None) -> None:
        """Run one call: `requests` requests, `tokens` tokens generated or scored, `longest` the
        longest output, `seqs` sequences, `prefill` prompt tokens to prefill. (`lengths` and
        `prefills`, per request, are what a continuous device needs; unused here.)"""
        self.prefill_tokens += prefill
        if self.latency.instant:
            self.batches += 1
            self.requests += requests
            return
        loop = asyncio.get_running_loop()
        call = _Call(requests, tokens, longest, max(1, requests if seqs is None else seqs), loop.create_future(),
                     prefill)
        self._queue.append(call)
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())
        await call.done

    def _take(self) -> tuple[list[_Call], float, float, int, float]:
        """The next batch: whole calls in arrival order, the last one cut to fit `max_seqs`."""
        room = self.max_seqs or float("inf")
        finished: list[_Call] = []
        requests = tokens = prefill = 0.0
        longest = 0
        while self._queue and room > 0:
            call = self._queue[0]
            part = min(1.0, room / call.seqs)
            requests += call.requests * part
            tokens += call.tokens * part
            prefill += call.prefill * part
            longest = max(longest, call.longest)
            if part < 1.0:  # the rest waits for the next batch
                take = int(room)
                call.requests -= call.requests * part
                call.tokens -= call.tokens * part
                call.prefill -= call.prefill * part
                call.seqs -= take
                self.seqs += take
                break
            room -= call.seqs
            self.seqs += call.seqs
            finished.append(self._queue.pop(0))
        return finished, requests, tokens, longest, prefill

    def _has_work(self) -> bool:
        return bool(self._queue)

    async def _drain(self) -> None:
        while self._has_work():
            if self.gpu is not None:  # co-located engines: one batch (or step) at a time across them
                async with self.gpu.lock:
                    await self._batch()
            else:
                await self._batch()

    async def _busy(self, delay: float) -> None:
        """The device is busy for `delay` seconds (kept for `busy_seconds`)."""
        self._running = (asyncio.get_running_loop().time(), delay)
        await asyncio.sleep(delay)
        self._running = None
        self.busy_s += delay
        self.batches += 1

    async def _batch(self) -> None:
        finished, requests, tokens, longest, prefill = self._take()
        await self._busy(self.latency.seconds(requests, tokens, longest, prefill))  # type: ignore[arg-type]
        self.requests += round(requests)
        for call in finished:
            if not call.done.done():
                call.done.set_result(None)


class _Group:
    """One request on a continuous device: its prompt to prefill, then its samples to decode."""

    __slots__ = ("call", "prefill_left", "lengths")

    def __init__(self, call: list, prefill: int, lengths: list[int]):
        self.call = call  # [groups left, future]
        self.prefill_left = prefill
        self.lengths = lengths


class ContinuousDevice(Device):
    """One simulated accelerator with vLLM-style *continuous* batching. The engine runs steps; a
    step decodes one token of every running sequence and prefills newly admitted requests (up to
    `max_step_tokens` prompt tokens a step, a longer prompt is prefilled in chunks). A request
    that arrives joins at the next step, not after the running batch, and each sequence leaves
    when its own output is done; a call returns when its last sequence does. A step takes
    ``per_step_s + per_token_s * decoding sequences + per_prefill_token_s * prefilled tokens +
    per_request_s * admitted requests``. The per-call overhead (RPC, tokenisation and
    detokenisation on the host) delays the call but is not device time. At most `max_seqs`
    sequences run at once (vLLM's `max_num_seqs`); the rest wait, in arrival order."""

    kind = "continuous"

    def __init__(self, latency: Latency, max_seqs: int = 0, max_step_tokens: int = 8192):
        super().__init__(latency, max_seqs)
        self.max_step_tokens = max(1, max_step_tokens)
        self._waiting: deque[_Group] = deque()
        self._finish: list[tuple[int, int, _Group]] = []  # heap of (step it ends at, tiebreak, group)
        self._left: dict[int, int] = {}  # id(group) -> sequences still decoding
        self._tiebreak = itertools.count()
        self.step = 0

    async def run(self, requests: int, tokens: int, longest: int = 0, seqs: int | None = None,
                  prefill: int = 0, lengths: list[list[int]] | None = None, prefills: list[int] | None = None) -> None:
        lat = self.latency
        if lat.instant:
            self.prefill_tokens += prefill
            self.batches += 1
            self.requests += requests
            return
        if lat.call_overhead_s:
            await asyncio.sleep(lat.call_overhead_s)  # host side: not device time
        lengths = lengths if lengths is not None else [[] for _ in range(requests)]
        prefills = prefills if prefills is not None else [0] * len(lengths)
        if not lengths:
            return
        loop = asyncio.get_running_loop()
        call = [len(lengths), loop.create_future()]
        for pre, ls in zip(prefills, lengths):
            self._waiting.append(_Group(call, int(pre), [max(1, int(n)) for n in ls]))
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._drain())
        await call[1]

    def _done(self, g: _Group) -> None:
        g.call[0] -= 1
        if g.call[0] == 0 and not g.call[1].done():
            g.call[1].set_result(None)

    def _has_work(self) -> bool:
        return bool(self._waiting or self._finish)

    async def _batch(self) -> None:
        """One step."""
        lat, cap = self.latency, self.max_seqs or float("inf")
        budget, prefill, admitted = self.max_step_tokens, 0, []
        running = len(self._finish)
        while self._waiting and len(admitted) < cap:
            g = self._waiting[0]
            if running + len(g.lengths) > cap and (running or admitted):
                break  # no room for its sequences: it waits for some to finish
            take = min(g.prefill_left, budget)
            g.prefill_left -= take
            budget -= take
            prefill += take
            if g.prefill_left > 0:
                break  # chunked prefill: the rest of its prompt next step
            self._waiting.popleft()
            admitted.append(g)
            running += len(g.lengths)
        await self._busy(lat.per_step_s + lat.per_token_s * running + lat.per_prefill_token_s * prefill
                         + lat.per_request_s * len(admitted))
        self.requests += len(admitted)
        self.seqs += running
        self.prefill_tokens += prefill
        step = self.step
        self.step += 1
        for g in admitted:
            if not g.lengths:
                self._done(g)
                continue
            self._left[id(g)] = len(g.lengths)
            for n in g.lengths:  # its first token comes from this step
                heapq.heappush(self._finish, (step + n - 1, next(self._tiebreak), g))
        while self._finish and self._finish[0][0] <= step:
            _, _, g = heapq.heappop(self._finish)
            self._left[id(g)] -= 1
            if self._left[id(g)] == 0:
                del self._left[id(g)]
                self._done(g)


def make_device(kind: str, latency: Latency, max_seqs: int = 0, max_step_tokens: int = 8192) -> Device:
    if kind == "static":
        return Device(latency, max_seqs)
    if kind == "continuous":
        return ContinuousDevice(latency, max_seqs, max_step_tokens)
    raise ValueError(f"device must be 'static' or 'continuous', got {kind!r}")


def share_gpu(*engines: Any) -> None:
    """Put `engines` (sim policies and PRMs) on one simulated GPU: their batches or steps run one
    at a time, as a policy and a PRM co-located on one device."""
    gpu = _Gpu()
    for e in engines:
        e.device.gpu = gpu


class PrefixCache:
    """A replica's prefix cache: prefixes (problem, first k steps), LRU, up to `capacity`."""

    def __init__(self, capacity: int):
        self.capacity = capacity
        self._keys: OrderedDict[tuple, None] = OrderedDict()

    @staticmethod
    def keys(problem: str, steps: Sequence[str]) -> list[tuple]:
        keys = [(problem,)]
        for step in steps:
            keys.append((keys[-1], step))
        return keys

    def hit(self, keys: list[tuple]) -> int:
        """Index of the longest cached prefix among `keys` (-1: none)."""
        for k in range(len(keys) - 1, -1, -1):
            if keys[k] in self._keys:
                return k
        return -1

    def prefill(self, problem: str, steps: Sequence[str]) -> tuple[int, int, tuple]:
        """(prompt tokens, of them to compute after the longest cached prefix, the prompt's key)
        for a prompt of `problem` and `steps`; caches its prefixes."""
        keys = self.keys(problem, steps)
        sizes = [count_tokens(problem)] + [count_tokens(st) for st in steps]
        hit = self.hit(keys)
        self.add(keys)
        return sum(sizes), sum(sizes[hit + 1:]), keys[-1]

    def add(self, keys: Sequence[tuple]) -> None:
        if self.capacity <= 0:
            return
        for key in keys:
            self._keys[key] = None
            self._keys.move_to_end(key)
        while len(self._keys) > self.capacity:
            self._keys.popitem(last=False)


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
    per_prefill_token_s: float = 0.0  # per prompt token prefilled (not found in the prefix cache)
    # Prefixes (problem, first k steps) a replica keeps cached, LRU; 0: none. A request's prompt
    # is prefilled only after its longest cached prefix; generated steps are cached as they are
    # written (their KV states exist), as with vLLM's automatic prefix caching. The n samples of
    # a request share one prefill. Results do not change; `prompt_tokens` / `cached_tokens`
    # report it.
    prefix_cache: int = 0
    # "static": a batch runs to its longest output, calls arriving meanwhile wait for the next
    # batch, the call overhead is device time. "continuous": vLLM-style continuous batching (see
    # `ContinuousDevice`), the call overhead is host time.
    device: str = "static"
    max_step_tokens: int = 8192  # continuous device: prompt tokens prefilled a step (chunked prefill)

    def __post_init__(self) -> None:
        if self.device not in ("static", "continuous"):
            raise ValueError(f"device must be 'static' or 'continuous', got {self.device!r}")
        if self.skill <= 0:
            raise ValueError(f"skill must be positive, got {self.skill}")
        if not 0 <= self.early_answer <= 1:
            raise ValueError(f"early_answer must be in [0, 1], got {self.early_answer}")


class SimPolicy:
    """A stochastic small policy for the arithmetic task (see the module docstring)."""

    def __init__(self, settings: SimPolicySettings | None = None, **options: Any) -> None:
        self.settings = settings or _options(SimPolicySettings, options, "sim policy")
        s = self.settings
        self.device = make_device(
            s.device, Latency(s.call_overhead_s, s.per_request_s, s.per_token_s, s.per_step_s, s.per_prefill_token_s),
            s.max_batch_seqs, s.max_step_tokens)
        self.cache = PrefixCache(s.prefix_cache)
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
        prefills = [self._prefill(req, samples) for req, samples in zip(requests, out)]
        per_req = [[sum(step.tokens for step in cont) for cont in samples] for samples in out]
        lengths = [n for ls in per_req for n in ls]
        await self.device.run(len(requests), sum(lengths), max(lengths, default=0), len(lengths),
                              sum(prefills), per_req, prefills)
        return out

    def _prefill(self, req: StepRequest, samples: list[list[GeneratedStep]]) -> int:
        """Prompt tokens the engine must compute for `req` (after its longest cached prefix;
        once for all its samples); fills in the samples' `prompt_tokens` / `cached_tokens` and
        caches the prompt and what was generated."""
        prompt, uncached, prompt_key = self.cache.prefill(req.problem, req.steps)
        for k, cont in enumerate(samples):
            context, key = prompt, prompt_key
            for j, step in enumerate(cont):
                step.prompt_tokens = context
                step.cached_tokens = context - uncached if k == 0 and j == 0 else context
                context += count_tokens(step.text)
                key = (key, step.text)
                self.cache.add([key])
        return uncached

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
    per_token_s: float = 0.0  # per token prefilled (scored)
    per_step_s: float = 0.0  # continuous device: the fixed cost of a forward step (reading the weights)
    max_batch_seqs: int = 0  # trajectories a batch holds; 0: no limit
    device: str = "static"  # or "continuous" (see `SimPolicySettings.device`)
    max_step_tokens: int = 8192  # continuous device: tokens prefilled a step
    # Prefixes (problem, first k steps) a replica keeps cached, LRU; 0: none. Latency then counts
    # only the tokens after the longest cached prefix, as vLLM's prefix caching does for a PRM
    # that is sent the same tree again (what the pools' affinity routing is for). Results and
    # the reported (budgeted) token counts do not change; `cached_tokens` reports the hit.
    prefix_cache: int = 0

    def __post_init__(self) -> None:
        if self.device not in ("static", "continuous"):
            raise ValueError(f"device must be 'static' or 'continuous', got {self.device!r}")
        if not 0.5 <= self.auroc < 1:
            raise ValueError(f"auroc must be in [0.5, 1), got {self.auroc}")
        if self.scale <= 0:
            raise ValueError(f"scale must be positive, got {self.scale}")


class SimReward:
    """A PRM with a set AUROC over the exact step labels (see the module docstring)."""

    def __init__(self, settings: SimRewardSettings | None = None, **options: Any) -> None:
        self.settings = settings or _options(SimRewardSettings, options, "sim reward")
        s = self.settings
        # A PRM only prefills: its per-token cost is per prefilled token, on either device.
        latency = (Latency(s.call_overhead_s, s.per_request_s, 0.0, s.per_step_s, s.per_token_s) if s.device == "continuous"
                   else Latency(s.call_overhead_s, s.per_request_s, s.per_token_s))
        self.device = make_device(s.device, latency, s.max_batch_seqs, s.max_step_tokens)
        self.separation = math.sqrt(2) * NormalDist().inv_cdf(s.auroc)
        self.cache = PrefixCache(s.prefix_cache)

    @classmethod
    def from_config(cls, cfg: EngineConfig) -> SimReward:
        return cls(_options(SimRewardSettings, dict(cfg.options), "sim reward"))

    def info(self) -> EngineInfo:
        return EngineInfo(
            kind="sim", model=f"sim-prm(auroc={self.settings.auroc})", device="cpu", extra=asdict(self.settings)
        )

    async def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        out = [self.score_one(req) for req in requests]
        prefills = [self.cache.prefill(req.problem, req.steps)[1] for req in requests]
        for res, n in zip(out, prefills):
            res.cached_tokens = res.tokens - n
        await self.device.run(len(requests), sum(prefills), prefill=sum(prefills), prefills=prefills)
        return out

    def score_one(self, req: ScoreRequest) -> ScoreResult:
        arith_chain(req.problem)
        s = self.settings
        rewards = []
        for i, good in enumerate(prefix_labels(req.problem, req.steps)):
            noise = keyed_rng("prm", s.seed, req.problem, tuple(req.steps[: i + 1])).gauss(0.0, 1.0)
            logit = s.center + (self.separation / 2 if good else -self.separation / 2) + noise
            rewards.append(1 / (1 + math.exp(-s.scale * logit)))
        prefix = list(itertools.accumulate((count_tokens(step) for step in req.steps), initial=count_tokens(req.problem)))
        return ScoreResult(rewards=rewards, tokens=prefix[-1], prefix_tokens=prefix[1:])  # each reward reads its prefix

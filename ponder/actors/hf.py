"""HF transformers engines: a policy that writes reasoning steps and a Math-Shepherd style PRM.

Any local HF-format causal LM directory loads (no remote code, no hub). The policy is a short
engine loop in the spirit of nano-vllm: a left-padded batched prefill, then token-by-token
decoding that reuses the KV cache, each row stopping on its own at the step delimiter, end of
sequence or its token limit. Each sample draws from its own `torch.Generator` seeded from the
request seed and sample index, so a result does not depend on what else was in the batch.

The PRM's convention comes from `prm_config.json` in its model directory (`PRMConvention`):
Math-Shepherd (what vLLM serves as a step reward model: a plain causal LM, a step tag token after
each step, the reward of a step = softmax over the (good, bad) label tokens' logits at its tag,
P(good)), or an implicit PRM (Yuan et al. 2412.01981, as EurusPRM / PRIME: a causal LM and its
reference model; the reward after step k is sigmoid(beta * sum of log pi/pi_ref over the
solution's tokens up to the end of step k)).

Prefix cache (both engines, as vLLM's prefix caching): a bounded LRU of KV states keyed by token
ids at step boundaries (`PrefixCache`). The policy keeps each prompt's KV after its prefill and
each unfinished sample's KV (prompt + the step it wrote), so a child's prompt computes only what
its parent's entry lacks (at least its last token, whose logits start the decode); the n samples
of a request share one prefill. The PRM keeps each scored sequence's KV (both models' for an
implicit PRM) with the per-position values already read (the reward at each position, or the
implicit PRM's cumulative log ratio), so a child's score computes only its new step's tokens;
uncached paths of one batch that share their problem (the first steps) compute it once, and a
batch is split by uncached length so that a few long rows do not pad many short ones.
Requests of one batch with different cached lengths share one forward: each row's cached KV is
left-padded to the longest, its new tokens left-padded after it, and the attention mask and
position ids skip the gaps. Options (`EngineConfig.options`): `prefix_cache` (default true),
`cache_entries` (default 4096) and `cache_tokens` (default 65536; the sum of the entries'
sequence lengths) bound the cache per engine. Models whose KV cache is not a plain per-layer
one (sliding windows, recurrent states) run without it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ponder.actors.engine import EngineInfo, GeneratedStep, ScoreRequest, ScoreResult, StepRequest
from ponder.config import ConfigError, EngineConfig
from ponder.search.types import STEP_DELIMITER
from ponder.tasks.grading import extract_answer


def plain_prompt(problem: str, steps: list[str], delimiter: str = STEP_DELIMITER) -> str:
    """The prompt for models without a chat template (the shipped arithmetic models are
    trained on exactly this): the problem, then each step so far, each followed by the
    delimiter, so the model continues with the next step."""
    return "".join(part + delimiter for part in [problem, *steps])


PRM_CONFIG_FILE = "prm_config.json"


def prm_text(problem: str, steps: list[str], step_tag: str = "<step>", delimiter: str = STEP_DELIMITER) -> str:
    """The PRM's input (Math-Shepherd style): the policy prompt with the step tag right after
    each step; the reward of step i is read at the i-th tag. A tag inside a step's own text
    (a policy can sample one) is dropped, so tags and steps stay one to one."""
    return plain_prompt(problem, [], delimiter) + delimiter.join(s.replace(step_tag, "") + step_tag for s in steps)


def render_prompt(tokenizer: Any, problem: str, steps: list[str], delimiter: str = STEP_DELIMITER) -> str:
    """The policy prompt: with a chat template, the problem as a user message plus the
    generation prompt, then the steps so far; otherwise `plain_prompt`."""
    if getattr(tokenizer, "chat_template", None):
        head = tokenizer.apply_chat_template(
            [{"role": "user", "content": problem}], tokenize=False, add_generation_prompt=True
        )
        return head + "".join(s + delimiter for s in steps)
    return plain_prompt(problem, steps, delimiter)


# Qwen2.5-Math-PRM's system prompt: the classifier-head PRMs score chat-formatted solutions.
DEFAULT_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


@dataclass(frozen=True)
class PRMConvention:
    """How a PRM reads steps, from `prm_config.json` in its model dir. Three styles:

    - "math-shepherd": a causal LM; the reward at each step tag is P(good) = softmax over the
      (good, bad) label-token logits (`good_token_id`, `bad_token_id`);
    - "classifier": a model with a two-class token head read at each step tag (Qwen2.5-Math-PRM:
      `Qwen2ForProcessRewardModel`, step tag `<extra_0>`); the reward is the probability of class
      `good_label`. With a chat template the input is system + user (problem) + assistant (steps,
      each followed by the tag), as that model was trained;
    - "implicit": a causal LM read against its reference LM (`reference`, a model dir, relative
      paths from the PRM dir); no tag, the input is the policy's own prompt and steps (each
      followed by the delimiter) and the reward after step k is sigmoid(beta * q_k), q_k the sum of
      log pi(token) - log pi_ref(token) over the solution's tokens through step k's delimiter.
    """

    step_tag: str = ""
    step_tag_id: int = -1
    good_token_id: int | None = None
    bad_token_id: int | None = None
    delimiter: str = STEP_DELIMITER
    style: str = "math-shepherd"
    good_label: int = 1
    system: str | None = DEFAULT_PRM_SYSTEM
    reference: str | None = None
    beta: float = 1.0

    def step_spans(self, tokenizer: Any, problem: str, steps: list[str]) -> tuple[list[int], int, list[int]]:
        """The implicit PRM's input: (token ids of the policy's text, index of the first
        solution token, end index (exclusive) of each step's delimiter). Positions come from the
        tokenizer's character offsets, so merges across a step boundary are handled."""
        text = render_prompt(tokenizer, problem, steps, self.delimiter)
        head = len(render_prompt(tokenizer, problem, [], self.delimiter))
        ends, at = [], head
        for s in steps:
            at += len(s) + len(self.delimiter)
            ends.append(at)
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        starts = [a for a, _ in enc.offset_mapping]
        first = next((i for i, a in enumerate(starts) if a >= head), len(starts))
        # step k ends before the first token that starts at or after its last character
        bounds = [next((i for i, a in enumerate(starts) if a >= e), len(starts)) for e in ends]
        return list(enc.input_ids), first, bounds

    def prefix_tokens(self, ids: list[int]) -> list[int]:
        """A tagged input's length had it stopped after each step: through that step's tag, plus
        what follows the last tag (a chat template's turn end). The models read causally, so a
        step's reward there is the one read at its tag here."""
        tags = [i for i, t in enumerate(ids) if t == self.step_tag_id]
        tail = len(ids) - tags[-1] - 1 if tags else 0
        return [i + 1 + tail for i in tags]

    def input_ids(self, tokenizer: Any, problem: str, steps: list[str]) -> list[int]:
        if self.style == "classifier" and getattr(tokenizer, "chat_template", None):
            answer = "".join(s.replace(self.step_tag, "") + self.step_tag for s in steps)
            messages = [{"role": "user", "content": problem}, {"role": "assistant", "content": answer}]
            if self.system:
                messages.insert(0, {"role": "system", "content": self.system})
            text = tokenizer.apply_chat_template(messages, tokenize=False)
            return tokenizer(text, add_special_tokens=False).input_ids
        return tokenizer(prm_text(problem, steps, self.step_tag, self.delimiter), add_special_tokens=False).input_ids


PRM_STYLES = ("math-shepherd", "classifier", "implicit")


def load_prm_convention(path: str | Path, tokenizer: Any) -> PRMConvention:
    """The convention in `path/prm_config.json`, checked against the tokenizer; bad input -> ConfigError."""
    file = Path(path) / PRM_CONFIG_FILE
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path} is not a PRM dir: cannot read {PRM_CONFIG_FILE} (its step tag and style): {e}") from None
    style = data.get("style", "math-shepherd") if isinstance(data, dict) else None
    if style not in PRM_STYLES:
        raise ConfigError(f"unsupported PRM style {style!r} in {file} (supported: {', '.join(PRM_STYLES)})")
    need = {"math-shepherd": ["step_tag", "step_tag_id", "good_token_id", "bad_token_id"],
            "classifier": ["step_tag", "step_tag_id"], "implicit": ["reference"]}.get(style, [])
    missing = [k for k in need if k not in data]
    if missing:
        raise ConfigError(f"{file} lacks {', '.join(missing)}")
    if style == "implicit":
        reference = Path(path) / str(data["reference"])
        beta = data.get("beta", 1.0)
        if not (reference / "config.json").is_file():
            raise ConfigError(f"{file}: reference model {reference} is missing or has no config.json")
        if not isinstance(beta, (int, float)) or beta <= 0:
            raise ConfigError(f"{file}: beta must be a positive number, got {beta!r}")
        return PRMConvention(style=style, reference=str(reference), beta=float(beta),
                             delimiter=data.get("step_separator", STEP_DELIMITER))
    conv = PRMConvention(
        step_tag=data["step_tag"],
        step_tag_id=int(data["step_tag_id"]),
        good_token_id=data.get("good_token_id"),
        bad_token_id=data.get("bad_token_id"),
        delimiter=data.get("step_separator", STEP_DELIMITER),
        style=style,
        good_label=int(data.get("good_label", 1)),
        system=data.get("system", DEFAULT_PRM_SYSTEM),
    )
    if tokenizer.convert_tokens_to_ids(conv.step_tag) != conv.step_tag_id:
        raise ConfigError(f"{file}: step tag {conv.step_tag!r} is not token {conv.step_tag_id} in the tokenizer")
    return conv


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _load(cfg: EngineConfig, role: str) -> tuple[Any, Any, str]:
    """(tokenizer, model, device) from a local model directory; bad input -> ConfigError."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # Loading bars and notices would print into ponder's own progress bar (and every replica's log).
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    if not cfg.path:
        raise ConfigError(f"hf {role} needs a model directory (path)")
    path = Path(cfg.path)
    if not (path / "config.json").is_file():
        raise ConfigError(f"hf {role} model directory {path} is missing or has no config.json")
    if cfg.device not in ("auto", "cpu", "cuda") and not str(cfg.device).startswith("cuda:"):
        raise ConfigError(f"hf {role}: device must be auto, cpu or cuda, got {cfg.device!r}")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    if cfg.dtype == "auto":
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    elif cfg.dtype in _DTYPES:
        dtype = _DTYPES[cfg.dtype]
    else:
        raise ConfigError(f"hf {role}: dtype must be auto, {', '.join(_DTYPES)}; got {cfg.dtype!r}")
    if cfg.max_batch < 1:
        raise ConfigError(f"hf {role}: max_batch must be positive, got {cfg.max_batch}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True, dtype=dtype)
    except Exception as e:  # noqa: BLE001  (any load failure is a bad model dir for the user)
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ConfigError(f"hf {role}: cannot load model from {path}: {first}") from None
    model.to(device).eval()
    return tokenizer, model, device


class PromptTooLong(ValueError):
    """A request that does not fit the model's context; it fails alone (the batcher splits)."""


def context_length(model: Any) -> int | None:
    """Positions the model reads (max_position_embeddings), or None if it does not say."""
    n = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return int(n) if isinstance(n, int) and n > 0 else None


def _parameters(model: Any) -> set[str]:
    import inspect

    return set(inspect.signature(model.forward).parameters)


def cache_keyword(model: Any) -> str:
    """The KV-cache argument of `model.forward`: `cache` from transformers 5.x (where
    `past_key_values` is deprecated, to be removed in 5.40), `past_key_values` before."""
    return "cache" if "cache" in _parameters(model) else "past_key_values"


# ------------------------------------------------------------------ the prefix cache

DEFAULT_CACHE_ENTRIES = 4096
DEFAULT_CACHE_TOKENS = 65536
CACHE_OPTIONS = ("prefix_cache", "cache_entries", "cache_tokens")

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (keys, values), each (kv heads, length, head dim)


@dataclass
class CacheEntry:
    """One cached sequence: its token ids, each model's KV over all of them, and (PRM) one value
    per position already read from them (see `HFReward`)."""

    ids: tuple[int, ...]
    kv: list[KV]  # one per model (the policy; the PRM; the PRM and its reference)
    values: torch.Tensor | None = None


class PrefixCache:
    """A bounded LRU of `CacheEntry`s keyed by token ids. `lookup` returns the entry with the
    longest key that is a prefix of (or equal to) the ids asked for; a hit moves it to the back.
    Bounded by entries and by tokens (the sum of the keys' lengths); the least recently used go.
    A lookup tries only the key lengths of entries that start like the ids asked for (their first
    `GROUP` tokens: in a search, the same problem)."""

    GROUP = 16

    def __init__(self, max_entries: int = DEFAULT_CACHE_ENTRIES, max_tokens: int = DEFAULT_CACHE_TOKENS):
        self.max_entries, self.max_tokens = max_entries, max_tokens
        self.entries: OrderedDict[tuple[int, ...], CacheEntry] = OrderedDict()
        # first GROUP tokens (all of a shorter key) -> key length -> entries of that length
        self._lengths: dict[tuple[int, ...], dict[int, int]] = {}
        self.tokens = 0
        self.hits = self.misses = self.hit_tokens = self.query_tokens = 0

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, ids: list[int] | tuple[int, ...]) -> CacheEntry | None:
        ids = tuple(ids)
        lengths = [n for k in range(1, self.GROUP) if (short := self._lengths.get(ids[:k])) for n in short]
        lengths += [n for n in self._lengths.get(ids[: self.GROUP], ()) if n <= len(ids)]
        for n in sorted(lengths, reverse=True):
            entry = self.entries.get(ids[:n])
            if entry is not None:
                self.entries.move_to_end(entry.ids)
                return entry
        return None

    def count(self, asked: int, reused: int) -> None:
        """Statistics: `asked` tokens looked up, `reused` of them not computed."""
        self.query_tokens += asked
        self.hit_tokens += reused
        if reused:
            self.hits += 1
        else:
            self.misses += 1

    def insert(self, entry: CacheEntry) -> None:
        if not entry.ids or len(entry.ids) > self.max_tokens or self.max_entries < 1:
            return
        old = self.entries.pop(entry.ids, None)
        if old is not None:
            self._forget(old)
        self.entries[entry.ids] = entry
        group = self._lengths.setdefault(entry.ids[: self.GROUP], {})
        group[len(entry.ids)] = group.get(len(entry.ids), 0) + 1
        self.tokens += len(entry.ids)
        while len(self.entries) > self.max_entries or self.tokens > self.max_tokens:
            self._forget(self.entries.popitem(last=False)[1])

    def _forget(self, entry: CacheEntry) -> None:
        self.tokens -= len(entry.ids)
        n, key = len(entry.ids), entry.ids[: self.GROUP]
        group = self._lengths[key]
        group[n] -= 1
        if not group[n]:
            del group[n]
            if not group:
                del self._lengths[key]

    def clear(self) -> None:
        self.entries.clear()
        self._lengths.clear()
        self.tokens = 0

    def stats(self) -> dict[str, int]:
        return {"entries": len(self.entries), "tokens": self.tokens, "max_entries": self.max_entries,
                "max_tokens": self.max_tokens, "hits": self.hits, "misses": self.misses,
                "query_tokens": self.query_tokens, "hit_tokens": self.hit_tokens}


def cache_settings(cfg: EngineConfig, role: str) -> tuple[int, int] | None:
    """(max entries, max tokens) of the prefix cache from `cfg.options`, None when it is off;
    bad input -> ConfigError."""
    opts = dict(cfg.options or {})
    unknown = sorted(set(opts) - set(CACHE_OPTIONS))
    if unknown:
        raise ConfigError(f"unknown hf {role} option {unknown[0]!r} (known: {', '.join(CACHE_OPTIONS)})")
    on = opts.get("prefix_cache", True)
    if not isinstance(on, bool):
        raise ConfigError(f"hf {role}: options.prefix_cache must be true or false, got {on!r}")
    sizes = []
    for key, default in (("cache_entries", DEFAULT_CACHE_ENTRIES), ("cache_tokens", DEFAULT_CACHE_TOKENS)):
        value = opts.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"hf {role}: options.{key} must be a positive integer, got {value!r}")
        sizes.append(value)
    return (sizes[0], sizes[1]) if on else None


def _plain_kv_cache(model: Any) -> bool:
    """Whether the model's KV cache is one full-length `DynamicLayer` per layer (what the prefix
    cache can slice and pad); sliding-window or recurrent layers are not."""
    from transformers.cache_utils import DynamicCache, DynamicLayer

    try:
        layers = DynamicCache(config=model.config).layers
    except Exception:  # noqa: BLE001  (an unusual config: no prefix cache rather than no engine)
        return False
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def _make_cache(model: Any, past: list[tuple[KV | None, int]] | None = None) -> Any:
    """A `DynamicCache` for a batch: empty, or each row's first r cached tokens (`past`: per row
    (its entry's KV or None, r)) left-padded to the longest r."""
    from transformers.cache_utils import DynamicCache

    width = max((r for _, r in past), default=0) if past else 0
    if not width:
        return DynamicCache(config=model.config)
    ref = next(kv for kv, r in past if r)  # type: ignore[union-attr]
    layers = []
    for layer, (k0, v0) in enumerate(ref):
        keys = k0.new_zeros((len(past), k0.shape[0], width, k0.shape[2]))
        values = v0.new_zeros((len(past), v0.shape[0], width, v0.shape[2]))
        for row, (kv, r) in enumerate(past):
            if r:
                keys[row, :, width - r :] = kv[layer][0][:, :r]  # type: ignore[index]
                values[row, :, width - r :] = kv[layer][1][:, :r]  # type: ignore[index]
        layers.append((keys, values))
    return DynamicCache(ddp_cache_data=layers)


def _row_kv(cache: Any, row: int, columns: torch.Tensor) -> KV:
    """Row `row`'s KV at the given cache columns (its own tokens, padding left out), copied."""
    return [(layer.keys[row][:, columns], layer.values[row][:, columns]) for layer in cache.layers]


@dataclass
class _Batch:
    """A forward over new tokens after cached prefixes: row i reads its past (its first r_i
    tokens) from the cache, then computes `new[i]`. Layout per row, in cache columns:
    [pad to the longest past][past r_i][pad to the longest new][new n_i]."""

    ids: torch.Tensor  # (rows, new width)
    mask: torch.Tensor  # (rows, past width + new width)
    positions: torch.Tensor  # (rows, new width)
    past: int  # past width

    @classmethod
    def build(cls, new: list[list[int]], cached: list[int], pad_id: int, device: str) -> _Batch:
        past = max(cached, default=0)
        width = max(len(s) for s in new)
        ids = torch.tensor([[pad_id] * (width - len(s)) + s for s in new], device=device)
        mask = torch.tensor([[0] * (past - r) + [1] * r + [0] * (width - len(s)) + [1] * len(s)
                             for s, r in zip(new, cached)], device=device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, past:]
        return cls(ids, mask, positions, past)

    def columns(self, row: int) -> torch.Tensor:
        """The cache columns holding row `row`'s tokens (past and new), in order."""
        return self.mask[row].nonzero()[:, 0]


@dataclass
class _Row:
    """One sample being generated: its prompt, its sampler and the steps written so far."""

    request: int
    prompt: list[int]
    temperature: float
    top_p: float
    max_step_tokens: int
    max_steps: int  # 1 unless to_end
    delimiter: str
    generator: torch.Generator | None
    room: int | None = None  # tokens left in the model's context (None: no limit known)
    steps: list[GeneratedStep] = field(default_factory=list)
    step_ids: list[int] = field(default_factory=list)  # tokens of the step being written
    carry: str = ""  # text after a delimiter inside one token, starts the next step
    done: bool = False
    generated: list[int] = field(default_factory=list)  # every token sampled, across steps
    fed: int = 0  # of those, how many went through the model (their KV is in the batch's cache)
    cached: int = 0  # prompt tokens reused (from the prefix cache, or a sibling's prefill)

    def end_step(self, text: str, finished: bool, rest: str = "") -> None:
        # The context of a step: the prompt and the steps before it (in the KV already, so a
        # later step of a to_end rollout reuses all of it).
        context = len(self.prompt) + len(self.generated) - len(self.step_ids)
        self.steps.append(GeneratedStep(text=self.carry + text, tokens=len(self.step_ids), finished=finished,
                                        prompt_tokens=context, cached_tokens=context if self.steps else self.cached))
        self.step_ids, self.carry = [], rest
        self.done = finished or len(self.steps) >= self.max_steps


class HFPolicy:
    def __init__(self, tokenizer: Any, model: Any, device: str, max_batch: int = 64, name: str = "",
                 prefix_cache: tuple[int, int] | None = (DEFAULT_CACHE_ENTRIES, DEFAULT_CACHE_TOKENS)):
        """`prefix_cache`: (max entries, max tokens) of the KV prefix cache, None for none."""
        self.tokenizer, self.model, self.device = tokenizer, model, device
        self.max_batch = max_batch
        self.name = name
        self.eos_ids = _eos_ids(tokenizer, model)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids)
        self.context = context_length(model)
        self._cache_kw = cache_keyword(model)
        self._logits_kw = {"logits_to_keep": 1} if "logits_to_keep" in _parameters(model) else {}
        self.cache = PrefixCache(*prefix_cache) if prefix_cache and _plain_kv_cache(model) else None
        self._lock = threading.Lock()  # one batch on the model at a time

    @classmethod
    def from_config(cls, cfg: EngineConfig) -> HFPolicy:
        settings = cache_settings(cfg, "policy")
        tokenizer, model, device = _load(cfg, "policy")
        return cls(tokenizer, model, device, cfg.max_batch, name=str(cfg.path), prefix_cache=settings)

    def info(self) -> EngineInfo:
        return EngineInfo(
            kind="hf",
            model=self.name,
            device=self.device,
            extra={"parameters": self.model.num_parameters(), "dtype": str(self.model.dtype), "max_batch": self.max_batch,
                   "prefix_cache": self.cache.stats() if self.cache is not None else None},
        )

    async def generate(self, requests: list[StepRequest]) -> list[list[list[GeneratedStep]]]:
        rows = [row for i, req in enumerate(requests) for row in self._rows(i, req)]
        for start in range(0, len(rows), self.max_batch):
            await asyncio.to_thread(self._run_locked, rows[start : start + self.max_batch])
        out: list[list[list[GeneratedStep]]] = [[] for _ in requests]
        for row in rows:
            out[row.request].append(row.steps)
        return out

    def _rows(self, index: int, req: StepRequest) -> list[_Row]:
        if req.n < 1 or req.max_step_tokens < 1 or req.max_steps < 1:
            raise ValueError(f"bad step request: n={req.n}, max_step_tokens={req.max_step_tokens}, max_steps={req.max_steps}")
        text = render_prompt(self.tokenizer, req.problem, req.steps, req.delimiter)
        prompt = self.tokenizer(text, add_special_tokens=not getattr(self.tokenizer, "chat_template", None)).input_ids
        if self.context is not None and len(prompt) >= self.context:
            # Checked before any tensor is built: a 1 MB problem once asked for a 1.1 TB mask.
            raise PromptTooLong(f"the prompt is {len(prompt)} tokens; the policy reads at most {self.context}")
        room = None if self.context is None else self.context - len(prompt)
        base = req.seed if req.seed is not None else random.randrange(2**62)
        rows = []
        for k in range(req.n):
            gen = None
            if req.temperature > 0:
                gen = torch.Generator(device=self.device)
                gen.manual_seed((base * 1_000_003 + k) % 2**63)
            rows.append(
                _Row(index, prompt, req.temperature, req.top_p, req.max_step_tokens, req.max_steps if req.to_end else 1,
                     req.delimiter, gen, room)
            )
        return rows

    def _run_locked(self, rows: list[_Row]) -> None:
        with self._lock, torch.inference_mode():
            self._run(rows)

    def _run(self, rows: list[_Row]) -> None:
        """One prefill per distinct prompt (after its cached prefix), then one token per live row
        per step through the KV cache; prompts and unfinished samples go to the prefix cache."""
        groups: dict[tuple[int, ...], list[_Row]] = {}
        for row in rows:
            groups.setdefault(tuple(row.prompt), []).append(row)
        prompts = list(groups)
        hits: list[tuple[CacheEntry | None, int]] = []
        for p in prompts:
            entry = self.cache.lookup(p) if self.cache is not None else None
            reused = min(len(entry.ids), len(p) - 1) if entry is not None else 0  # the last token starts the decode
            hits.append((entry, reused))
            if self.cache is not None:
                self.cache.count(len(p), reused)
            for j, row in enumerate(groups[p]):
                row.cached = reused if j == 0 else len(p)  # the samples after the first share its prefill
        batch = _Batch.build([list(p[r:]) for p, (_, r) in zip(prompts, hits)], [r for _, r in hits], self.pad_id,
                             self.device)
        cache = _make_cache(self.model, [(e.kv[0] if e is not None else None, r) for e, r in hits])
        out = self.model(input_ids=batch.ids, attention_mask=batch.mask, position_ids=batch.positions, use_cache=True,
                         **{self._cache_kw: cache}, **self._logits_kw)
        cache = _returned_cache(out, self._cache_kw, cache)
        logits = out.logits[:, -1, :].float()
        if self.cache is not None:
            for u, (p, (entry, _)) in enumerate(zip(prompts, hits)):
                if entry is None or entry.ids != p:
                    self.cache.insert(CacheEntry(p, [_row_kv(cache, u, batch.columns(u))]))
        rows = [row for p in prompts for row in groups[p]]
        source = [u for u, p in enumerate(prompts) for _ in groups[p]]  # the prompt each row decodes from
        mask = batch.mask
        positions = batch.positions[:, -1:]
        if len(rows) > len(prompts):
            index = torch.tensor(source, device=self.device)
            cache.batch_select_indices(index)
            logits, mask, positions = logits[index], mask[index], positions[index]
        prefilled = mask.shape[1]
        while True:
            live = [not r.done for r in rows]
            next_ids = [self._sample(r, logits[i]) if alive else self.pad_id for i, (r, alive) in enumerate(zip(rows, live))]
            for r, tok, alive in zip(rows, next_ids, live):
                if alive:
                    self._advance(r, tok)
            if all(r.done for r in rows):
                break
            for r, alive in zip(rows, live):
                r.fed += alive
            ids = torch.tensor(next_ids, device=self.device)[:, None]
            mask = torch.cat([mask, torch.ones_like(ids)], dim=1)
            positions = positions + 1
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                             **{self._cache_kw: cache})
            cache = _returned_cache(out, self._cache_kw, cache)
            logits = out.logits[:, -1, :].float()
        if self.cache is not None:
            # An unfinished sample's KV (prompt + its step) is its children's prompt, short of the delimiter
            # tokens it did not feed back.
            for i, (row, u) in enumerate(zip(rows, source)):
                if row.fed and not (row.steps and row.steps[-1].finished):
                    columns = torch.cat([batch.columns(u), torch.arange(prefilled, prefilled + row.fed, device=self.device)])
                    self.cache.insert(CacheEntry(tuple(row.prompt) + tuple(row.generated[: row.fed]),
                                                 [_row_kv(cache, i, columns)]))

    @staticmethod
    def _sample(row: _Row, logits: torch.Tensor) -> int:
        if row.temperature <= 0:
            return int(logits.argmax())
        probs = torch.softmax(logits / row.temperature, dim=-1)
        if row.top_p < 1.0:
            sorted_p, order = probs.sort(descending=True)
            keep = sorted_p.cumsum(-1) - sorted_p < row.top_p  # smallest set with mass >= top_p
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_p[keep])
        return int(torch.multinomial(probs, 1, generator=row.generator))

    def _advance(self, row: _Row, tok: int) -> None:
        row.step_ids.append(tok)
        row.generated.append(tok)
        if row.room is not None:
            row.room -= 1
        if tok in self.eos_ids:
            row.end_step(self._decode(row.step_ids[:-1]), finished=True)
            return
        text = self._decode(row.step_ids)
        full = row.carry + text
        if row.delimiter in full:
            step, rest = full.split(row.delimiter, 1)
            row.carry = ""
            row.end_step(step, finished=_has_answer(step), rest=rest)
        elif len(row.step_ids) >= row.max_step_tokens:
            row.end_step(text, finished=_has_answer(full))
        if row.room is not None and row.room <= 0 and not row.done:  # the context is full: the solution ends here
            if row.step_ids:
                row.end_step(self._decode(row.step_ids), finished=_has_answer(row.carry + self._decode(row.step_ids)))
            row.done = True

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def _returned_cache(out: Any, keyword: str, passed: Any) -> Any:
    """The KV cache after a forward: the output's, or the one passed (updated in place; heads
    such as token classification do not return it)."""
    returned = getattr(out, keyword, None)
    if returned is None:
        returned = getattr(out, "past_key_values", None)
    return returned if returned is not None else passed


def _has_answer(text: str) -> bool:
    return extract_answer(text) is not None


def _eos_ids(tokenizer: Any, model: Any) -> set[int]:
    ids = set()
    for source in (getattr(model, "generation_config", None), model.config):
        eos = getattr(source, "eos_token_id", None)
        if eos is not None:
            ids.update(eos if isinstance(eos, list) else [eos])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


@dataclass
class _Scored:
    """One PRM forward over a batch (see `HFReward._forward`)."""

    logits: list[torch.Tensor]
    entries: list[CacheEntry | None]
    reused: list[int]
    batch: _Batch
    caches: list[Any]


class HFReward:
    """A PRM on transformers: Math-Shepherd (label-token logits at each step tag), a two-class
    token head (`classifier`; built directly with such a model, `from_config` does not load one)
    or implicit (a second forward pass through the reference model; see `PRMConvention`).

    With the prefix cache each scored sequence keeps both its KV (per model) and its values per
    position: the reward read at each position (math-shepherd, classifier), or the implicit
    PRM's cumulative log ratio c[j] = sum of log pi/pi_ref over tokens 1..j, so the scores of the
    steps in a cached prefix are read back rather than recomputed."""

    def __init__(self, tokenizer: Any, model: Any, device: str, conv: PRMConvention, max_batch: int = 64, name: str = "",
                 reference: Any = None,
                 prefix_cache: tuple[int, int] | None = (DEFAULT_CACHE_ENTRIES, DEFAULT_CACHE_TOKENS)):
        """`prefix_cache`: (max entries, max tokens) of the KV prefix cache, None for none."""
        self.tokenizer, self.model, self.device = tokenizer, model, device
        self.max_batch = max_batch
        self.name = name
        self.conv = conv
        self.reference = reference
        if conv.style == "implicit" and reference is None:
            raise ValueError("an implicit PRM needs its reference model")
        if conv.style == "math-shepherd":
            self.label_ids = [int(conv.good_token_id), int(conv.bad_token_id)]  # type: ignore[arg-type]
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.context = context_length(model)
        self.models = [model] if reference is None or conv.style != "implicit" else [model, reference]
        plain = prefix_cache and all(_plain_kv_cache(m) for m in self.models)
        self.cache = PrefixCache(*prefix_cache) if plain else None  # type: ignore[misc]
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: EngineConfig) -> HFReward:
        settings = cache_settings(cfg, "reward")
        tokenizer, model, device = _load(cfg, "reward")
        conv = load_prm_convention(cfg.path, tokenizer)  # type: ignore[arg-type]
        if conv.style == "classifier":
            raise ConfigError(f"hf reward: {cfg.path} is a {conv.style!r} PRM; the hf engine serves math-shepherd and "
                              "implicit PRMs (use the vllm engine)")
        reference = None
        if conv.style == "implicit":
            ref_tok, reference, _ = _load(dataclasses.replace(cfg, path=conv.reference), "reward reference")
            if ref_tok.get_vocab() != tokenizer.get_vocab():
                raise ConfigError(f"hf reward: reference {conv.reference} has another tokenizer than {cfg.path}")
        return cls(tokenizer, model, device, conv, cfg.max_batch, name=str(cfg.path), reference=reference,
                   prefix_cache=settings)

    def info(self) -> EngineInfo:
        return EngineInfo(
            kind="hf",
            model=self.name,
            device=self.device,
            extra={"parameters": self.model.num_parameters(), "style": self.conv.style, "max_batch": self.max_batch,
                   "prefix_cache": self.cache.stats() if self.cache is not None else None},
        )

    async def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        out: list[ScoreResult] = []
        for start in range(0, len(requests), self.max_batch):
            out += await asyncio.to_thread(self._score_locked, requests[start : start + self.max_batch])
        return out

    def _score_locked(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        with self._lock, torch.inference_mode():
            if self.conv.style == "implicit":
                return self._score_implicit(requests)
            return self._score(requests)

    def _check(self, seqs: list[list[int]]) -> None:
        if self.context is not None:
            for s in seqs:
                if len(s) > self.context:
                    raise PromptTooLong(f"the PRM input is {len(s)} tokens; the PRM reads at most {self.context}")
        if any(not s for s in seqs):
            raise ValueError("an empty PRM input")

    def _hit(self, s: list[int], back: int) -> tuple[CacheEntry | None, int]:
        """The cache entry `s` reuses and how many of its tokens (`back`: how many of an entry's
        last tokens are computed again, 1 where a position's value needs the logits before it)."""
        entry = self.cache.lookup(s) if self.cache is not None else None
        r = max(0, min(len(entry.ids) - back, len(s) - 1)) if entry is not None else 0
        return (entry if r else None), r

    def _forward(self, seqs: list[list[int]], hits: list[tuple[CacheEntry | None, int]]) -> _Scored:
        """Every model's logits over each sequence's uncached tokens, after its cached prefix
        (`hits`, from `_hit`). Returns (logits per model, shape (rows, new width, ...),
        left-padded; the entry each row reused; tokens reused per row; the batch; the models' KV
        caches after it, when caching)."""
        self._check(seqs)
        entries = [e for e, _ in hits]
        reused = [r for _, r in hits]
        batch = _Batch.build([s[r:] for s, r in zip(seqs, reused)], reused, self.pad_id, self.device)
        logits, caches = [], []
        for m, model in enumerate(self.models):
            kw: dict[str, Any] = {"use_cache": False}
            if self.cache is not None:
                cache = _make_cache(model, [(e.kv[m] if e is not None else None, r) for e, r in zip(entries, reused)])
                kw = {"use_cache": True, cache_keyword(model): cache}
            out = model(input_ids=batch.ids, attention_mask=batch.mask, position_ids=batch.positions, **kw)
            logits.append(out.logits)
            if self.cache is not None:
                caches.append(_returned_cache(out, cache_keyword(model), kw[cache_keyword(model)]))
        return _Scored(logits, entries, reused, batch, caches)

    def _remember(self, seqs: list[list[int]], run: _Scored, values: list[torch.Tensor]) -> None:
        """Counts what each sequence reused, and caches its KV (every model's) and its values per position."""
        if self.cache is None:
            return
        for i, (s, r, v) in enumerate(zip(seqs, run.reused, values)):
            self.cache.count(len(s), r)
            columns = run.batch.columns(i)
            self.cache.insert(CacheEntry(tuple(s), [_row_kv(c, i, columns) for c in run.caches], v))

    def _score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        seqs = [self.conv.input_ids(self.tokenizer, r.problem, r.steps) for r in requests]
        heads = []
        for r, s in zip(requests, seqs):
            head = self.conv.input_ids(self.tokenizer, r.problem, [])
            heads.append(len(head) if s[: len(head)] == head else 0)  # not with a chat template's turn end
        values, reused = self._values(seqs, heads)
        results = []
        for r, s, per_position, cached in zip(requests, seqs, values, reused):
            tags = torch.tensor(s, device=per_position.device) == self.conv.step_tag_id
            rewards = per_position[tags].tolist()
            if len(rewards) != len(r.steps):  # a step that itself holds the tag text
                raise ValueError(f"PRM input has {len(rewards)} step tags for {len(r.steps)} steps")
            results.append(ScoreResult(rewards=rewards, tokens=len(s), cached_tokens=cached,
                                       prefix_tokens=self.conv.prefix_tokens(s)))
        return results

    def _score_implicit(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        # q_k sums the log ratios through step k's delimiter: a causal read of that prefix (both
        # models read it, hence 2x its length).
        return [ScoreResult(rewards=torch.sigmoid(self.conv.beta * q).tolist(), tokens=2 * n, cached_tokens=2 * r,
                            prefix_tokens=[2 * e for e in ends])
                for q, n, r, ends in self._implicit(requests)]

    def q_values(self, requests: list[ScoreRequest]) -> list[tuple[torch.Tensor, int]]:
        """An implicit PRM's (q_k per step before beta and the sigmoid, input length) per request."""
        return [(q, n) for q, n, _, _ in self._implicit(requests)]

    def _implicit(self, requests: list[ScoreRequest]) -> list[tuple[torch.Tensor, int, int, list[int]]]:
        """(q_k per step, input length, tokens reused per model, each step's end) per request."""
        spans = [self.conv.step_spans(self.tokenizer, r.problem, r.steps) for r in requests]
        values, reused = self._values([s[0] for s in spans], [first for _, first, _ in spans])
        return [(cumulative_q(cum, first, ends), len(seq), cached, ends)
                for (seq, first, ends), cum, cached in zip(spans, values, reused)]

    def _values(self, seqs: list[list[int]], heads: list[int] | None = None) -> tuple[list[torch.Tensor], list[int]]:
        """Each sequence's values per position (see the class) and the tokens it reused.

        `heads`: the length of each sequence's head (the problem before its first step). Heads
        that two or more uncached sequences of the batch share are computed once first (and
        cached: the first step's siblings share them); the first sequence of each such group
        reports its head as computed, the others as reused."""
        back = 1 if self.conv.style == "implicit" else 0
        charge: dict[int, int] = {}
        if heads is not None and self.cache is not None:
            groups: dict[tuple[int, ...], list[int]] = {}
            for i, (s, h) in enumerate(zip(seqs, heads)):
                entry = self.cache.lookup(s)
                if h > back + 1 and h < len(s) and (entry is None or len(entry.ids) < h):
                    groups.setdefault(tuple(s[:h]), []).append(i)
            shared = [(head, rows) for head, rows in groups.items() if len(rows) > 1]
            if shared:
                _, done = self._values([list(head) for head, _ in shared])
                for (head, rows), r in zip(shared, done):
                    charge[rows[0]] = len(head) - r - back  # what computing the head cost, on the first of its rows
        hits = [self._hit(s, back) for s in seqs]  # after the heads went into the cache
        if self.cache is None:
            return self._forward_values(seqs, hits, charge)
        values: list[torch.Tensor] = [torch.empty(0)] * len(seqs)
        reused = [0] * len(seqs)
        for group in self._groups([len(s) - r for s, (_, r) in zip(seqs, hits)]):
            v, r = self._forward_values([seqs[i] for i in group], [hits[i] for i in group],
                                        {j: charge[i] for j, i in enumerate(group) if i in charge})
            for j, i in enumerate(group):
                values[i], reused[i] = v[j], r[j]
        return values, reused

    @staticmethod
    def _groups(new: list[int]) -> list[list[int]]:
        """The batch split by how many tokens each row computes (`new`: its uncached part), so
        that a few long rows (first steps, cache misses) do not pad many short ones: rows in order
        of that length, a new group where padding to the next row would cost over half again the
        group's real tokens."""
        groups: list[list[int]] = []
        real = 0
        for i in sorted(range(len(new)), key=new.__getitem__):
            if groups and len(groups[-1]) >= 4 and new[i] * (len(groups[-1]) + 1) > 1.5 * (real + new[i]):
                groups.append([])
                real = 0
            if not groups:
                groups.append([])
            groups[-1].append(i)
            real += new[i]
        return groups

    def _forward_values(self, seqs: list[list[int]], hits: list[tuple[CacheEntry | None, int]],
                        charge: dict[int, int]) -> tuple[list[torch.Tensor], list[int]]:
        run = self._forward(seqs, hits)
        values = []
        if self.conv.style == "implicit":
            prm, ref = run.logits
            ratio = _new_logprobs(prm, run.batch.ids) - _new_logprobs(ref, run.batch.ids)  # column c scores new token c + 1
            for i, (seq, entry, cached) in enumerate(zip(seqs, run.entries, run.reused)):
                n = len(seq) - cached  # new tokens; the first one's ratio is in the entry (or it is token 0)
                new = ratio[i, ratio.shape[1] - (n - 1) :] if n > 1 else ratio.new_zeros(0)
                head = entry.values[: cached + 1] if entry is not None else ratio.new_zeros(1)  # type: ignore[index]
                values.append(torch.cat([head, head[-1] + new.cumsum(0)]))
        else:
            logits = run.logits[0]
            if self.conv.style == "classifier":
                good = logits.float().softmax(-1)[..., self.conv.good_label]
            else:
                good = logits[..., self.label_ids].float().softmax(-1)[..., 0]
            for i, (s, entry, cached) in enumerate(zip(seqs, run.entries, run.reused)):
                new = good[i, good.shape[1] - (len(s) - cached) :]
                values.append(torch.cat([entry.values[:cached], new]) if entry is not None else new.clone())  # type: ignore[index]
        self._remember(seqs, run, values)
        return values, [max(0, r - charge.get(i, 0)) for i, r in enumerate(run.reused)]


def _new_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log p(token c + 1 | ...) from the logits at column c, shape (rows, width - 1), float32."""
    return logits[:, :-1].float().log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]


def token_logprobs(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log p(token j | tokens before j) for j >= 1, shape (batch, length - 1), in float32."""
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    return logits.log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]


def implicit_q(ratio: torch.Tensor, first: int, ends: list[int]) -> torch.Tensor:
    """q_k = sum of the per-token log ratios over tokens first .. ends[k]-1 (`ratio[j]` scores
    token j+1, as `token_logprobs` returns)."""
    return cumulative_q(torch.cat([ratio.new_zeros(1), ratio.cumsum(0)]), first, ends)


def cumulative_q(total: torch.Tensor, first: int, ends: list[int]) -> torch.Tensor:
    """q_k from `total[j]` = the summed log ratio of tokens 1 .. j (total[0] = 0)."""
    first = max(first, 1)  # token 0 has no prediction
    return torch.stack([total[e - 1] - total[first - 1] for e in ends]) if ends else total.new_zeros(0)

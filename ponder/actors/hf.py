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
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import threading
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


def cache_keyword(model: Any) -> str:
    """The KV-cache argument of `model.forward`: `cache` from transformers 5.x (where
    `past_key_values` is deprecated, to be removed in 5.40), `past_key_values` before."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


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

    def end_step(self, text: str, finished: bool, rest: str = "") -> None:
        self.steps.append(GeneratedStep(text=self.carry + text, tokens=len(self.step_ids), finished=finished))
        self.step_ids, self.carry = [], rest
        self.done = finished or len(self.steps) >= self.max_steps


class HFPolicy:
    def __init__(self, tokenizer: Any, model: Any, device: str, max_batch: int = 64, name: str = ""):
        self.tokenizer, self.model, self.device = tokenizer, model, device
        self.max_batch = max_batch
        self.name = name
        self.eos_ids = _eos_ids(tokenizer, model)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.eos_ids)
        self.context = context_length(model)
        self._cache_kw = cache_keyword(model)
        self._lock = threading.Lock()  # one batch on the model at a time

    @classmethod
    def from_config(cls, cfg: EngineConfig) -> HFPolicy:
        tokenizer, model, device = _load(cfg, "policy")
        return cls(tokenizer, model, device, cfg.max_batch, name=str(cfg.path))

    def info(self) -> EngineInfo:
        return EngineInfo(
            kind="hf",
            model=self.name,
            device=self.device,
            extra={"parameters": self.model.num_parameters(), "dtype": str(self.model.dtype), "max_batch": self.max_batch},
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
        """Left-padded prefill, then one token per live row per step through the KV cache."""
        width = max(len(r.prompt) for r in rows)
        ids = torch.tensor([[self.pad_id] * (width - len(r.prompt)) + r.prompt for r in rows], device=self.device)
        mask = torch.tensor([[0] * (width - len(r.prompt)) + [1] * len(r.prompt) for r in rows], device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = None
        while True:
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                             **{self._cache_kw: cache})
            cache = getattr(out, self._cache_kw)
            logits = out.logits[:, -1, :].float()
            next_ids = [self._sample(r, logits[i]) if not r.done else self.pad_id for i, r in enumerate(rows)]
            for r, tok in zip(rows, next_ids):
                if not r.done:
                    self._advance(r, tok)
            if all(r.done for r in rows):
                return
            ids = torch.tensor(next_ids, device=self.device)[:, None]
            mask = torch.cat([mask, torch.ones_like(ids)], dim=1)
            positions = positions[:, -1:] + 1

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


class HFReward:
    """A PRM on transformers: Math-Shepherd (label-token logits at each step tag) or implicit
    (a second forward pass through the reference model; see `PRMConvention`)."""

    def __init__(self, tokenizer: Any, model: Any, device: str, conv: PRMConvention, max_batch: int = 64, name: str = "",
                 reference: Any = None):
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
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, cfg: EngineConfig) -> HFReward:
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
        return cls(tokenizer, model, device, conv, cfg.max_batch, name=str(cfg.path), reference=reference)

    def info(self) -> EngineInfo:
        return EngineInfo(
            kind="hf",
            model=self.name,
            device=self.device,
            extra={"parameters": self.model.num_parameters(), "style": self.conv.style, "max_batch": self.max_batch},
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

    def _batch(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.context is not None:
            for s in seqs:
                if len(s) > self.context:
                    raise PromptTooLong(f"the PRM input is {len(s)} tokens; the PRM reads at most {self.context}")
        width = max(len(s) for s in seqs)
        ids = torch.tensor([s + [self.pad_id] * (width - len(s)) for s in seqs], device=self.device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=self.device)
        return ids, mask

    def _score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        seqs = [self.conv.input_ids(self.tokenizer, r.problem, r.steps) for r in requests]
        ids, mask = self._batch(seqs)
        logits = self.model(input_ids=ids, attention_mask=mask).logits
        good = logits[..., self.label_ids].float().softmax(-1)[..., 0]
        results = []
        for i, (r, s) in enumerate(zip(requests, seqs)):
            rewards = good[i][(ids[i] == self.conv.step_tag_id) & (mask[i] == 1)].tolist()
            if len(rewards) != len(r.steps):  # a step that itself holds the tag text
                raise ValueError(f"PRM input has {len(rewards)} step tags for {len(r.steps)} steps")
            results.append(ScoreResult(rewards=rewards, tokens=len(s)))
        return results

    def _score_implicit(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        return [ScoreResult(rewards=torch.sigmoid(self.conv.beta * q).tolist(), tokens=2 * n) for q, n in self.q_values(requests)]

    def q_values(self, requests: list[ScoreRequest]) -> list[tuple[torch.Tensor, int]]:
        """An implicit PRM's (q_k per step before beta and the sigmoid, input length) per request."""
        spans = [self.conv.step_spans(self.tokenizer, r.problem, r.steps) for r in requests]
        ids, mask = self._batch([s[0] for s in spans])
        ratio = token_logprobs(self.model, ids, mask) - token_logprobs(self.reference, ids, mask)
        return [(implicit_q(ratio[i], first, ends), len(seq)) for i, (seq, first, ends) in enumerate(spans)]


def token_logprobs(model: Any, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log p(token j | tokens before j) for j >= 1, shape (batch, length - 1), in float32."""
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    return logits.log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]


def implicit_q(ratio: torch.Tensor, first: int, ends: list[int]) -> torch.Tensor:
    """q_k = sum of the per-token log ratios over tokens first .. ends[k]-1 (`ratio[j]` scores
    token j+1, as `token_logprobs` returns)."""
    total = torch.cat([ratio.new_zeros(1), ratio.cumsum(0)])  # total[j] = sum of ratio[:j]
    first = max(first, 1)  # token 0 has no prediction
    return torch.stack([total[e - 1] - total[first - 1] for e in ends]) if ends else ratio.new_zeros(0)

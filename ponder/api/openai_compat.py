"""The OpenAI chat-completions dialect: models, the problem of a conversation, and a search's
events and result as a `chat.completion` or as `chat.completion.chunk`s.

- Models: `ponder` is `auto` (the scheduler picks strategy and budget share by difficulty);
  `ponder/<strategy>` is that strategy (`GET /v1/models` lists them).
- `usage`: `completion_tokens` are the policy tokens the whole search generated (every sample,
  not only the chosen solution), `prompt_tokens` the PRM tokens it scored, `total_tokens` their
  sum; `completion_tokens_details.reasoning_tokens` is the part of the policy tokens outside the
  chosen solution. ponder's own books (cost, generations, stop reason) are under `ponder`.
- Streaming: the search's progress arrives as `delta.reasoning_content` lines (the field vLLM
  and DeepSeek use for reasoning), then the chosen solution as `delta.content`, one step a chunk.
"""

from __future__ import annotations

import time
from typing import Any

from ponder.api.requests import BadRequest, Message
from ponder.search import registry

AUTO_MODEL = "ponder"
PREFIX = "ponder/"


def model_ids() -> list[str]:
    from ponder.jobs.spec import load_strategies

    load_strategies()
    return [AUTO_MODEL] + [PREFIX + n for n in registry.names() if n != "auto"]


def models_list() -> dict[str, Any]:
    now = int(time.time())
    return {"object": "list", "data": [{"id": m, "object": "model", "created": now, "owned_by": "ponder"}
                                       for m in model_ids()]}


def strategy_of(model: str, strategy: str | None) -> str:
    if model not in model_ids():
        raise BadRequest(f"the model {model!r} does not exist (GET /v1/models lists them)", status=404,
                         param="model", code="model_not_found")
    implied = "auto" if model == AUTO_MODEL else model[len(PREFIX):]
    if strategy is not None and model != AUTO_MODEL and strategy != implied:
        raise BadRequest(f"model {model!r} is strategy {implied!r}; the strategy field says {strategy!r}",
                         param="strategy")
    return strategy or implied


def problem_of(messages: list[Message]) -> str:
    """The last user message is the problem (earlier turns and system prompts do not steer a
    search over the shipped models)."""
    for m in reversed(messages):
        if m.role == "user":
            content = m.content
            if isinstance(content, list):  # content parts: the text ones
                content = "".join(p.get("text", "") for p in content if p.get("type") == "text")
            if not content or not str(content).strip():
                raise BadRequest("the last user message is empty", param="messages")
            return str(content)
    raise BadRequest("no user message: the last user message is the problem", param="messages")


def solution_text(result: dict[str, Any]) -> str:
    return "\n\n".join(result.get("trajectory") or [])


def finish_reason(result: dict[str, Any]) -> str:
    return "stop" if result.get("answer") is not None else "length"


def usage(result: dict[str, Any]) -> dict[str, Any]:
    c = result.get("compute") or {}
    policy, prm = int(c.get("policy_tokens", 0)), int(c.get("prm_tokens", 0))
    chosen = sum(1 for _ in result.get("trajectory") or [])  # steps; their tokens are below
    chosen_tokens = next((int(cand["tokens"]) for cand in result.get("candidates") or []
                          if cand.get("steps") == result.get("trajectory")), 0) if chosen else 0
    return {"prompt_tokens": prm, "completion_tokens": policy, "total_tokens": policy + prm,
            "completion_tokens_details": {"reasoning_tokens": max(0, policy - chosen_tokens)},
            "cost": c.get("cost", 0.0)}


def ponder_extension(result: dict[str, Any], notice: str | None = None) -> dict[str, Any]:
    return {"answer": result.get("answer"), "strategy": result.get("strategy"),
            "stop_reason": result.get("stop_reason"), "compute": result.get("compute"),
            "budget": (result.get("meta") or {}).get("budget"), "correct": result.get("correct"), "notice": notice}


def completion(cid: str, model: str, result: dict[str, Any], notice: str | None = None) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": solution_text(result)},
                     "finish_reason": finish_reason(result), "logprobs": None}],
        "usage": usage(result),
        "ponder": ponder_extension(result, notice),
    }


def chunk(cid: str, model: str, created: int, delta: dict[str, Any] | None = None,
          finish: str | None = None, use: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                           "choices": [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish,
                                                                 "logprobs": None}]}
    if use is not None:
        out["usage"] = use
    return out


def progress_line(p: dict[str, Any]) -> str:
    tokens = p.get("tokens") or {}
    best = f"best {p['best_answer']} ({p['best_score']:.2f})" if p.get("best_answer") is not None else "no answer yet"
    budget = f" of {p['budget']:.0f}" if p.get("budget") else ""
    return (f"depth {p.get('depth', 0)}, {p.get('expansions', 0)} expansions, {best}, "
            f"{tokens.get('cost', 0):.0f}{budget} tokens\n")

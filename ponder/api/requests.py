"""Request bodies of the HTTP service and their checks: every bad input becomes one `BadRequest`
(an HTTP status and one line for the client) before anything runs.

The search checks (strategy, budget, parameters) are the job core's and the CLI's: a request is
refused for exactly what `ponder eval` refuses, plus the service's own limits (`api.*`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from ponder.config import ApiConfig, Budget, ConfigError, PonderConfig
from ponder.jobs.records import one_line
from ponder.search import registry


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, param: str | None = None, code: str | None = None):
        super().__init__(one_line(message))
        self.message = one_line(message)
        self.status = status
        self.param = param
        self.code = code


def parse_json(body: bytes) -> Any:
    if not body.strip():
        raise BadRequest("the request body is empty: send a JSON object")
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise BadRequest("the request body is not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise BadRequest(f"the request body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None


def validate(model: type[BaseModel], data: Any) -> Any:
    if not isinstance(data, dict):
        raise BadRequest(f"the request body must be a JSON object, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        if err["type"] == "extra_forbidden":
            raise BadRequest(f"unknown field {where!r}", param=where) from None
        if err["type"] == "missing":
            raise BadRequest(f"missing field {where!r}", param=where) from None
        raise BadRequest(f"field {where!r}: {err['msg']}", param=where) from None


# ---------------------------------------------------------------------------- bodies


class SolveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    problem: str
    strategy: str | None = None
    budget: str | int | None = None
    params: dict[str, Any] | None = None
    deadline_s: float | None = None
    priority: int = 0
    stream: bool = False
    answer: str | int | float | None = None  # a reference answer: the result is graded
    id: str | None = None  # the search's random choices are keyed by it: the same id, the same search


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = False


class ChatBody(BaseModel):
    """OpenAI's chat completion request: the fields a client may send are accepted (sampling
    ones are the deployment's, so they are ignored), a typo is refused; ponder's extensions
    (`budget`, `strategy`, `params`, `deadline_s`, `priority`) come through `extra_body`."""

    model_config = ConfigDict(extra="forbid")

    model: str
    messages: list[Message]
    stream: bool = False
    stream_options: StreamOptions | None = None
    reasoning_effort: str | None = None
    n: int | None = None
    budget: str | int | None = None
    strategy: str | None = None
    params: dict[str, Any] | None = None
    deadline_s: float | None = None
    priority: int = 0
    seed: int | None = None  # the same seed, the same search (its random choices are keyed by it)
    # Standard fields ponder accepts and does not use.
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    user: str | None = None
    stop: str | list[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, Any] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    parallel_tool_calls: bool | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    response_format: dict[str, Any] | None = None
    service_tier: str | None = None


class JobBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    dataset: str | None = None  # a path the server reads, or arith:N
    rows: list[Any] | None = None  # an uploaded dataset: objects with `problem` (and `answer`, `id`, `level`)
    strategies: list[str] | None = None
    budgets: list[str | int] | None = None
    params: dict[str, Any] | None = None
    job_budget: str | int | None = None
    name: str = ""
    max_attempts: int | None = None
    limit: int | None = None


# ---------------------------------------------------------------------------- search checks


@dataclass
class SearchArgs:
    problem: str
    strategy: str
    budget: Budget
    params: dict[str, Any]  # complete: the config's search.params for its default strategy, merged
    deadline_s: float | None
    priority: int


def check_search(config: PonderConfig, problem: str, strategy: str | None, budget: str | int | None,
                 params: dict[str, Any] | None, deadline_s: float | None, priority: int) -> SearchArgs:
    api = config.api
    text = problem.strip()
    if not text:
        raise BadRequest("the problem is empty", param="problem")
    if len(problem) > api.max_problem_chars:
        raise BadRequest(f"the problem is {len(problem)} characters; this server takes at most "
                         f"{api.max_problem_chars} (api.max_problem_chars)", param="problem")
    from ponder.jobs.spec import load_strategies

    load_strategies()
    name = strategy or config.search.strategy
    try:
        strat = registry.get(name)
    except registry.UnknownStrategy as e:
        raise BadRequest(str(e), param="strategy") from None
    b = check_budget(api, budget if budget is not None else config.search.budget)
    given = dict(params or {})
    merged = {**config.search.params, **given} if name == config.search.strategy else given
    try:
        strat.make_config(merged, n=b.n)
    except (TypeError, ValueError) as e:
        raise BadRequest(f"{name}: {e}", param="params") from None
    if deadline_s is not None and not (0 < deadline_s <= api.max_deadline_s):
        raise BadRequest(f"deadline_s must be in (0, {api.max_deadline_s:g}], got {deadline_s}", param="deadline_s")
    if not -1000 <= priority <= 1000:
        raise BadRequest(f"priority must be in -1000..1000 (lower runs first), got {priority}", param="priority")
    return SearchArgs(problem, name, b, merged, deadline_s, priority)


def check_budget(api: ApiConfig, spec: str | int) -> Budget:
    if isinstance(spec, bool):
        raise BadRequest("budget must be a token count like 4096 or 8k, or a width like n=16", param="budget")
    try:
        b = Budget.parse(spec)
    except ConfigError as e:
        raise BadRequest(str(e), param="budget") from None
    if not math.isinf(b.tokens) and b.tokens > api.max_budget_tokens:
        raise BadRequest(f"budget {b.label()} is over this server's limit of {api.max_budget_tokens:g} tokens",
                         param="budget")
    if b.n is not None and b.n > api.max_width:
        raise BadRequest(f"budget width n={b.n} is over this server's limit of n={api.max_width}", param="budget")
    return b


Effort = Literal["low", "medium", "high"]


def effort_budget(api: ApiConfig, effort: str | None, budget: str | int | None) -> str | int | None:
    """OpenAI's `reasoning_effort` as a budget from the config; an explicit budget is the other way
    to say it, and saying both is refused."""
    if effort is None:
        return budget
    if effort not in api.reasoning_effort:
        raise BadRequest(f"reasoning_effort must be low, medium or high, got {effort!r}", param="reasoning_effort")
    if budget is not None:
        raise BadRequest("give either reasoning_effort or budget, not both", param="budget")
    return api.reasoning_effort[effort]

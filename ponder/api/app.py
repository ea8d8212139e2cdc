"""The HTTP service: a Ray Serve ingress (FastAPI) in front of the scheduler and the job core.

Endpoints: `POST /v1/solve` (native; `stream: true` for server-sent events),
`POST /v1/chat/completions` and `GET /v1/models` (OpenAI-compatible), `/v1/jobs` (submit, list,
status, results, cancel; through the job core), `GET /healthz`, `GET /metrics`.

The ingress holds no search state: admission, priorities, deadlines and cancellation live in
the scheduler actor (`SchedulerAPI.stream`), which every ingress replica shares, so Serve can
scale the ingress freely. A request whose client goes away is cancelled there: no further
engine requests are sent for it and its grant goes back. Errors are OpenAI-shaped JSON
(`{"error": {"message", "type", "param", "code"}}`) with one-line messages.
"""

# No `from __future__ import annotations`: FastAPI must see `Request` itself in the handlers' signatures.
import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from ray import serve

from ponder.api import openai_compat as oai
from ponder.api.auth import load_tokens, tenant_of
from ponder.api.metrics import ServiceMetrics
from ponder.api.requests import (
    BadRequest, ChatBody, JobBody, SolveBody, check_budget, check_search, effort_budget, parse_json, validate,
)
from ponder.config import PonderConfig
from ponder.jobs.records import chosen_rewards, one_line
from ponder.search.types import Problem, SearchResult
from ponder.tasks.forms import prepare

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
          413: "invalid_request_error", 429: "rate_limit_error", 503: "service_unavailable"}

fastapi_app = FastAPI(title="ponder", description="Test-time search over policy and PRM pools", docs_url="/docs")
METRICS = ServiceMetrics()  # one per ingress replica (each is its own process)


@fastapi_app.middleware("http")
async def _observe(request: Request, call_next: Any) -> Response:
    """Latency of every request by route (to the response's start for streams; a stream's whole
    duration is observed again under `<route> stream` when it ends)."""
    t0 = time.perf_counter()
    response = await call_next(request)
    route = request.scope.get("route")
    METRICS.observe(getattr(route, "path", "unmatched"), response.status_code, time.perf_counter() - t0)
    return response


def error_body(message: str, status: int, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": _TYPES.get(status, "server_error"), "param": param,
                      "code": code or status}}


@fastapi_app.exception_handler(BadRequest)
async def _bad_request(request: Request, e: BadRequest) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if e.status == 401 else None
    return JSONResponse(error_body(e.message, e.status, e.param, e.code), status_code=e.status, headers=headers)


class Rejected(Exception):
    def __init__(self, reason: str, retry_after_s: float):
        super().__init__(reason)
        self.reason, self.retry_after_s = reason, retry_after_s


@fastapi_app.exception_handler(Rejected)
async def _rejected(request: Request, e: Rejected) -> JSONResponse:
    return JSONResponse(error_body(e.reason, 429, code="overloaded"), status_code=429,
                        headers={"Retry-After": str(int(max(1, round(e.retry_after_s))))})


def sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def solve_response(result: dict[str, Any], notice: str | None = None) -> dict[str, Any]:
    r = SearchResult.from_dict(result)
    meta = {k: v for k, v in r.meta.items() if k not in ("traceback", "search_id", "tenant")}
    return {
        "id": result["meta"].get("search_id"),
        "answer": r.answer,
        "stop_reason": r.stop_reason,
        "strategy": r.strategy,
        "budget": meta.pop("budget", None),
        "path": [{"step": s, "reward": w} for s, w in zip(r.trajectory, chosen_rewards(r))],
        "candidates": sorted(({"answer": c.answer, "score": c.score, "rewards": c.rewards, "tokens": c.tokens,
                               "finished": c.terminal} for c in r.candidates), key=lambda c: -c["score"]),
        "compute": result["compute"],
        "wall_time_s": r.wall_time,
        "queued_s": meta.pop("queued_s", 0.0),
        "correct": r.correct,
        "error": meta.pop("error", None),
        "notice": notice,  # e.g. the problem was rewritten into the form the model reads
        "meta": meta,
    }


@serve.deployment(name="ponder-ingress")
@serve.ingress(fastapi_app)
class Ingress:
    def __init__(self, config: dict[str, Any], scheduler: str, owner: str, redis_url: str | None,
                 tokens: dict[str, str] | None = None):
        self.config = PonderConfig.from_dict(config)
        self.names = (scheduler, owner)
        self.tokens = tokens if tokens is not None else load_tokens(self.config.api)
        self.redis_url = redis_url
        from ponder.tasks.forms import policy_form

        # A model that reads one problem form (the shipped arithmetic models) gets user text in it.
        self.form = policy_form(self.config.policy)
        self._runner: Any = None
        self._connecting: asyncio.Lock | None = None
        self._jobs: Any = None
        self._worker: Any = None
        self._background: set[asyncio.Task] = set()

    # ----- plumbing

    async def runner(self) -> Any:
        if self._runner is None:
            if self._connecting is None:
                self._connecting = asyncio.Lock()
            async with self._connecting:
                if self._runner is None:
                    from ponder.jobs.spec import runner_config
                    from ponder.scheduler.shards import connect_scheduler

                    runner = await connect_scheduler(runner_config(self.config), *self.names)
                    # The scheduler may have been started by the job worker: serve with this config's limits.
                    await runner.set_admission(self.config.api.admission())
                    self._runner = runner
        return self._runner

    def tenant(self, request: Request) -> str:
        tenant = tenant_of(self.tokens, request.headers.get("authorization"))
        if tenant is None:
            raise BadRequest("missing or invalid API key: send Authorization: Bearer <token>", status=401,
                             code="invalid_api_key")
        return tenant

    async def body(self, request: Request) -> bytes:
        limit = self.config.api.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise BadRequest(f"the request body is {int(declared)} bytes; this server takes at most {limit} "
                             "(api.max_upload_bytes)", status=413)
        data = bytearray()
        async for part in request.stream():
            data += part
            if len(data) > limit:
                raise BadRequest(f"the request body is over {limit} bytes (api.max_upload_bytes)", status=413)
        return bytes(data)

    def cancel_later(self, search_id: str) -> None:
        """Cancel a search from a request that is itself being cancelled (a client that went
        away): a task of its own, so the cancellation cannot cancel it."""
        async def go() -> None:
            try:
                await (await self.runner()).cancel(search_id)
            except Exception:  # the scheduler is restarting: its searches are gone anyway
                pass

        task = asyncio.get_running_loop().create_task(go())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def open_search(self, tenant: str, problem: Problem, strategy: str, budget: Any, params: dict[str, Any],
                          priority: int, deadline_s: float | None, search_id: str,
                          progress: bool) -> tuple[dict[str, Any], AsyncIterator]:
        """Start the search; its first event says whether it was admitted (else `Rejected`).
        Progress events cross Ray only for a client that streams them."""
        runner = await self.runner()
        events = runner.stream(problem, strategy, budget, params, search_id=search_id, tenant=tenant,
                               priority=priority, deadline_s=deadline_s, progress=progress).__aiter__()
        first = await events.__anext__()
        if first["event"] == "rejected":
            raise Rejected(first["reason"], first["retry_after_s"])
        return first, events

    async def result_of(self, events: AsyncIterator, search_id: str) -> dict[str, Any]:
        finished = False
        try:
            async for ev in events:
                if ev["event"] == "result":
                    finished = True
                    return ev["result"]
            raise RuntimeError("the scheduler ended the search without a result")
        finally:
            if not finished:
                self.cancel_later(search_id)

    def observe(self, endpoint: str, code: int, t0: float) -> None:
        METRICS.observe(endpoint, code, time.perf_counter() - t0)

    # ----- health and metrics

    @fastapi_app.get("/healthz")
    async def healthz(self) -> JSONResponse:
        try:
            runner = await asyncio.wait_for(self.runner(), timeout=30)
            h = await asyncio.wait_for(runner.health(), timeout=10)
        except Exception as e:
            return JSONResponse({"status": "starting", "error": one_line(str(e) or type(e).__name__)}, status_code=503)
        ok = {role: sum(1 for r in reps if r.get("ok", True) is not False) for role, reps in h.items()}
        ready = all(ok.values())
        return JSONResponse({"status": "ok" if ready else "degraded", "replicas": ok}, status_code=200 if ready else 503)

    @fastapi_app.get("/metrics")
    async def metrics_text(self) -> Response:
        stats = await (await self.runner()).stats()
        jobs: list[dict[str, Any]] = []
        if self.redis_url:
            try:
                jobs = [{**j, "id": j["id"][:8]} for j in await self.jobs().list() if j["status"] == "running"]
            except Exception:  # the store is down: the service's own metrics still come
                jobs = []
        return Response(METRICS.render(stats, jobs), media_type="text/plain; version=0.0.4; charset=utf-8")

    # ----- native API

    @fastapi_app.post("/v1/solve")
    async def solve(self, request: Request) -> Any:
        t0 = time.perf_counter()
        tenant = self.tenant(request)
        body = validate(SolveBody, parse_json(await self.body(request)))
        args = check_search(self.config, body.problem, body.strategy, body.budget, body.params, body.deadline_s,
                            body.priority)
        sid = uuid.uuid4().hex
        answer = None if body.answer is None else str(body.answer)
        prepared = prepare(args.problem, self.form)
        problem = Problem(id=body.id or sid, problem=prepared.text, answer=answer)
        first, events = await self.open_search(tenant, problem, args.strategy, args.budget, args.params,
                                               args.priority, args.deadline_s, sid, body.stream)
        if body.stream:
            return StreamingResponse(self.solve_events(first, events, sid, t0, prepared.notice),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        result = await self.result_of(events, sid)
        return JSONResponse(solve_response(result, prepared.notice))

    async def solve_events(self, first: dict[str, Any], events: AsyncIterator, sid: str, t0: float,
                           notice: str | None) -> AsyncIterator[str]:
        finished = False
        try:
            yield sse(first["event"], first)
            async for ev in events:
                if ev["event"] == "result":
                    finished = True
                    yield sse("result", solve_response(ev["result"], notice))
                else:
                    yield sse(ev["event"], ev)
        except Exception as e:  # the scheduler failed mid-stream: say so in the stream
            yield sse("error", error_body(one_line(str(e) or type(e).__name__), 503))
        finally:
            if not finished:
                self.cancel_later(sid)
            self.observe("/v1/solve stream", 200, t0)

    # ----- OpenAI-compatible API

    @fastapi_app.get("/v1/models")
    async def models(self, request: Request) -> JSONResponse:
        self.tenant(request)
        return JSONResponse(oai.models_list())

    @fastapi_app.post("/v1/chat/completions")
    async def chat(self, request: Request) -> Any:
        t0 = time.perf_counter()
        tenant = self.tenant(request)
        body = validate(ChatBody, parse_json(await self.body(request)))
        strategy = oai.strategy_of(body.model, body.strategy)
        if body.n not in (None, 1):
            raise BadRequest("n must be 1: a search returns one chosen solution (its candidates are in the result)",
                             param="n")
        if body.tools:
            raise BadRequest("tools are not supported by a search", param="tools")
        budget = effort_budget(self.config.api, body.reasoning_effort, body.budget)
        args = check_search(self.config, oai.problem_of(body.messages), strategy, budget, body.params,
                            body.deadline_s, body.priority)
        sid = uuid.uuid4().hex
        cid = f"chatcmpl-{sid}"
        # The search's randomness is keyed by the problem id: the same `seed`, the same search.
        pid = sid if body.seed is None else f"seed-{body.seed}"
        prepared = prepare(args.problem, self.form)
        first, events = await self.open_search(tenant, Problem(id=pid, problem=prepared.text), args.strategy,
                                               args.budget, args.params, args.priority, args.deadline_s, sid,
                                               body.stream)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(self.chat_chunks(events, sid, cid, body.model, include_usage, t0),
                                     media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        result = await self.result_of(events, sid)
        return JSONResponse(oai.completion(cid, body.model, result, prepared.notice))

    async def chat_chunks(self, events: AsyncIterator, sid: str, cid: str, model: str, include_usage: bool,
                          t0: float) -> AsyncIterator[str]:
        created = int(time.time())
        finished = False

        def data(obj: dict[str, Any]) -> str:
            return f"data: {json.dumps(obj, separators=(',', ':'))}\n\n"

        try:
            yield data(oai.chunk(cid, model, created, {"role": "assistant", "content": ""}))
            async for ev in events:
                if ev["event"] == "progress":
                    yield data(oai.chunk(cid, model, created, {"reasoning_content": oai.progress_line(ev)}))
                elif ev["event"] == "result":
                    finished = True
                    result = ev["result"]
                    steps = result.get("trajectory") or []
                    for i, step in enumerate(steps):
                        yield data(oai.chunk(cid, model, created, {"content": step + ("\n\n" if i < len(steps) - 1 else "")}))
                    yield data(oai.chunk(cid, model, created, {}, finish=oai.finish_reason(result)))
                    if include_usage:
                        yield data(oai.chunk(cid, model, created, None, use=oai.usage(result)))
            yield "data: [DONE]\n\n"
        except Exception as e:
            yield data(error_body(one_line(str(e) or type(e).__name__), 503))
        finally:
            if not finished:
                self.cancel_later(sid)
            self.observe("/v1/chat/completions stream", 200, t0)

    # ----- jobs

    def jobs(self) -> Any:
        if not self.redis_url:
            raise BadRequest("this server has no job store (jobs.redis_url)", status=503)
        if self._jobs is None:
            from ponder.jobs.client import JobClient

            self._jobs = JobClient(self.redis_url)
        return self._jobs

    async def own_job(self, tenant: str, job_id: str) -> dict[str, Any]:
        st = await self.jobs().status(job_id) if len(job_id) <= 64 else None
        if st is None or st.get("owner") != tenant:  # another tenant's job does not exist for this one
            raise BadRequest(f"no job {job_id!r}", status=404, code="job_not_found")
        return st

    @fastapi_app.post("/v1/jobs")
    async def submit_job(self, request: Request) -> JSONResponse:
        import copy

        from ponder.jobs.spec import JobSpec, SpecError
        from ponder.tasks.datasets import DatasetError, load_problems, problems_from_jsonl, problems_from_rows

        tenant = self.tenant(request)
        raw = await self.body(request)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        q = request.query_params
        try:
            if ctype in ("application/jsonl", "application/x-ndjson", "application/x-jsonlines", "text/plain"):
                body = JobBody(strategies=q.getlist("strategy") or None, budgets=q.getlist("budget") or None,
                               job_budget=q.get("job_budget"), name=q.get("name", ""))
                problems = problems_from_jsonl(raw, "upload")  # bytes: a non-UTF-8 line is named
                source = "upload"
            else:
                body = validate(JobBody, parse_json(raw))
                if (body.rows is None) == (body.dataset is None):
                    raise BadRequest("give the problems as rows (an uploaded dataset) or as a dataset the server "
                                     "reads, not both and not neither", param="rows")
                if body.rows is not None:
                    problems, source = problems_from_rows(body.rows, "rows"), "upload"
                else:
                    problems, source = await asyncio.to_thread(load_problems, body.dataset, body.limit), body.dataset
        except DatasetError as e:
            raise BadRequest(str(e), param="rows") from None
        except OSError as e:
            raise BadRequest(f"cannot read dataset {body.dataset}: {e.strerror or e}", param="dataset") from None
        if not problems:
            raise BadRequest("the dataset has no problems", param="rows")
        if len(problems) > self.config.api.max_job_rows:
            raise BadRequest(f"the dataset has {len(problems)} problems; this server takes at most "
                             f"{self.config.api.max_job_rows} a job (api.max_job_rows)", status=413)
        for b in body.budgets or []:
            check_budget(self.config.api, b)
        config = copy.deepcopy(self.config)
        config.search.params = dict(body.params or {})
        try:
            spec = JobSpec.build(config, body.strategies, [str(b) for b in body.budgets] if body.budgets else None,
                                 dataset=source, job_budget=body.job_budget, owner=tenant, name=body.name,
                                 max_attempts=body.max_attempts or config.jobs.max_attempts)
            spec.plan(problems)
        except SpecError as e:
            raise BadRequest(str(e)) from None
        for p in problems:
            if len(p.problem) > self.config.api.max_problem_chars:
                raise BadRequest(f"problem {p.id!r} is {len(p.problem)} characters; this server takes at most "
                                 f"{self.config.api.max_problem_chars} (api.max_problem_chars)", param="rows")
        job_id = await self.jobs().submit(spec, problems)
        if self._worker is None:
            from ponder.jobs.worker import ensure_worker_async

            self._worker = await ensure_worker_async(self.redis_url, self.config)
        return JSONResponse({"id": job_id, "status": "queued", "items": len(problems) * len(spec.strategies)
                             * len(spec.budgets), "strategies": spec.strategies, "budgets": spec.budgets},
                            status_code=201)

    @fastapi_app.get("/v1/jobs")
    async def list_jobs(self, request: Request) -> JSONResponse:
        tenant = self.tenant(request)
        return JSONResponse({"object": "list", "data": await self.jobs().list(owner=tenant)})

    @fastapi_app.get("/v1/jobs/{job_id}")
    async def job_status(self, job_id: str, request: Request) -> JSONResponse:
        return JSONResponse(await self.own_job(self.tenant(request), job_id))

    @fastapi_app.get("/v1/jobs/{job_id}/results")
    async def job_results(self, job_id: str, request: Request) -> StreamingResponse:
        await self.own_job(self.tenant(request), job_id)
        records = await self.jobs().results(job_id)

        async def lines() -> AsyncIterator[bytes]:
            for i in range(0, len(records), 256):
                yield "".join(json.dumps(r) + "\n" for r in records[i:i + 256]).encode()

        return StreamingResponse(lines(), media_type="application/jsonl")

    @fastapi_app.delete("/v1/jobs/{job_id}")
    async def cancel_job(self, job_id: str, request: Request) -> JSONResponse:
        st = await self.own_job(self.tenant(request), job_id)
        cancelled = await self.jobs().cancel(job_id)
        return JSONResponse({"id": job_id, "status": "cancelled" if cancelled else st["status"]})


def build_app(config: PonderConfig, *, redis_url: str | None, tokens: dict[str, str] | None = None) -> Any:
    """The Serve application for `config`: the ingress with its autoscaling, bound to the
    deployment's scheduler (the one the job worker uses for the same config)."""
    from ponder.jobs.spec import runner_config
    from ponder.jobs.worker import scheduler_names

    a = config.api
    sched, owner = scheduler_names(runner_config(config))
    return Ingress.options(
        autoscaling_config={"min_replicas": a.min_replicas, "max_replicas": a.max_replicas,
                            "target_ongoing_requests": a.target_ongoing_requests},
        # Admission is the scheduler's (429 with Retry-After): Serve must not queue or refuse first.
        max_ongoing_requests=a.max_running + a.max_queued + 64,
        ray_actor_options={"num_cpus": 0},
    ).bind(config.to_dict(), sched, owner, redis_url, tokens)


def app_from_args(args: dict[str, Any]) -> Any:
    """The Serve application from a Serve config's `args` (KubeRay's `serveConfigV2`, `serve run
    ponder.api.app:app_from_args config=...`): `config` is the PonderConfig as a mapping or the path
    of a YAML file; the job store is `jobs.redis_url` or `$PONDER_REDIS_URL`; tokens come from
    `$PONDER_API_KEY` and `api.tokens_file` on the ingress's node (a Kubernetes Secret)."""
    import os

    given = args.get("config") or {}
    config = PonderConfig.load(given) if isinstance(given, str) else PonderConfig.from_dict(given)
    redis_url = config.jobs.redis_url or os.environ.get("PONDER_REDIS_URL") or None
    return build_app(config, redis_url=redis_url, tokens=None)

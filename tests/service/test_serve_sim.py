"""The HTTP service on a real Serve app and a real local Ray cluster, over `sim` engines: the
official `openai` client, 200 concurrent solves against an undisturbed in-process run, SSE order,
cancellation on disconnect, 429, bad input beside a good request, tenants, metrics."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest

from tests.service.conftest import ALPHA, BETA

pytestmark = [pytest.mark.ray, pytest.mark.redis]

PROBLEM = "Compute (37 + 48) * 6."


def sse_events(lines) -> list[tuple[str, dict]]:
    out, event = [], None
    for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            out.append((event, json.loads(line[6:])))
    return out


def test_openai_client_plain_and_streaming(service):
    from openai import OpenAI

    client = OpenAI(base_url=f"{service.url}/v1", api_key=ALPHA)
    ids = [m.id for m in client.models.list()]
    assert "ponder" in ids and "ponder/beam_search" in ids and "ponder/auto" not in ids
    messages = [{"role": "system", "content": "Solve it."}, {"role": "user", "content": PROBLEM}]
    resp = client.chat.completions.create(model="ponder/beam_search", messages=messages, seed=7,
                                          extra_body={"budget": "n=4"})
    text = resp.choices[0].message.content
    assert "\\boxed{" in text and resp.choices[0].finish_reason == "stop"
    ext = resp.model_extra["ponder"]
    assert ext["strategy"] == "beam_search" and ext["budget"] == "n=4"
    assert resp.usage.completion_tokens == ext["compute"]["policy_tokens"] > 0
    assert resp.usage.prompt_tokens == ext["compute"]["prm_tokens"] > 0
    assert resp.usage.total_tokens == resp.usage.completion_tokens + resp.usage.prompt_tokens

    stream = client.chat.completions.create(model="ponder/beam_search", messages=messages, stream=True, seed=7,
                                            extra_body={"budget": "n=4"}, stream_options={"include_usage": True})
    reasoning, content, finish, usage = [], [], None, None
    for chunk in stream:
        if not chunk.choices:
            usage = chunk.usage
            continue
        delta = chunk.choices[0].delta
        if (delta.model_extra or {}).get("reasoning_content"):
            assert not content, "progress comes before the solution"
            reasoning.append(delta.model_extra["reasoning_content"])
        if delta.content:
            content.append(delta.content)
        finish = chunk.choices[0].finish_reason or finish
    assert reasoning and all("expansions" in r for r in reasoning)
    # The same seed: the streamed search is the same search.
    assert "".join(content) == text and finish == "stop"
    assert usage is not None and usage.total_tokens == resp.usage.total_tokens

    effort = client.chat.completions.create(model="ponder", messages=messages, reasoning_effort="low")
    assert effort.model_extra["ponder"]["budget"] == service.config.api.reasoning_effort["low"]


def test_200_concurrent_solves_match_an_undisturbed_run(service):
    from ponder.actors.factory import build_policy, build_reward
    from ponder.jobs.spec import runner_config
    from ponder.scheduler.runner import Runner
    from ponder.tasks.datasets import load_problems

    problems = load_problems("arith:200:seed=11")
    cfg = runner_config(service.config)
    ref = Runner(build_policy(cfg.policy), build_reward(cfg.reward), cfg)

    async def expected():
        return await asyncio.gather(*(ref.solve(p, "best_of_n", "n=4") for p in problems))

    want = asyncio.run(expected())

    async def go():
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        async with httpx.AsyncClient(base_url=service.url, headers=service.headers(), timeout=120, limits=limits) as c:
            return await asyncio.gather(*(c.post("/v1/solve", json={
                "problem": p.problem, "id": p.id, "answer": p.answer, "strategy": "best_of_n", "budget": "n=4"})
                for p in problems))

    got = asyncio.run(go())
    assert [r.status_code for r in got] == [200] * len(problems)
    bodies = [r.json() for r in got]
    assert [b["answer"] for b in bodies] == [w.answer for w in want]
    assert [b["correct"] for b in bodies] == [w.correct for w in want]
    assert [b["compute"]["cost"] for b in bodies] == [w.compute.cost for w in want]
    assert sum(b["correct"] for b in bodies) > 100  # the sim solves most of these


def test_solve_result_shape_and_sse_order(service):
    with httpx.Client(base_url=service.url, headers=service.headers(), timeout=60) as c:
        plain = c.post("/v1/solve", json={"problem": PROBLEM, "strategy": "beam_search", "budget": "n=4",
                                          "answer": 510, "id": "q1"}).json()
        assert plain["answer"] is not None and plain["stop_reason"] == "done"
        assert plain["path"] and all(set(s) == {"step", "reward"} for s in plain["path"])
        assert plain["candidates"] and plain["candidates"][0]["score"] >= plain["candidates"][-1]["score"]
        assert plain["compute"]["cost"] > 0 and plain["correct"] is (plain["answer"] == "510")
        with c.stream("POST", "/v1/solve", json={"problem": PROBLEM, "strategy": "beam_search", "budget": "n=4",
                                                 "id": "q1", "stream": True}) as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            events = sse_events(r.iter_lines())
    kinds = [e for e, _ in events]
    assert kinds[0] == "started" and kinds[-1] == "result" and kinds.count("result") == 1
    progress = [d for e, d in events if e == "progress"]
    assert progress and [p["seq"] for p in progress] == sorted({p["seq"] for p in progress})
    costs = [p["tokens"]["cost"] for p in progress]
    assert costs == sorted(costs)
    result = events[-1][1]
    assert result["answer"] == plain["answer"] and result["compute"] == plain["compute"]
    assert progress[-1]["tokens"]["cost"] == result["compute"]["cost"]


def _long_search() -> dict:
    # One simulation at a time, exploring wide (a large c_puct), so nearly every simulation
    # is an engine round trip: with seeds from the tree, a narrow MCTS can settle on one
    # finished path and spend its simulations revisiting it for free, ending in under a second.
    return {"problem": "Compute (((((((914 - 826) + 91) + 573) - 464) + 538) - 647) + 566) + 338.",
            "strategy": "mcts", "budget": "n=1000", "params": {"parallel": 1, "c_puct": 100.0}}


def test_disconnect_cancels_the_search(service):
    sched = service.scheduler()
    before = asyncio.run(sched.stats())
    with httpx.Client(base_url=service.url, headers=service.headers(), timeout=60) as c:
        with c.stream("POST", "/v1/solve", json={**_long_search(), "stream": True}) as r:
            for line in r.iter_lines():
                if line.startswith("event: progress"):
                    break  # the search runs; now go away
    deadline = time.monotonic() + 20
    while True:
        stats = asyncio.run(sched.stats())
        if stats["searches"]["cancelled"] > before["searches"]["cancelled"] and stats["live_searches"] == 0:
            break
        assert time.monotonic() < deadline, f"not cancelled: {stats['searches']}, last error {stats['last_error']}"
        time.sleep(0.2)
    sent = stats["expansion_requests"]
    time.sleep(1.0)
    assert asyncio.run(sched.stats())["expansion_requests"] == sent  # no further engine requests


def test_429_beyond_capacity_then_normal_again(service):
    sched = service.scheduler()
    a = service.config.api
    asyncio.run(sched.set_admission({"max_running": 1, "max_queued": 0, "tenant_max_running": 1,
                                     "tenant_max_queued": 0}))
    try:
        async def go():
            async with httpx.AsyncClient(base_url=service.url, headers=service.headers(), timeout=60) as c:
                first = asyncio.ensure_future(c.post("/v1/solve", json={**_long_search(), "deadline_s": 3}))
                await asyncio.sleep(1.0)
                second = await c.post("/v1/solve", json={"problem": PROBLEM, "budget": "n=2"})
                return await first, second

        first, second = asyncio.run(go())
        assert second.status_code == 429 and int(second.headers["retry-after"]) >= 1, second.text
        assert second.json()["error"]["type"] == "rate_limit_error"
        assert first.status_code == 200 and first.json()["stop_reason"] == "deadline"
    finally:
        asyncio.run(sched.set_admission({"max_running": a.max_running, "max_queued": a.max_queued,
                                         "tenant_max_running": a.tenant_max_running,
                                         "tenant_max_queued": a.tenant_max_queued}))
    with httpx.Client(base_url=service.url, headers=service.headers(), timeout=60) as c:
        assert c.post("/v1/solve", json={"problem": PROBLEM, "budget": "n=2"}).status_code == 200


BAD = [
    ("/v1/solve", b"{not json", 400, "not valid JSON"),
    ("/v1/solve", b"[1, 2]", 400, "must be a JSON object"),
    ("/v1/solve", {"strategy": "beam_search"}, 400, "missing field 'problem'"),
    ("/v1/solve", {"problem": "   "}, 400, "the problem is empty"),
    ("/v1/solve", {"problem": "Compute 1 + 2. " * 100}, 400, "api.max_problem_chars"),
    ("/v1/solve", {"problem": PROBLEM, "strategy": "telepathy"}, 400, "unknown strategy"),
    ("/v1/solve", {"problem": PROBLEM, "params": {"beam_widht": 2}, "strategy": "beam_search"}, 400, "no parameter"),
    ("/v1/solve", {"problem": PROBLEM, "budget": -5}, 400, "positive"),
    ("/v1/solve", {"problem": PROBLEM, "budget": 0}, 400, "positive"),
    ("/v1/solve", {"problem": PROBLEM, "budget": "n=0"}, 400, "positive"),
    ("/v1/solve", {"problem": PROBLEM, "budget": "1e99"}, 400, "bad budget"),
    ("/v1/solve", {"problem": PROBLEM, "budget": 10**12}, 400, "limit"),
    ("/v1/solve", {"problem": PROBLEM, "budget": "n=100000"}, 400, "limit"),
    ("/v1/solve", {"problem": PROBLEM, "deadline_s": -1}, 400, "deadline_s"),
    ("/v1/solve", {"problem": PROBLEM, "colour": "red"}, 400, "unknown field 'colour'"),
    ("/v1/chat/completions", {"model": "gpt-4", "messages": [{"role": "user", "content": PROBLEM}]}, 404, "does not exist"),
    ("/v1/chat/completions", {"model": "ponder", "messages": []}, 400, "no user message"),
    ("/v1/chat/completions", {"model": "ponder", "messages": [{"role": "user", "content": PROBLEM}],
                              "reasoning_effort": "extreme"}, 400, "reasoning_effort"),
    ("/v1/chat/completions", {"model": "ponder", "messages": [{"role": "user", "content": PROBLEM}],
                              "reasoning_effort": "low", "budget": 100}, 400, "not both"),
    ("/v1/chat/completions", {"model": "ponder/beam_search", "messages": [{"role": "user", "content": PROBLEM}],
                              "n": 3}, 400, "n must be 1"),
    ("/v1/jobs", {"rows": [{"problem": "Compute 1 + 2.", "answer": "3"}, {"answer": "4"}]}, 400, "no 'problem' text"),
    ("/v1/jobs", {"rows": [{"problem": "Compute 1 + 2."}], "strategies": ["nope"]}, 400, "unknown strategy"),
    ("/v1/jobs", {"rows": [{"problem": "Compute 1 + 2."}], "budgets": ["-3"]}, 400, "positive"),
    ("/v1/jobs", {"dataset": "/nonexistent/set.jsonl"}, 400, "not found"),
    ("/v1/jobs", {"rows": [{"problem": "x" * 100}] * 400_000}, 413, "api.max_upload_bytes"),
]


@pytest.mark.parametrize("path,body,status,needle", BAD, ids=[f"{i}-{b[0]}" for i, b in enumerate(BAD)])
def test_bad_input_gets_a_4xx_while_a_good_request_completes(service, path, body, status, needle):
    async def go():
        async with httpx.AsyncClient(base_url=service.url, headers=service.headers(), timeout=60) as c:
            good = asyncio.ensure_future(c.post("/v1/solve", json={"problem": PROBLEM, "strategy": "beam_search",
                                                                   "budget": "n=4"}))
            kw = {"content": body} if isinstance(body, bytes) else {"json": body}
            bad = await c.post(path, **kw)
            return bad, await good

    bad, good = asyncio.run(go())
    assert bad.status_code == status, bad.text
    err = bad.json()["error"]
    assert needle in err["message"] and "\n" not in err["message"] and len(err["message"]) < 600
    assert good.status_code == 200 and good.json()["answer"] is not None


def test_auth_and_tenants(service):
    with httpx.Client(base_url=service.url, timeout=60) as c:
        assert c.post("/v1/solve", json={"problem": PROBLEM}).status_code == 401
        r = c.post("/v1/solve", json={"problem": PROBLEM}, headers={"Authorization": "Bearer wrong-token-000000"})
        assert r.status_code == 401 and r.headers.get("www-authenticate") == "Bearer"
        rows = [{"problem": f"Compute {a} + {a + 1}.", "answer": str(2 * a + 1), "id": f"q{a}"} for a in range(1, 7)]
        made = c.post("/v1/jobs", json={"rows": rows, "strategies": ["greedy", "best_of_n"], "budgets": ["n=2"]},
                      headers=service.headers(ALPHA))
        assert made.status_code == 201, made.text
        job = made.json()["id"]
        assert made.json()["items"] == 12
        for method, path in (("GET", f"/v1/jobs/{job}"), ("GET", f"/v1/jobs/{job}/results"),
                             ("DELETE", f"/v1/jobs/{job}")):
            other = c.request(method, path, headers=service.headers(BETA))
            assert other.status_code == 404, (method, path)
        assert job not in [j["id"] for j in c.get("/v1/jobs", headers=service.headers(BETA)).json()["data"]]
        assert job in [j["id"] for j in c.get("/v1/jobs", headers=service.headers(ALPHA)).json()["data"]]
        deadline = time.monotonic() + 60
        while (st := c.get(f"/v1/jobs/{job}", headers=service.headers(ALPHA)).json())["status"] != "completed":
            assert st["status"] in ("queued", "running") and time.monotonic() < deadline, st
            time.sleep(0.3)
        assert st["done"] == st["total"] == 12 and st["accuracy"] is not None
        lines = c.get(f"/v1/jobs/{job}/results", headers=service.headers(ALPHA)).text.splitlines()
        records = [json.loads(x) for x in lines]
        assert len(records) == 12 and {r["strategy"] for r in records} == {"greedy", "best_of_n"}
        assert {r["id"] for r in records} == {row["id"] for row in rows}


def test_jsonl_upload_and_cancel(service):
    rows = "".join(json.dumps({"problem": f"Compute {a} * {a + 7} + {a}.", "answer": str(a * (a + 7) + a)}) + "\n"
                   for a in range(100, 160))
    with httpx.Client(base_url=service.url, headers=service.headers(BETA), timeout=60) as c:
        made = c.post("/v1/jobs?strategy=mcts&budget=n=64", content=rows,
                      headers={"content-type": "application/jsonl"})
        assert made.status_code == 201, made.text
        job = made.json()["id"]
        assert c.delete(f"/v1/jobs/{job}").json()["status"] == "cancelled"
        assert c.get(f"/v1/jobs/{job}").json()["status"] == "cancelled"


def test_metrics_parse_as_prometheus_text(service):
    from prometheus_client.parser import text_string_to_metric_families

    with httpx.Client(base_url=service.url, headers=service.headers(), timeout=60) as c:
        assert c.get("/healthz").json()["status"] == "ok"
        c.post("/v1/solve", json={"problem": PROBLEM, "budget": "n=2"})
        text = c.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("ponder_request_latency_seconds", "ponder_searches_running", "ponder_searches_queued",
                 "ponder_expansions_per_second", "ponder_pool_busy_fraction", "ponder_pool_replicas",
                 "ponder_tokens", "ponder_job_items"):
        assert name in families, name
    assert families["ponder_request_latency_seconds"].type == "histogram"
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in families["ponder_pool_replicas"].samples}
    assert samples[("ponder_pool_replicas", (("pool", "policy"),))] >= 1
    tokens = {s.labels["kind"]: s.value for s in families["ponder_tokens"].samples}
    assert tokens["policy"] > 0 and tokens["prm"] > 0

"""The service once over the shipped transformers models (not the simulator): the official
`openai` client gets a real search's solution, plain and streamed, and no auth means tenant
`local` on loopback."""

from __future__ import annotations

import pytest

from tests.service.conftest import free_port
from tests.scheduler.ray_fixtures import init_local, ray, ray_session  # noqa: F401  (fixture)

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def hf_service(ray_session):  # noqa: F811
    from ray import serve

    from ponder.api.app import build_app
    from ponder.config import PonderConfig
    from ponder.jobs.spec import runner_config
    from ponder.jobs.worker import scheduler_names
    from ponder.scheduler.scheduler import RemoteRunner

    init_local()
    config = PonderConfig.load(None, ["cluster.address=auto", "cluster.cpus_per_replica=0"])
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(config, redis_url=None, tokens={}), name="ponder-hf", route_prefix="/hf")
    yield f"http://127.0.0.1:{port}/hf"
    serve.shutdown()
    import asyncio

    cfg = runner_config(config)
    asyncio.run(RemoteRunner.connect(cfg, *scheduler_names(cfg))).shutdown()


def test_openai_client_over_the_shipped_models(hf_service):
    from openai import OpenAI

    client = OpenAI(base_url=f"{hf_service}/v1", api_key="unused")  # no auth configured: any key passes
    messages = [{"role": "user", "content": "Compute (37 + 48) * 6."}]
    resp = client.chat.completions.create(model="ponder/best_of_n", messages=messages, seed=3,
                                          extra_body={"budget": "n=4"})
    text = resp.choices[0].message.content
    assert "\\boxed{" in text  # the shipped policy writes the task's format
    assert resp.usage.completion_tokens > 0 and resp.usage.prompt_tokens > 0
    streamed = client.chat.completions.create(model="ponder/best_of_n", messages=messages, seed=3, stream=True,
                                              extra_body={"budget": "n=4"})
    content = "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert content == text


def test_ordinary_wording_is_rewritten_for_the_shipped_models(hf_service):
    import httpx

    r = httpx.post(f"{hf_service}/v1/solve", json={"problem": "What is 12 + 30 * 2?", "strategy": "greedy",
                                                   "answer": "72"}, timeout=120)
    body = r.json()
    assert r.status_code == 200 and "rewritten as 'Compute (30 * 2) + 12.'" in body["notice"]
    outside = httpx.post(f"{hf_service}/v1/solve", json={"problem": "Compute 14 - 3 * 2.", "strategy": "greedy"},
                         timeout=120).json()
    assert "outside what the shipped arithmetic models read" in outside["notice"]

